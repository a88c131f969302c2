"""A delta's SSE frame (the token hot path of a stream) is encoded straight from its two strings:
the same bytes as the general encoding, without the event converter (issue 22, part 3)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
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
