"""The framework-free layer called directly (no server), on asyncio and trio: the App contract,
SSE frames, the catch-all 500, and the run object mapping."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from httpkit import demo_engine
from runengine.http import Request, Response, Router, StreamResponse
from runengine.adapters.profiles.native import NativeAPI
from runengine.adapters.profiles.native_shapes import run_to_json


def request(method: str, path: str, body: object = None, **kwargs) -> Request:
    raw = json.dumps(body).encode() if body is not None else b""
    return Request(method=method, path=path, body=raw, **kwargs)


@pytest.mark.anyio
async def test_sync_run_and_sse_frames_without_a_server() -> None:
    engine = demo_engine()
    api = NativeAPI(engine)
    async with engine:
        response = await api(request("POST", "/runs", {"agent": "echo", "input": "a b c"}))
        assert isinstance(response, Response) and response.status == 200
        run = json.loads(response.body)
        assert run == run_to_json(await engine.status(run["run_id"]))
        stream = await api(
            request("GET", f"/runs/{run['run_id']}/events", headers={"accept": "text/event-stream", "last-event-id": "2"})
        )
        assert isinstance(stream, StreamResponse)
        assert dict(stream.headers)["content-type"].startswith("text/event-stream")
        chunks = [chunk async for chunk in stream.body]
        assert chunks[0] == b"retry: 1000\n\n"
        frames = [f + "\n\n" for f in b"".join(chunks[1:]).decode().split("\n\n") if f]
        assert frames[0].startswith("id: 3\nevent: ") and frames[-1].startswith(f"id: {run['last_seq']}\nevent: run.completed\n")
        for frame in frames:
            lines = frame.rstrip("\n").split("\n")
            assert lines[0].startswith("id: ") and lines[1].startswith("event: ") and lines[2].startswith("data: ")
            event = json.loads(lines[2][len("data: "):])
            assert lines[0] == f"id: {event['seq']}" and lines[1] == f"event: {event['type']}"
        assert api.open_streams == 0


@pytest.mark.anyio
async def test_an_unexpected_error_is_a_logged_500_in_the_error_format() -> None:
    router = Router()

    async def broken(req: Request) -> Response:
        raise RuntimeError("secret internals")

    router.route("GET", "/broken", broken)
    with capture_logs() as logs:
        response = await router(request("GET", "/broken"))
    assert response.status == 500
    body = json.loads(response.body)
    assert body == {"error": {"code": "internal_error", "message": "internal server error", "details": {}}}
    assert b"secret" not in response.body and b"Traceback" not in response.body
    assert any(entry["event"] == "unhandled error" and entry["log_level"] == "error" for entry in logs)


@pytest.mark.anyio
async def test_an_engine_that_is_not_started_answers_503() -> None:
    api = NativeAPI(demo_engine())
    response = await api(request("POST", "/runs", {"agent": "echo"}))
    assert response.status == 503
    assert json.loads(response.body)["error"]["code"] == "engine_not_started"


def test_frame_cache_gives_the_frames_and_stays_bounded() -> None:
    from runengine.events import MessageDelta
    from runengine.http.sse import FrameCache, sse_frame
    from runengine.wire import event_to_json

    cache = FrameCache(size=3)
    events = [MessageDelta(run_id="r", seq=i, message_id="m", content=f"c{i}") for i in range(1, 6)]
    for event in events + events:
        assert cache.frame(event) == sse_frame(event_to_json(event), event=event.type, id=event.seq)
    assert len(cache._frames) == 3
    assert list(cache._frames) == [("r", 3), ("r", 4), ("r", 5)]


def test_frame_cache_is_bounded_in_bytes_too() -> None:
    from runengine.events import MessageDelta
    from runengine.http.sse import FrameCache, sse_frame
    from runengine.wire import event_to_json

    cache = FrameCache(size=1000, max_bytes=16 * 1024)
    events = [MessageDelta(run_id="r", seq=i, message_id="m", content="x" * 500) for i in range(1, 101)]
    for event in events:
        assert cache.frame(event) == sse_frame(event_to_json(event), event=event.type, id=event.seq)
        assert cache.bytes == sum(map(len, cache._frames.values())) <= 16 * 1024
    assert list(cache._frames)[-1] == ("r", 100) and len(cache._frames) < 100
    huge = MessageDelta(run_id="r", seq=101, message_id="m", content="x" * 2000)  # over max_bytes / 16
    assert cache.frame(huge) == sse_frame(event_to_json(huge), event=huge.type, id=huge.seq)
    assert ("r", 101) not in cache._frames
