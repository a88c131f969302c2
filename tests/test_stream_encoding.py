"""A streamed run's frames: the same bytes as before, each payload JSON-encoded once (issue 22, part 3)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from runengine.adapters.asgi import engine_asgi_app
from runengine.context import RunContext
from runengine.engine import RunEngine
from runengine.events import Event, MessageDelta, RunCompleted, RunCreated, UnknownEvent
from runengine.http.sse import sse_frame
from runengine.wire import dumps, event_to_dict, event_to_json
from tests.httpkit import serve, sse_events

ANYIO_BACKENDS = ("asyncio",)  # uvicorn

AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))

EVENTS: list[Event] = [
    MessageDelta(run_id="r1", seq=3, at=AT, message_id="m", content='é "quoted"\n\u2028 back\\slash 😀 \x00'),
    RunCreated(run_id="r1", seq=1, at=AT, agent="a", input={"x": [1, 2.5, None, "é", {"deep": True}]}, mode="sync"),
    UnknownEvent(run_id="r1", seq=9, at=AT, type="x.newer", data={"k": "v"}),
    RunCompleted(run_id="r1", seq=4, at=datetime(2026, 1, 1), output={"a": 1}),  # a naive time is UTC
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_an_event_as_json_is_what_it_always_was(event: Event) -> None:
    assert event_to_json(event) == dumps(event_to_dict(event))


def test_a_frame_of_one_line_and_of_several_lines() -> None:
    assert sse_frame('{"a":1}', event="e", id=2) == b'id: 2\nevent: e\ndata: {"a":1}\n\n'
    assert sse_frame("one\r\ntwo\rthree\nfour") == b"data: one\ndata: two\ndata: three\ndata: four\n\n"


@pytest.mark.server
@pytest.mark.anyio
async def test_a_streamed_run_encodes_each_delta_once(monkeypatch: pytest.MonkeyPatch) -> None:
    deltas = 300
    engine = RunEngine("memory://")

    @engine.agent("tokens")
    async def tokens(ctx: RunContext) -> None:
        async with ctx.message() as message:
            for i in range(deltas):
                await message.delta(f"t{i} ")

    encodings = 0
    real_dumps = json.dumps

    def counting_dumps(value: Any, **kwargs: Any) -> str:
        nonlocal encodings
        encodings += 1
        return real_dumps(value, **kwargs)

    async with serve(engine_asgi_app(engine)) as base, httpx.AsyncClient(timeout=30) as client:
        monkeypatch.setattr(json, "dumps", counting_dumps)
        events = await sse_events(client, f"{base}/runs", method="POST", json={"agent": "tokens", "mode": "stream"})
        monkeypatch.undo()
    assert [e["type"] for e in events][-2:] == ["message.completed", "run.completed"]
    assert "".join(e["data"]["content"] for e in events if e["type"] == "message.delta") == "".join(f"t{i} " for i in range(deltas))
    # once for the store, not again for the frame (a few more for the request and the other events)
    assert encodings < deltas * 1.1
