"""The one place where events and states become JSON and back (a cattrs converter).

An event on the wire:
    {"seq": 3, "type": "message.delta", "run_id": "...", "at": "<RFC 3339>", "data": {...}}

Event types this version does not know become `UnknownEvent` instead of an error,
so a reader of a log written by a newer version keeps working.
"""

from __future__ import annotations

import json
import math
import types
import typing
from datetime import datetime, timezone
from typing import Any

import cattrs
import msgspec
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .errors import InvalidRequest
from .events import ENVELOPE_FIELDS, EVENT_TYPES, ErrorInfo, Event, MessageDelta, UnknownEvent, data_fields
from .state import RunState
from .status import Status

converter = cattrs.Converter(omit_if_default=False)
#: A str as a JSON string, as `dumps` writes one (not ASCII-escaped).
_json_string = json.encoder.encode_basestring


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, microseconds kept."""
    if value.tzinfo is not timezone.utc:  # the engine's clock gives UTC: nothing to convert (every frame has one)
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" as Z; the year is zero-padded


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


converter.register_unstructure_hook(datetime, format_time)
converter.register_structure_hook(datetime, lambda v, _: v if isinstance(v, datetime) else parse_time(v))
converter.register_unstructure_hook(Status, lambda s: s.value)
converter.register_structure_hook(Any, lambda v, _: v)

# Per event class: payload (data) to dict and back, generated once by cattrs.
_DATA_OUT: dict[str, Any] = {}
_DATA_IN: dict[str, Any] = {}
_OMIT = {name: override(omit=True) for name in ENVELOPE_FIELDS}
for _type, _cls in EVENT_TYPES.items():
    _DATA_OUT[_type] = make_dict_unstructure_fn(_cls, converter, **_OMIT)  # type: ignore[arg-type]
    _DATA_IN[_type] = make_dict_structure_fn(_cls, converter)


def event_data(event: Event) -> dict[str, Any]:
    """The event's payload as JSON-ready data (the wire `data` field)."""
    if isinstance(event, UnknownEvent):
        return event.data
    out: dict[str, Any] = _DATA_OUT[event.type](event)
    return out


def event_to_dict(event: Event) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "type": event.type,
        "run_id": event.run_id,
        "at": format_time(event.at),
        "data": event_data(event),
    }


def event_from_parts(run_id: str, seq: int, event_type: str, at: Any, data: dict[str, Any]) -> Event:
    """Build an event from its stored parts. Unknown types become UnknownEvent."""
    when = at if isinstance(at, datetime) else parse_time(at)
    structure = _DATA_IN.get(event_type)
    if structure is None:
        return UnknownEvent(run_id=run_id, seq=seq, at=when, type=event_type, data=dict(data or {}))
    payload = dict(data or {})
    payload["run_id"], payload["seq"], payload["at"] = run_id, seq, when
    event: Event = structure(payload, EVENT_TYPES[event_type])
    return event


# Stored events were checked when they were written: a store decodes them with the
# class's own constructor (a few µs) instead of cattrs' validating structure (~12 µs).
# Per event type: (class, payload fields stored as time text, fields stored as ErrorInfo
# dicts); a class with a field of any other non-JSON type goes through cattrs.
_JSON_TYPES = (str, int, float, bool, dict, list, type(None), Any)


def _stored_shape(cls: type[Event]) -> tuple[type[Event], tuple[str, ...], tuple[str, ...]] | None:
    times: list[str] = []
    errors: list[str] = []
    for name, hint in typing.get_type_hints(cls).items():
        if name in ENVELOPE_FIELDS or typing.get_origin(hint) is typing.ClassVar:
            continue
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
        kinds = {typing.get_origin(arg) or arg for arg in args}
        if kinds <= {datetime, type(None)}:
            times.append(name)
        elif kinds <= {ErrorInfo, type(None)}:
            errors.append(name)
        elif not all(kind in _JSON_TYPES for kind in kinds):
            return None
    return cls, tuple(times), tuple(errors)


_STORED: dict[str, tuple[type[Event], tuple[str, ...], tuple[str, ...]] | None] = {
    _type: _stored_shape(_cls) for _type, _cls in EVENT_TYPES.items()
}


