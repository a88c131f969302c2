"""The profiles' shared toolkit: one cursor rule on every stream, one auth guard, one SSE header
set, the per-key lock, and the engine's `follow` and stream handle they are built on."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import pytest

from httpkit import demo_engine
from runengine.adapters.server import build_app
from runengine.engine import RunEngine
from runengine.events import Event, MessageDelta, MessageDiscarded
from runengine.http.auth import guarded
from runengine.http.core import HttpError, Request, Response, StreamResponse, json_response
from runengine.http.cursor import resume_after
from runengine.http.sse import SSE_HEADERS
from runengine.http.streaming import each_event
from runengine.keylock import KeyLocks


def _request(query: str = "", last_event_id: str | None = None) -> Request:
    headers = {"last-event-id": last_event_id} if last_event_id is not None else {}
    return Request(method="GET", path="/", query_string=query, headers=headers)


@pytest.mark.parametrize(
    ("query", "header", "expected"),
    [
        ("", None, 0),
        ("after_seq=4", None, 4),
        ("", "4", 4),
        ("after_seq=3", "7", 7),  # a reconnect to the first URL resumes after what was seen
        ("after_seq=9", "2", 9),
        ("after_seq=", None, 0),  # blank is not given
        ("", "  ", 0),
        ("after_seq=5", "", 5),
        ("", " 6 ", 6),
        ("after_seq=999999999999999999", None, 10**18 - 1),
    ],
)
def test_the_cursor_rule(query: str, header: str | None, expected: int) -> None:
    assert resume_after(_request(query, header)) == expected


@pytest.mark.parametrize(
    ("query", "header", "named"),
    [
        ("after_seq=-1", None, {"field": "after_seq"}),
        ("after_seq=%2B5", None, {"field": "after_seq"}),
        ("after_seq=1.0", None, {"field": "after_seq"}),
        ("after_seq=1000000000000000000", None, {"field": "after_seq"}),
        ("", "x1", {"header": "Last-Event-ID"}),
        ("", "-3", {"header": "Last-Event-ID"}),
        ("after_seq=2", "٣", {"header": "Last-Event-ID"}),  # a non-ASCII digit
    ],
)
def test_a_bad_cursor_is_a_400_naming_it(query: str, header: str | None, named: dict[str, str]) -> None:
    with pytest.raises(HttpError) as caught:
        resume_after(_request(query, header))
    assert (caught.value.status, caught.value.code, caught.value.details) == (400, "invalid_request", named)


def _stream_url(surface: str, run_id: str) -> str:
    return {
        "native": f"/runs/{run_id}/events",
        "acp": f"/acp/runs/{run_id}/events",
        "platform": f"/platform/apps/echo/traces/{run_id}/stream",
        "v1": f"/v1/runs/{run_id}/events",
    }[surface]


async def _finished_run(app: object, engine: RunEngine, surface: str) -> str:
    if surface == "platform":  # a trace of this profile's own session
        response = await app(Request(method="POST", path="/platform/apps/echo/execute", body=b'{"message": "a b c d"}'))  # type: ignore[operator]
        assert response.status == 200, response.body
        return str(json.loads(response.body)["trace_id"])
    return (await engine.execute("echo", "a b c d")).run_id


async def _ids(response: Response | StreamResponse) -> list[int]:
    assert isinstance(response, StreamResponse), getattr(response, "body", response)
    assert dict(response.headers)["content-type"] == dict(SSE_HEADERS)["content-type"]
    assert set(SSE_HEADERS) <= set(response.headers)
    body = b"".join([chunk async for chunk in response.body]).decode()
    return [int(n) for n in re.findall(r"^id: (\d+)$", body, re.MULTILINE)]


@pytest.mark.anyio
@pytest.mark.parametrize("surface", ["native", "acp", "platform", "v1"])
async def test_every_profile_resumes_by_the_same_rule(surface: str) -> None:
    engine = demo_engine()
    app = build_app(engine)
    async with engine:
        run_id = await _finished_run(app, engine, surface)
        last = (await engine.status(run_id)).last_seq
        url = _stream_url(surface, run_id)

        async def ids(query: str = "", last_event_id: str | None = None) -> list[int]:
            headers = {"accept": "text/event-stream"}
            if last_event_id is not None:
                headers["last-event-id"] = last_event_id
            return await _ids(await app(Request(method="GET", path=url, query_string=query, headers=headers)))

        everything = await ids(last_event_id=" ")  # blank: from the start
        assert everything[0] == 1 and everything[-1] == last
        for query, header, cursor in (("after_seq=1", "2", 2), ("after_seq=2", "1", 2)):
            assert await ids(query, header) == [i for i in everything if i > cursor]
        for query, header in (("after_seq=%2B1", None), ("after_seq=1", "-1"), ("", str(10**18))):
            refused = await app(
                Request(method="GET", path=url, query_string=query, headers={"accept": "text/event-stream", **({"last-event-id": header} if header else {})})
            )
            assert isinstance(refused, Response) and refused.status == 400
            assert json.loads(refused.body)["error"]["code"] == "invalid_request"


@pytest.mark.anyio
async def test_the_guard_runs_the_hook_before_the_handler() -> None:
    seen: list[object] = []

    async def handler(request: Request) -> Response:
        seen.append(request.principal)
        return json_response({})

    route = guarded(lambda headers: headers.get("authorization") == "Bearer k" and "alice", handler)
    assert (await route(Request(method="GET", path="/", headers={"authorization": "Bearer k"}))).status == 200
    with pytest.raises(HttpError) as refused:
        await route(Request(method="GET", path="/"))
    assert refused.value.status == 401 and seen == ["alice"]
    assert (await guarded(None, handler)(Request(method="GET", path="/"))).status == 200  # auth off


@pytest.mark.anyio
async def test_a_key_lock_serialises_one_key_and_forgets_it_when_free() -> None:
    locks = KeyLocks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    both_keys_held = anyio.Event()

    async def work(key: str) -> None:
        async with locks(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            if set(locks) == {"a", "b"}:
                both_keys_held.set()
            await anyio.sleep(0)
            inside[key] -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(work, "a")
            tg.start_soon(work, "b")
    assert most == {"a": 1, "b": 1} and both_keys_held.is_set()
    assert locks == {} and len(locks) == 0

    # A waiter cancelled while it waits leaves nothing behind either.
    async def wait_for(key: str) -> None:
        async with locks(key):
            pytest.fail("the key is held")

    async with locks("c"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for, "c")
            await anyio.wait_all_tasks_blocked()  # the waiter waits for the lock
            tg.cancel_scope.cancel()
        assert list(locks) == ["c"]
    assert locks == {}


@pytest.mark.anyio
async def test_follow_and_the_stream_handle_give_the_run_id_and_every_event() -> None:
    engine = demo_engine()
    async with engine:
        stream = await engine.execute("echo", "a b c", mode="stream")
        events = [event async for event in stream]
        assert {e.run_id for e in events} == {stream.run_id} and events[-1].terminal
        batches = [batch async for batch in engine.follow(stream.run_id, 2, idle=5.0)]
        assert [e.seq for batch in batches for e in batch] == [e.seq for e in events[2:]]
        assert [b async for b in engine.follow("no-such-run")] == []


@pytest.mark.anyio
async def test_each_event_leaves_out_deltas_of_discarded_messages_only_when_asked() -> None:
    def delta(seq: int, message_id: str) -> MessageDelta:
        return MessageDelta(run_id="r", seq=seq, message_id=message_id, content=f"{message_id}{seq} ")

    async def follow() -> AsyncGenerator[list[Event], None]:
        yield [delta(3, "a"), delta(4, "b")]
        yield []  # an idle tick
        yield [MessageDiscarded(run_id="r", seq=5, message_id="b", reason="restart"), delta(6, "b"), delta(7, "c")]

    async def seqs(**options: Any) -> list[int | None]:
        return [e.seq if e is not None else None async for e in each_event(follow(), **options)]

    assert await seqs() == [3, 4, None, 5, 6, 7]
    assert await seqs(discarded=["a"]) == [4, None, 5, 7]  # "a" known at the start, "b" once met
