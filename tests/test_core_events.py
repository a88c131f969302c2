"""Events on the wire: one converter, round trips, unknown types."""

from __future__ import annotations

import json

import pytest
from hypothesis import given

from runengine import wire
from runengine.errors import InvalidRequest
from runengine.events import EVENT_TYPES, KNOWN_EVENTS, MessageDelta, UnknownEvent, data_fields
from runengine.testing.strategies import any_event, histories


@given(histories(max_events=30))
def test_json_round_trip_of_every_event_in_valid_histories_is_identity(events):
    for event in events:
        assert wire.event_from_json(wire.event_to_json(event)) == event


@given(any_event())
def test_json_round_trip_of_arbitrary_events_is_identity(event):
    assert wire.event_from_json(wire.event_to_json(event)) == event


def test_wire_shape_is_the_documented_envelope():
    event = MessageDelta(run_id="r1", seq=3, message_id="m1", content="hi")
    raw = json.loads(wire.event_to_json(event))
    assert raw == {
        "seq": 3,
        "type": "message.delta",
        "run_id": "r1",
        "at": "1970-01-01T00:00:00.000000Z",
        "data": {"message_id": "m1", "content": "hi"},
    }


def test_every_event_class_has_a_unique_dotted_name():
    names = [cls.type for cls in KNOWN_EVENTS]
    assert len(names) == len(set(names)) == len(EVENT_TYPES)
    assert all("." in name or name in ("thought", "usage", "custom") for name in names)
    assert data_fields(MessageDelta) == ("message_id", "content")


def test_unknown_event_types_are_read_without_crashing():
    raw = '{"seq": 4, "type": "run.teleported", "run_id": "r", "at": "2026-01-01T00:00:00Z", "data": {"to": "mars"}}'
    event = wire.event_from_json(raw)
    assert isinstance(event, UnknownEvent)
    assert event.type == "run.teleported" and event.data == {"to": "mars"} and event.seq == 4
    assert json.loads(wire.event_to_json(event))["data"] == {"to": "mars"}


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"seq": "x", "type": "message.delta", "run_id": "r", "at": "2026-01-01T00:00:00Z", "data": {}},
        {"seq": 1, "type": "message.delta", "run_id": "r", "at": "not a time", "data": {}},
        {"seq": 1, "type": "message.delta", "run_id": "r", "at": "2026-01-01T00:00:00Z", "data": {"content": "x"}},
    ],
)
def test_malformed_wire_events_raise_invalid_request(raw):
    with pytest.raises(InvalidRequest):
        wire.event_from_dict(raw)