#: msgspec's JSON decoder: raises msgspec.DecodeError on what it refuses (`loads_stored` then
#: falls back to the standard library's).
decode_json = msgspec.json.Decoder().decode


def loads_stored(text: str | bytes) -> Any:
    """Decode a payload a store wrote with `dumps`: msgspec's decoder (several times faster than
    the standard library's on the small payloads of a log; integers of any size stay exact),
    with the standard library's as the fallback for anything it refuses."""
    try:
        return decode_json(text)
    except msgspec.DecodeError:
        return json.loads(text)


def event_from_stored(run_id: str, seq: int, event_type: str, at: datetime, data: dict[str, Any]) -> Event:
    """An event a store wrote and reads back (`data` freshly decoded; it may be changed here).

    Built directly, without validating again what was validated when it was written; a
    payload the class does not take as it is (an older or newer layout) goes through
    `event_from_parts`, which structures and checks it."""
    shape = _STORED.get(event_type)
    if shape is not None and type(data) is dict:
        cls, times, errors = shape
        payload = data
        try:
            if (times or errors) and not data.keys().isdisjoint(times + errors):
                payload = dict(data)
                for name in times:
                    value = payload.get(name)
                    if type(value) is str:
                        payload[name] = parse_time(value)
                for name in errors:
                    value = payload.get(name)
                    if type(value) is dict:
                        payload[name] = ErrorInfo(**value)
            return cls(run_id=run_id, seq=seq, at=at, **payload)
        except (TypeError, ValueError):
            pass
    return event_from_parts(run_id, seq, event_type, at, data)


def event_from_dict(raw: dict[str, Any]) -> Event:
    """Read an event from its wire dict. Malformed input raises InvalidRequest."""
    try:
        return event_from_parts(raw["run_id"], int(raw["seq"]), raw["type"], raw["at"], raw.get("data") or {})
    except (KeyError, TypeError, ValueError, cattrs.BaseValidationError) as exc:
        raise InvalidRequest(f"malformed event: {exc}") from exc


def dumps(value: Any) -> str:
    """Compact, strict JSON, as stored and sent.

    Strict: NaN, Infinity and -Infinity raise ValueError (they are not JSON, and JavaScript's
    JSON.parse refuses them), as do integers longer than Python converts to text (4,300 digits).
    """
    return _encoder.encode(value)


def to_json(value: Any, what: str) -> str:
    """`dumps(value)`, or InvalidRequest naming `what` when it cannot be written as strict JSON."""
    try:
        return dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidRequest(f"{what} cannot be written as JSON: {_why(exc)}", field=what) from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it is nested too deeply or holds a value JSON cannot represent"
    if isinstance(exc, ValueError) and "Out of range float" in str(exc):
        return "it holds NaN or Infinity, which JSON numbers cannot be"
    return str(exc)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    return converter.unstructure(value)


#: `dumps`' encoder, made once: json.dumps with these options makes a JSONEncoder on every call
#: (~1.5 µs; a sync run encodes ~8 values). It keeps no state between calls (any thread may use it).
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default)


def event_to_json(event: Event) -> str:
    """`dumps(event_to_dict(event))`, byte for byte, around the payload text `data_to_json` keeps:
    a payload encoded for the store (or the writer's size check) is not encoded again per frame."""
    return (
        f'{{"seq":{int(event.seq)},"type":{_json_string(event.type)},"run_id":{_json_string(event.run_id)},'
        f'"at":"{format_time(event.at)}","data":{data_to_json(event)}}}'
    )


def event_from_json(text: str | bytes) -> Event:
    return event_from_dict(json.loads(text))


#: Python types that JSON gives back as themselves (the same type, an equal value) and that nobody
#: can change: a payload of only these is shared, not copied (the SQLite tail cache), and
#: encoded without the converter (below).
JSON_SCALARS = frozenset({str, int, float, bool, type(None)})
#: Per event class: its payload fields in the converter's order, each with its key as JSON text
#: and whether only None passes it unchanged (a time or an ErrorInfo); None for a class the
#: converter may change a scalar of (UnknownEvent, a field of another type).
_SCALAR_FIELDS: dict[type[Event], tuple[tuple[str, str, bool], ...] | None] = {}


