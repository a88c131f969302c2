"""`runengine serve` configured without code: API keys, rate limits, webhook hosts, from the command
line, the environment and a TOML file. Over real HTTP against a real `runengine serve` process."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import click
import httpx
import pytest
from click.testing import CliRunner

from faultkit import ROOT, ServeProcess, serve_process
from profile_http import receiver
from runengine.adapters.cli import main, serve
from runengine.adapters.configfile import settings
from runengine.errors import InvalidRequest
from runengine.http.apikeys import api_key_auth, keys_by_secret, parse_api_keys
from runengine.http.ratelimit import Rate

KEYS = {"alice": "sk-alice-0123456789", "bob": "sk-bob-9876543210"}
KORE = "/kore/apps/echo/environments/e/runs"


ANYIO_BACKENDS = ("asyncio",)


def bearer(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[name]}"}


def api_key(name: str) -> dict[str, str]:
    return {"x-api-key": KEYS[name]}


def kore_body(reference: str) -> dict[str, Any]:
    return {"sessionIdentity": [{"type": "sessionReference", "value": reference}], "input": [{"type": "text", "content": "hi"}]}


async def call(http: httpx.AsyncClient, surface: str, headers: dict[str, str]) -> httpx.Response:
    """One authenticated request on `surface` (each surface's own way of listing or running)."""
    if surface == "native":
        return await http.get("/runs", headers=headers)
    if surface == "page":  # what the live page calls: the agents, then a run
        return await http.get("/agents", headers=headers)
    if surface == "acp":
        return await http.get("/acp/agents", headers=headers)
    if surface == "kore":
        return await http.post(f"{KORE}/execute", json=kore_body("config"), headers=headers)
    assert surface == "platform"
    return await http.post("/platform/apps/echo/execute", json={"message": "hi"}, headers=headers)


SURFACES = ("native", "page", "acp", "kore", "platform")


def started_line(server: ServeProcess) -> str:
    return next(line for line in server.log.read_text().splitlines() if line.startswith("runengine "))


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    # These tests make many refused requests from one address: failed authentications are not what they test.
    args = ["--store", "memory://", "--delay", "0", "--rate-limit", "1000/day", "--auth-failure-limit", "off"]
    for name, key in KEYS.items():
        args += ["--api-key", f"{name}={key}"]
    with serve_process(args, tmp_path_factory.mktemp("keyed") / "serve.log") as server:
        yield server


# -- API keys --------------------------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.anyio
async def test_keys_on_every_surface_in_both_header_forms(keyed: ServeProcess) -> None:
    assert "auth: 2 API keys" in started_line(keyed)
    async with httpx.AsyncClient(base_url=keyed.base, timeout=30) as http:
        for surface in SURFACES:
            for headers in (bearer("alice"), api_key("alice")):
                response = await call(http, surface, headers)
                assert response.status_code in (200, 201, 202), (surface, headers, response.text)
            for headers in ({}, {"authorization": "Bearer sk-wrong"}, {"x-api-key": "sk-wrong"}, {"authorization": KEYS["alice"]}):
                refused = await call(http, surface, headers)
                assert refused.status_code == 401, (surface, headers, refused.text)
                assert refused.json()["error"]["code"] == "authentication_error"
            if surface == "acp":  # ACP's own error fields beside the common error object
                assert refused.json()["code"] == "authentication_error"
        assert (await http.get("/")).status_code == 200  # the page itself loads without a key


@pytest.mark.server
@pytest.mark.anyio
async def test_the_key_name_is_the_principal(keyed: ServeProcess) -> None:
    async with httpx.AsyncClient(base_url=keyed.base, timeout=30) as http:
        created = await http.post("/runs", json={"agent": "echo", "input": "mine"}, headers=api_key("alice"))
        assert created.status_code == 200, created.text
        run_id = created.json()["run_id"]
        assert (await http.get(f"/runs/{run_id}", headers=bearer("alice"))).status_code == 200
        assert (await http.get(f"/runs/{run_id}", headers=api_key("bob"))).status_code == 404
        acp = await http.get(f"/acp/runs/{run_id}", headers=bearer("bob"))
        assert acp.status_code == 404


def test_key_parsing_and_matching() -> None:
    assert parse_api_keys("alice=sk-1, bob=sk-2,") == [("alice", "sk-1"), ("bob", "sk-2")]
    for bad in ("alice", "=sk", "alice=", "al ice=sk", "alice=s k"):
        with pytest.raises(InvalidRequest):
            parse_api_keys(bad)
    with pytest.raises(InvalidRequest, match="both"):
        keys_by_secret([("alice", "sk-1"), ("bob", "sk-1")])
    hook = api_key_auth(keys_by_secret([("alice", "sk-1"), ("alice", "sk-rotated"), ("bob", "sk-2")]))
    assert hook({"authorization": "Bearer sk-rotated"}) == "alice"
    assert hook({"authorization": "bearer  sk-2 "}) == "bob"
    assert hook({"x-api-key": "sk-1"}) == "alice"
    assert hook({"authorization": "Bearer sk-1x"}) is None and hook({"authorization": "Basic sk-1"}) is None
    assert hook({"x-api-key": "sk-"}) is None and hook({}) is None


@pytest.mark.server
def test_without_keys_the_server_says_it_is_open(tmp_path: Path) -> None:
    with serve_process(["--store", "memory://"], tmp_path / "serve.log") as server:
        assert "auth: open" in started_line(server)
        assert httpx.get(server.base + "/runs", timeout=30).status_code == 200


# -- rate limits -------------------------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.anyio
async def test_rate_limit_headers_on_every_surface_and_429_in_each_format(tmp_path: Path) -> None:
    args = ["--store", "memory://", "--delay", "0", "--rate-limit", "6/day", "--api-key", f"alice={KEYS['alice']}"]
    args += ["--api-key", f"bob={KEYS['bob']}"]
    with serve_process(args, tmp_path / "serve.log") as server:
        assert "rate limit: 6/day per principal" in started_line(server)
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
            remaining = []
            for surface in (*SURFACES, "native"):  # one budget for alice over every surface
                response = await call(http, surface, bearer("alice"))
                assert response.status_code in (200, 201, 202), response.text
                assert response.headers["x-ratelimit-limit"] == "6"
                assert int(response.headers["x-ratelimit-reset"]) % 86400 == 0  # the end of the day, epoch seconds
                remaining.append(response.headers["x-ratelimit-remaining"])
            assert remaining == ["5", "4", "3", "2", "1", "0"]
            for surface in SURFACES:
                refused = await call(http, surface, api_key("alice"))
                assert refused.status_code == 429, (surface, refused.text)
                assert refused.json()["error"]["code"] == "rate_limited"
                assert 0 < int(refused.headers["retry-after"]) <= 86400
                assert refused.headers["x-ratelimit-remaining"] == "0"
                if surface == "acp":
                    assert refused.json()["code"] == "rate_limited"
            other = await call(http, "acp", bearer("bob"))  # bob has a budget of his own
            assert other.status_code == 200 and other.headers["x-ratelimit-remaining"] == "5"
            unauthenticated = await http.get("/runs")  # refused by the auth hook, not counted
            assert unauthenticated.status_code == 401 and "x-ratelimit-limit" not in unauthenticated.headers


@pytest.mark.server
def test_platform_sends_its_seed_headers_by_default(tmp_path: Path) -> None:
    with serve_process(["--store", "memory://"], tmp_path / "serve.log") as server:
        assert "rate limit: /platform 600/minute" in started_line(server)
        platform = httpx.post(server.base + "/platform/apps/echo/execute", json={"message": "hi"}, timeout=30)
        assert platform.status_code == 200, platform.text
        assert platform.headers["x-ratelimit-limit"] == "600"
        assert int(platform.headers["x-ratelimit-remaining"]) < 600
        assert "x-ratelimit-limit" not in httpx.get(server.base + "/runs", timeout=30).headers
    with serve_process(["--store", "memory://", "--rate-limit", "off"], tmp_path / "off.log") as server:
        assert "rate limit: off" in started_line(server)
        platform = httpx.post(server.base + "/platform/apps/echo/execute", json={"message": "hi"}, timeout=30)
        assert platform.status_code == 200 and "x-ratelimit-limit" not in platform.headers


def test_rate_parsing() -> None:
    assert Rate.parse("600/minute") == Rate(600, 60.0) and str(Rate.parse("10/s")) == "10/second"
    assert Rate.parse("5 / hours") == Rate(5, 3600.0) and Rate.parse("1/d") == Rate(1, 86400.0)
    for bad in ("0/minute", "600", "600/ms", "600/fortnight", "-1/s", "x/s"):
        with pytest.raises(InvalidRequest):
            Rate.parse(bad)


# -- webhook hosts -----------------------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.anyio
async def test_allow_host_lets_a_callback_reach_an_internal_host(tmp_path: Path) -> None:
    with receiver() as hook:
        body = {**kore_body("hooks"), "isAsync": True, "callbackUrl": hook.url("/done"), "callbackToken": "t"}
        with serve_process(["--store", "memory://", "--delay", "0"], tmp_path / "closed.log") as server:
            refused = httpx.post(server.base + f"{KORE}/execute", json=body, timeout=30)
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_request", refused.text
        args = ["--store", "memory://", "--delay", "0", "--webhook-allow-host", "127.0.0.1"]
        with serve_process(args, tmp_path / "open.log") as server:
            accepted = httpx.post(server.base + f"{KORE}/execute", json=body, timeout=30)
            assert accepted.status_code == 202, accepted.text
            [got] = await hook.wait_for("/done", 1)
            assert got.json()["sessionInfo"]["runId"] == accepted.json()["runId"]


# -- environment and file ----------------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.anyio
async def test_keys_from_the_environment_and_limits_from_a_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "runengine.toml"
    config.write_text('store = "memory://"\nrate_limit = "2/day"\nwebhook_allow_hosts = ["127.0.0.1"]\n')
    env = {"RUNENGINE_API_KEYS": f"alice={KEYS['alice']},bob={KEYS['bob']}", "RUNENGINE_CONFIG": str(config)}
    with serve_process([], tmp_path / "serve.log", env=env) as server:
        assert "auth: 2 API keys; rate limit: 2/day per principal" in started_line(server)
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
            assert (await http.get("/runs")).status_code == 401
            assert (await http.get("/runs", headers=api_key("bob"))).headers["x-ratelimit-limit"] == "2"
            assert (await http.get("/runs", headers=bearer("alice"))).status_code == 200
            assert (await http.get("/runs", headers=bearer("alice"))).status_code == 200
            assert (await http.get("/runs", headers=bearer("alice"))).status_code == 429


def parsed(args: list[str]) -> dict[str, Any]:
    """The values `serve` would run with (parsed like the command line, without serving)."""
    with serve.make_context("serve", list(args)) as ctx:
        return dict(ctx.params)


def test_precedence_command_line_then_environment_then_file_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "runengine.toml"
    config.write_text(
        'port = 9001\nhost = "0.0.0.0"\nrate_limit = "5/day"\napi_keys = {alice = "sk-1"}\nheader_timeout = 2.5\n'
        "worker = false\n"
    )
    for name in [s.envvar for s in settings(serve)] + ["RUNENGINE_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    assert parsed([])["rate_limit"] is None and parsed([])["port"] == 8000  # the defaults
    from_file = parsed(["--config", str(config)])
    assert from_file["rate_limit"] == Rate(5, 86400.0) and from_file["port"] == 9001 and from_file["host"] == "0.0.0.0"
    assert from_file["api_keys"] == (("alice", "sk-1"),) and from_file["header_timeout"] == 2.5
    assert from_file["run_worker"] is False
    monkeypatch.setenv("RUNENGINE_RATE_LIMIT", "4/day")
    monkeypatch.setenv("RUNENGINE_PORT", "9002")
    monkeypatch.setenv("RUNENGINE_API_KEYS", "bob=sk-2,carol=sk-3")
    from_env = parsed(["--config", str(config)])
    assert from_env["rate_limit"] == Rate(4, 86400.0) and from_env["port"] == 9002 and from_env["host"] == "0.0.0.0"
    assert from_env["api_keys"] == (("bob", "sk-2"), ("carol", "sk-3"))
    from_cli = parsed(["--config", str(config), "--rate-limit", "3/day", "--api-key", "dave=sk-4"])
    assert from_cli["rate_limit"] == Rate(3, 86400.0) and from_cli["port"] == 9002
    assert from_cli["api_keys"] == (("dave", "sk-4"),)
    monkeypatch.setenv("RUNENGINE_CONFIG", str(config))  # the file named by the environment
    assert parsed([])["host"] == "0.0.0.0"
    listed = tmp_path / "listed.toml"  # arrays, or a string as in the environment
    listed.write_text('api_keys = ["alice=sk-1", "bob=sk-2"]\nwebhook_allow_hosts = "hooks.internal,10.0.0.0/8"\n')
    monkeypatch.delenv("RUNENGINE_API_KEYS")
    from_list = parsed(["--config", str(listed)])
    assert from_list["api_keys"] == (("alice", "sk-1"), ("bob", "sk-2"))
    assert from_list["webhook_allow_hosts"] == ("hooks.internal", "10.0.0.0/8")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('prot = 9000\nstore = "memory://"\n', "unknown setting(s) 'prot'"),
        ("port = [1]\n", "takes one value"),
        ('port = "x"\n', "'x' is not a valid integer"),
        ('rate_limit = "600/ms"\n', "is not a rate"),
        ("api_keys = 3\n", "array"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "runengine.toml"
    config.write_text(text)
    result = CliRunner().invoke(main, ["serve", "--config", str(config)])
    assert result.exit_code == 2 and message in result.output, result.output


def test_bad_options_are_clear_errors() -> None:
    runner = CliRunner()
    for args, message in [
        (["--api-key", "alice"], "NAME=KEY"),
        (["--api-key", "a=k", "--api-key", "b=k"], "both"),
        (["--api-key", "a=k", "--auth", "x:y"], "not both"),
        (["--rate-limit", "lots"], "is not a rate"),
        (["--webhook-allow-host", "http://x/"], "not a host name"),
        (["--config", "/nonexistent/runengine.toml"], "cannot read"),
    ]:
        result = runner.invoke(main, ["serve", "--store", "memory://", *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_the_configuration_table_matches_the_command() -> None:
    spec = importlib.util.spec_from_file_location("make_configuration", ROOT / "docs" / "make_configuration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert module.table() in page, "docs/configuration.md is stale: run python docs/make_configuration.py"
    for setting in settings(serve):  # every option, its variable and its file key, in one row
        assert f"`{setting.envvar}`" in page and f"`{setting.key}`" in page
    assert isinstance(serve, click.Command)
