"""Checks of request fields and query parameters: each failure is a clear 400 in the common error format."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ..validation import CONTROL_CHARACTER, has_control_characters
from ..wire import dumps
from .core import HttpError


def invalid(message: str, **details: Any) -> HttpError:
    return HttpError(400, "invalid_request", message, details)


def reject_unknown(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise invalid(f"unknown field(s): {', '.join(unknown)}", unknown=unknown, allowed=sorted(allowed))


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def text(body: Mapping[str, Any], name: str, *, required: bool = False, max_length: int = 200) -> str | None:
    """A non-empty string field of at most `max_length` characters (None when absent or null)."""
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(f"field {name!r} is required", field=name)
        return None
    if not isinstance(value, str):
        raise invalid(f"field {name!r} must be a string, not {type_name(value)}", field=name)
    if not value or len(value) > max_length:
        raise invalid(f"field {name!r} must be 1 to {max_length} characters long", field=name, max_length=max_length)
    if has_control_characters(value):
        raise invalid(f"field {name!r} must not contain control characters", field=name)
    return value


def choice(body: Mapping[str, Any], name: str, options: tuple[str, ...], default: str) -> str:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or value not in options:
        raise invalid(
            f"field {name!r} must be one of {', '.join(options)}; got {dumps(value)[:80]}",
            field=name,
            allowed=list(options),
        )
    return value


def json_value(body: Mapping[str, Any], name: str, *, max_bytes: int) -> Any:
    """Any JSON value, at most `max_bytes` once encoded as compact UTF-8 JSON."""
    value = body.get(name)
    try:
        size = len(dumps(value).encode())
    except RecursionError:
        raise invalid(f"field {name!r} is nested too deeply", field=name) from None
    if size > max_bytes:
        raise invalid(
            f"field {name!r} is {size} bytes of JSON; the limit is {max_bytes}",
            field=name,
            size_bytes=size,
            limit_bytes=max_bytes,
        )
    return value


def json_object(body: Mapping[str, Any], name: str, *, max_bytes: int) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(f"field {name!r} must be an object, not {type_name(value)}", field=name)
    json_value(body, name, max_bytes=max_bytes)
    return value


def seconds(body: Mapping[str, Any], name: str, *, maximum: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"field {name!r} must be a number of seconds, not {type_name(value)}", field=name)
    if not math.isfinite(value) or value <= 0 or value > maximum:
        raise invalid(f"field {name!r} must be > 0 and <= {maximum:g} seconds", field=name, maximum=maximum)
    return float(value)


def timestamp(body: Mapping[str, Any], name: str, *, max_ahead: float, now: datetime) -> datetime | None:
    """An RFC 3339 time with an offset (e.g. `2026-01-01T12:00:00Z`), at most `max_ahead` seconds from now."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise invalid(f"field {name!r} must be an RFC 3339 time string", field=name)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise invalid(f"field {name!r} must be an RFC 3339 time, e.g. 2026-01-01T12:00:00Z", field=name) from None
    if when.tzinfo is None:
        raise invalid(f"field {name!r} needs a time zone offset (Z or +hh:mm)", field=name)
    if when.year < 2000:  # a time long past is a client's mistake, not "start now"
        raise invalid(f"field {name!r} must be a time after 2000-01-01", field=name)
    if (when - now).total_seconds() > max_ahead:
        raise invalid(f"field {name!r} is more than {max_ahead:g} seconds ahead", field=name, maximum=max_ahead)
    return when.astimezone(timezone.utc)


def query_int(
    query: Mapping[str, str], name: str, *, default: int, minimum: int = 0, maximum: int = 10**18 - 1
) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    return parse_int(raw, f"query parameter {name!r}", minimum=minimum, maximum=maximum)