def _scalar_fields(cls: type[Event]) -> tuple[tuple[str, str, bool], ...] | None:
    if cls is UnknownEvent:
        return None
    none_only: dict[str, bool] = {}
    for name, hint in typing.get_type_hints(cls).items():
        if name in ENVELOPE_FIELDS or typing.get_origin(hint) is typing.ClassVar:
            continue
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
        kinds = {typing.get_origin(arg) or arg for arg in args}
        if not kinds <= {*_JSON_TYPES, datetime, ErrorInfo}:
            return None
        none_only[name] = not kinds <= set(_JSON_TYPES)
    order = data_fields(cls)
    if sorted(order) != sorted(none_only):
        return None
    return tuple((name, _json_string(name) + ":", none_only[name]) for name in order)


def _scalar_payload_json(event: Event) -> str | None:
    """The payload's JSON text, exactly as `to_json(event_data(event))` writes it, when every payload
    field holds a JSON scalar (a step that returned a number or text, a thought ...): each field
    written as the encoder writes it, no converter, no encoder call. None otherwise (a container,
    a float that is not finite, an integer too long for text: the converter's path, and its errors)."""
    cls = type(event)
    try:
        fields = _SCALAR_FIELDS[cls]
    except KeyError:
        fields = _SCALAR_FIELDS[cls] = _scalar_fields(cls)
    if fields is None:
        return None
    members = []
    for name, key, none_only in fields:
        value = getattr(event, name)
        kind = type(value)
        if value is None:
            members.append(key + "null")
        elif none_only:
            return None
        elif kind is str:
            members.append(key + _json_string(value))
        elif kind is bool:
            members.append(key + ("true" if value else "false"))
        elif kind is int and -_SHORT_INT < value < _SHORT_INT:
            members.append(key + int.__repr__(value))
        elif kind is float and math.isfinite(value):
            members.append(key + float.__repr__(value))
        else:
            return None
    return "{" + ",".join(members) + "}"


#: Integers this far from 0 have far fewer digits than Python refuses to write (4,300).
_SHORT_INT = 10**1000


#: The payloads encoded last, by event identity (the event is kept, so its id is not reused):
#: the run writer encodes an event to check its size and the store then stores the same
#: text, one encoding per event.
_ENCODED: dict[int, tuple[Event, str]] = {}
#: Bounds on what the memo keeps alive: entries, and characters of text (big payloads fill it fast).
_ENCODED_MAX = 4096
_ENCODED_MAX_CHARS = 4_000_000
_encoded_chars = 0


def data_to_json(event: Event) -> str:
    """Only the payload, as JSON (what stores keep beside run_id, seq, type and at).

    Raises InvalidRequest when the payload cannot be strict JSON (NaN, Infinity, an object
    cattrs cannot unstructure ...)."""
    if type(event) is MessageDelta and type(event.content) is str and type(event.message_id) is str:
        # The token hot path (a frame per delta): the same text as below, without the converter or the memo.
        return '{"message_id":' + _json_string(event.message_id) + ',"content":' + _json_string(event.content) + "}"
    known = _ENCODED.get(id(event))
    if known is not None and known[0] is event:
        return known[1]
    global _encoded_chars
    text = _scalar_payload_json(event)
    if text is None:
        text = to_json(event_data(event), f"event seq {event.seq} ({event.type})")
    if len(_ENCODED) >= _ENCODED_MAX or _encoded_chars + len(text) > _ENCODED_MAX_CHARS:
        _ENCODED.clear()
        _encoded_chars = 0
    if len(text) <= _ENCODED_MAX_CHARS // 4:
        _ENCODED[id(event)] = (event, text)
        _encoded_chars += len(text)
    return text


def state_to_dict(state: RunState) -> dict[str, Any]:
    out: dict[str, Any] = converter.unstructure(state)
    return out


def state_from_dict(raw: dict[str, Any]) -> RunState:
    return converter.structure(raw, RunState)


def state_to_json(state: RunState) -> str:
    return dumps(state_to_dict(state))


def state_from_json(text: str | bytes) -> RunState:
    return state_from_dict(json.loads(text))
