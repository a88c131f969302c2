"""`runengine serve`'s settings from the command line, the environment or a TOML file.

Every option of a command is also the environment variable `RUNENGINE_<NAME>` and the key
`<name>` of the file `--config` names (both from the option's environment variable, so the
three cannot disagree); precedence: command line > environment > file > default. Options
taking several values read them from a comma-separated variable, and from a TOML array (or
a string as in the variable). An unknown key in the file is an error naming the known ones.

    settings(serve)                     # every option: its flags, variable, file key, default, help
    load_config(path, serve)            # the file as click's default_map for `serve`
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import attrs
import click

#: The prefix of every option's environment variable.
ENV_PREFIX = "RUNENGINE"


@attrs.frozen
class Setting:
    """One option of a command, as each of the three sources names it."""

    option: click.Option
    #: The environment variable (RUNENGINE_...).
    envvar: str
    #: The key in the TOML file (the variable's name without the prefix, in lower case).
    key: str


def envvar_of(option: click.Option) -> str:
    """The option's variable: its own `envvar=`, else the one click's auto_envvar_prefix gives it."""
    if isinstance(option.envvar, str):
        return option.envvar
    if option.envvar:
        return str(option.envvar[0])
    return f"{ENV_PREFIX}_{(option.name or '').upper()}"


def settings(command: click.Command) -> list[Setting]:
    """The settings `command` takes (every option but --help and the --config file itself)."""
    found = []
    for param in command.params:
        if not isinstance(param, click.Option) or not param.expose_value or param.name in ("help", "config"):
            continue
        envvar = envvar_of(param)
        found.append(Setting(param, envvar, envvar.removeprefix(ENV_PREFIX + "_").lower()))
    return found


def load_config(path: Path, command: click.Command) -> dict[str, Any]:
    """The settings in the TOML file at `path`, by parameter name (click's default_map)."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="--config") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{path} is not valid TOML: {exc}", param_hint="--config") from None
    by_key = {setting.key: setting for setting in settings(command)}
    unknown = sorted(set(data) - set(by_key))
    if unknown:
        raise click.BadParameter(
            f"unknown setting(s) {', '.join(map(repr, unknown))} in {path}; the settings are: {', '.join(sorted(by_key))}",
            param_hint="--config",
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        option = by_key[key].option
        if option.multiple:
            value = _as_list(key, value, option)
        elif isinstance(value, (dict, list)):
            raise click.BadParameter(f"{key} in {path} takes one value, not a table or an array", param_hint="--config")
        assert option.name is not None
        values[option.name] = value
    return values


def _as_list(key: str, value: Any, option: click.Option) -> list[Any]:
    if isinstance(value, str):  # as in the environment variable
        return option.type.split_envvar_value(value)
    if isinstance(value, dict):  # a table {NAME = VALUE}, e.g. api_keys = {alice = "sk-1"}
        return [f"{name}={item}" for name, item in value.items()]
    if isinstance(value, list):
        return value
    raise click.BadParameter(f"{key} takes an array of values", param_hint="--config")


def config_option(command_name: str) -> Any:
    """`--config FILE` (also RUNENGINE_CONFIG): read before the other options, as their defaults."""

    def load(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is None:
            return
        assert isinstance(ctx.command, click.Command)
        ctx.default_map = {**(ctx.default_map or {}), **load_config(Path(value), ctx.command)}

    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        envvar=f"{ENV_PREFIX}_CONFIG",
        is_eager=True,
        expose_value=False,
        callback=load,
        help=f"A TOML file of `{command_name}` settings (keys as in docs/configuration.md); the command line"
        " and the environment override it.",
    )


__all__ = ["ENV_PREFIX", "Setting", "config_option", "envvar_of", "load_config", "settings"]
