"""A delta's SSE frame (the token hot path of a stream) is encoded straight from its two strings:
the same bytes as the general encoding, without the event converter (issue 22, part 3)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from runengine import wire
from runengine.events import MessageDelta
from runengine.http.sse import FrameCache


def delta(seq: int, content: str) -> MessageDelta:
    return MessageDelta(run_id="r1", seq=seq, at=datetime(2026, 1, 2, tzinfo=timezone.utc), message_id='m"1', content=content)


@pytest.mark.parametrize("content", ["tok1 ", "", 'quote " back \\ slash', "line\nbreak\r\u2028 é 漢字 🙂", "\x00\x1f"])
def test_a_delta_frame_is_the_general_encoding_without_the_converter(content: str, monkeypatch: pytest.MonkeyPatch) -> None:
    event = delta(7, content)
    general = wire.dumps(wire.event_to_dict(event))  # encoded before the count starts
    converted: list[Any] = []
    real = wire.event_data
    monkeypatch.setattr(wire, "event_data", lambda e: converted.append(e) or real(e))
    frame = FrameCache().frame(event)
    assert converted == []  # no converter call for a delta
    assert frame == f"id: 7\nevent: message.delta\ndata: {general}\n\n".encode()
    assert json.loads(frame.decode().split("data: ", 1)[1])["data"] == {"message_id": 'm"1', "content": content}


@pytest.mark.parametrize(
    "value, text",
    [
        (datetime(2026, 12, 3, 16, 4, 5, 120, tzinfo=timezone.utc), "2026-12-03T16:04:05.000120Z"),
        (datetime(2026, 12, 3, 16, 4, 5), "2026-12-03T16:04:05.000000Z"),  # naive: taken as UTC
        (datetime(2026, 12, 3, 18, 4, 5, 999999, tzinfo=timezone(timedelta(hours=2))), "2026-12-03T16:04:05.999999Z"),
        (datetime(7, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "0007-01-02T03:04:05.000000Z"),  # the year zero-padded
    ],
)
def test_times_are_rfc3339_in_utc_with_microseconds(value: datetime, text: str) -> None:
    assert wire.format_time(value) == text
    assert wire.parse_time(text) == (value if value.tzinfo else value.replace(tzinfo=timezone.utc))
