"""The one place where events and states become JSON and back (a cattrs converter).

An event on the wire:
    {"seq": 3, "type": "message.delta", "run_id": "...", "at": "<RFC 3339>", "data": {...}}

Event types this version does not know become `UnknownEvent` instead of an error,
so a reader of a log written by a newer version keeps working.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .errors import InvalidRequest
from .events import ENVELOPE_FIELDS, EVENT_TYPES, Event, UnknownEvent
from .state import RunState
from .status import Status

converter = cattrs.Converter(omit_if_default=False)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, microseconds kept."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    utc = value.astimezone(timezone.utc)
    return f"{utc.year:04d}" + utc.strftime("-%m-%dT%H:%M:%S.%fZ")  # %Y is not zero-padded before 1000


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


def event_from_dict(raw: dict[str, Any]) -> Event:
    """Read an event from its wire dict. Malformed input raises InvalidRequest."""
    try:
        return event_from_parts(raw["run_id"], int(raw["seq"]), raw["type"], raw["at"], raw.get("data") or {})
    except (KeyError, TypeError, ValueError, cattrs.BaseValidationError) as exc:
        raise InvalidRequest(f"malformed event: {exc}") from exc


def dumps(value: Any) -> str:
    """Compact JSON, as stored and sent."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    return converter.unstructure(value)


def event_to_json(event: Event) -> str:
    return dumps(event_to_dict(event))


def event_from_json(text: str | bytes) -> Event:
    return event_from_dict(json.loads(text))


def data_to_json(event: Event) -> str:
    """Only the payload, as JSON (what stores keep beside run_id, seq, type and at)."""
    return dumps(event_data(event))


def state_to_dict(state: RunState) -> dict[str, Any]:
    out: dict[str, Any] = converter.unstructure(state)
    return out


def state_from_dict(raw: dict[str, Any]) -> RunState:
    return converter.structure(raw, RunState)


def state_to_json(state: RunState) -> str:
    return dumps(state_to_dict(state))


def state_from_json(text: str | bytes) -> RunState:
    return state_from_dict(json.loads(text))