def parse_int(raw: str, what: str, *, minimum: int = 0, maximum: int = 10**18 - 1) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise invalid(f"{what} must be an integer from {minimum} to {maximum}; got {raw[:40]!r}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise invalid(f"{what} must be an integer from {minimum} to {maximum}; got {value}")
    return value


def query_text(query: Mapping[str, str], name: str, *, max_length: int = 200) -> str | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not raw or len(raw) > max_length:
        raise invalid(f"query parameter {name!r} must be 1 to {max_length} characters long")
    if has_control_characters(raw):
        raise invalid(f"query parameter {name!r} must not contain control characters")
    return raw


def query_cursor(query: Mapping[str, str], name: str) -> str | None:
    """A listing cursor: what `next_before` gave (decimal digits, as every store encodes them)."""
    raw = query.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", raw):
        raise invalid(f"query parameter {name!r} is not a cursor from next_before; got {raw[:40]!r}")
    return raw


def query_choice(query: Mapping[str, str], name: str, options: tuple[str, ...], default: str | None) -> str | None:
    raw = query.get(name)
    if raw is None:
        return default
    if raw not in options:
        raise invalid(f"query parameter {name!r} must be one of {', '.join(options)}", allowed=list(options))
    return raw


# -- field specs: each rule declared once, read by the parser and by the OpenAPI document ----------

#: JSON Schema for "no control characters" (`has_control_characters`): a search for one must fail
#: (not an anchored `^...$`, which Python's `re` lets end before a trailing newline).
NO_CONTROL: dict[str, Any] = {"not": {"pattern": CONTROL_CHARACTER}}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _described(schema: dict[str, Any], description: str | None) -> dict[str, Any]:
    return {**schema, "description": description} if description else schema


@attrs.frozen
class TextField:
    """A non-empty string of at most `max_length` characters without control characters (`text`)."""

    name: str
    max_length: int = 200
    required: bool = False
    description: str | None = None

    def parse(self, body: Mapping[str, Any], *, now: datetime | None = None) -> str | None:
        return text(body, self.name, required=self.required, max_length=self.max_length)

    def value_schema(self) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": self.max_length, **NO_CONTROL}

    def schema(self) -> dict[str, Any]:
        value = _described(self.value_schema(), self.description)
        return value if self.required else nullable(value)


@attrs.frozen
class ChoiceField:
    """One of `options` (`choice`); absent or null is `default`."""

    name: str
    options: tuple[str, ...]
    default: str | None = None
    description: str | None = None

    def parse(self, body: Mapping[str, Any], *, now: datetime | None = None) -> str | None:
        if body.get(self.name) is None:
            return self.default
        return choice(body, self.name, self.options, self.options[0])

    def schema(self) -> dict[str, Any]:
        value: dict[str, Any] = {"type": "string", "enum": list(self.options)}
        if self.default is not None:
            value["default"] = self.default
        return nullable(_described(value, self.description))


@attrs.frozen
class JsonField:
    """Any JSON value of at most `max_bytes` encoded (`json_value`); `required`: not null either."""

    name: str
    max_bytes: int
    required: bool = False
    description: str | None = None

    def parse(self, body: Mapping[str, Any], *, now: datetime | None = None) -> Any:
        if self.required and body.get(self.name) is None:
            raise invalid(f"field {self.name!r} is required (any JSON value but null)", field=self.name)
        return json_value(body, self.name, max_bytes=self.max_bytes)

    def schema(self) -> dict[str, Any]:
        but = " but null" if self.required else ""
        value: dict[str, Any] = {"not": {"type": "null"}} if self.required else {}
        return {**value, "description": self.description or f"any JSON value{but}, at most {self.max_bytes} bytes encoded"}


@attrs.frozen
class ObjectField:
    """A JSON object of at most `max_bytes` encoded (`json_object`), or null."""

    name: str
    max_bytes: int
    description: str | None = None

    def parse(self, body: Mapping[str, Any], *, now: datetime | None = None) -> dict[str, Any] | None:
        return json_object(body, self.name, max_bytes=self.max_bytes)

    def schema(self) -> dict[str, Any]:
        limit = f"at most {self.max_bytes} bytes encoded"
        return nullable({"type": "object", "description": f"{self.description}; {limit}" if self.description else limit})


@attrs.frozen
class SecondsField:
    """A number of seconds, > 0 and <= `maximum` (`seconds`), or null."""

    name: str
    maximum: float
    description: str | None = None

    def parse(self, body: Mapping[str, Any], *, now: datetime | None = None) -> float | None:
        return seconds(body, self.name, maximum=self.maximum)

    def schema(self) -> dict[str, Any]:
        return nullable(_described({"type": "number", "exclusiveMinimum": 0, "maximum": self.maximum}, self.description))


#: Longest time string `timestamp` reads.
MAX_TIMESTAMP_LENGTH = 40


@attrs.frozen
class TimeField:
    """An RFC 3339 time at most `max_ahead` seconds from the request's `now` (`timestamp`), or null."""

    name: str
    max_ahead: float
    description: str | None = None

    def parse(self, body: Mapping[str, Any], *, now: datetime | None = None) -> datetime | None:
        assert now is not None, "a time field is read against the engine's clock"
        return timestamp(body, self.name, max_ahead=self.max_ahead, now=now)

    def schema(self) -> dict[str, Any]:
        value = {"type": "string", "format": "date-time", "maxLength": MAX_TIMESTAMP_LENGTH}
        ahead = f"at most {self.max_ahead:g} s ahead"
        return nullable(_described(value, f"{self.description}, {ahead}" if self.description else ahead))


@attrs.frozen
class IntField:
    """A JSON integer from `minimum` to `maximum` (not a boolean, nor a number with a fraction); absent or null is
    `default` (None unless told)."""

    name: str
    minimum: int = 0
    maximum: int = 2**31 - 1
    required: bool = False
    description: str | None = None
    default: int | None = None

    def parse(self, body: Mapping[str, Any], *, now: datetime | None = None) -> int | None:
        value = body.get(self.name)
        if value is None:
            if self.required:
                raise invalid(f"field {self.name!r} is required", field=self.name)
            return self.default
        # JSON Schema's integer: any number without a fraction (2.0 is 2).
        whole = isinstance(value, float) and value.is_integer()
        integer = whole or isinstance(value, int) and not isinstance(value, bool)
        if not integer or not self.minimum <= value <= self.maximum:
            got = value if integer else type_name(value)
            raise invalid(
                f"field {self.name!r} must be an integer from {self.minimum} to {self.maximum}, got {got}", field=self.name
            )
        return int(value) if whole else value

    def schema(self) -> dict[str, Any]:
        value: dict[str, Any] = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        if self.default is not None:
            value["default"] = self.default
        value = _described(value, self.description)
        return value if self.required else nullable(value)


BodyField = TextField | ChoiceField | JsonField | ObjectField | SecondsField | TimeField | IntField


@attrs.frozen
class BodySpec:
    """A JSON object body: its fields (read in this order), no others."""

    fields: tuple[BodyField, ...]
    #: The fields' names, in order, and as a set: made once with the spec, not at every request.
    names: tuple[str, ...] = attrs.field(
        init=False, eq=False, repr=False, default=attrs.Factory(lambda spec: tuple(f.name for f in spec.fields), takes_self=True)
    )
    _allowed: frozenset[str] = attrs.field(
        init=False, eq=False, repr=False, default=attrs.Factory(lambda spec: frozenset(spec.names), takes_self=True)
    )

    def parse(self, body: Mapping[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
        """Every field's value by name; the first rule broken is a 400."""
        if not self._allowed.issuperset(body):
            reject_unknown(body, self.names)
        return {f.name: f.parse(body, now=now) for f in self.fields}

    def schema(self) -> dict[str, Any]:
        required = [f.name for f in self.fields if getattr(f, "required", False)]
        return {
            "type": "object",
            **({"required": required} if required else {}),
            "additionalProperties": False,
            "properties": {f.name: f.schema() for f in self.fields},
        }


@attrs.frozen
class QueryInt:
    name: str
    default: int
    minimum: int = 0
    maximum: int = 10**18 - 1

    def parse(self, query: Mapping[str, str]) -> int:
        return query_int(query, self.name, default=self.default, minimum=self.minimum, maximum=self.maximum)

    def parameter(self) -> dict[str, Any]:
        schema = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum, "default": self.default}
        return {"name": self.name, "in": "query", "schema": schema}


@attrs.frozen
class QueryText:
    name: str
    max_length: int = 200
    description: str | None = None

    def parse(self, query: Mapping[str, str]) -> str | None:
        return query_text(query, self.name, max_length=self.max_length)

    def parameter(self) -> dict[str, Any]:
        schema = {"type": "string", "minLength": 1, "maxLength": self.max_length, **NO_CONTROL}
        return _described({"name": self.name, "in": "query", "schema": schema}, self.description)


@attrs.frozen
class QueryChoice:
    name: str
    options: tuple[str, ...]
    default: str | None = None

    def parse(self, query: Mapping[str, str]) -> str | None:
        return query_choice(query, self.name, self.options, self.default)

    def parameter(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "enum": list(self.options)}
        if self.default is not None:
            schema["default"] = self.default
        return {"name": self.name, "in": "query", "schema": schema}


@attrs.frozen
class QueryCursor:
    """A listing cursor (`query_cursor`)."""

    name: str
    description: str | None = None

    def parse(self, query: Mapping[str, str]) -> str | None:
        return query_cursor(query, self.name)

    def parameter(self) -> dict[str, Any]:
        digits = {"type": "string", "minLength": 1, "maxLength": 18, "not": {"pattern": "[^0-9]"}}
        return _described({"name": self.name, "in": "query", "schema": digits}, self.description)
