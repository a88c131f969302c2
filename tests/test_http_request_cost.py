"""What one request costs the server beyond its run (issue 22): a sync run over real uvicorn makes
no disconnect-watcher task when it ends at once (a long one still gets one, so a disconnect still
cancels it), reads its body under asyncio's own timeout rather than an anyio cancel scope, names
its event loop for anyio once, and an ASCII body is not encoded again to look for lone surrogates."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from httpkit import demo_engine, serve, wait_status
from runengine.adapters import asgi as asgi_module
from runengine.adapters.asgi import ASGIApp
from runengine.adapters.profiles.native import NativeAPI
from runengine.http import core
from runengine.http.core import HttpError, Request, Response, json_response
from runengine.http.router import Router
from kit import PythonCalls, count_calls

pytestmark = [pytest.mark.server, pytest.mark.anyio]  # it serves over real sockets

ANYIO_BACKENDS = ("asyncio",)  # uvicorn


def tasks_made(loop: asyncio.AbstractEventLoop) -> tuple[list[str], Any]:
    """A task factory recording the name of every coroutine a task is made for (and the old factory)."""
    names: list[str] = []
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        names.append(getattr(coro, "__qualname__", repr(coro)))
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    return names, previous


@pytest.fixture
async def served() -> Any:
    engine = demo_engine()
    router = Router()
    NativeAPI(engine, router=router)
    async with engine, serve(ASGIApp(router)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
            yield http


async def test_a_sync_run_that_ends_at_once_makes_no_disconnect_watcher(served) -> None:
    client = served
    assert (await client.post("/runs", json={"agent": "echo", "input": "warm"})).status_code == 200
    loop = asyncio.get_running_loop()
    names, previous = tasks_made(loop)
    try:
        for i in range(5):
            response = await client.post("/runs", json={"agent": "echo", "input": f"hello {i}"})
            assert response.json()["status"] == "completed"
        quick = list(names)
        names.clear()
        # A run still going after WATCH_AFTER is watched: its client's disconnect is still noticed.
        response = await client.post("/runs", json={"agent": "sleeper", "input": asgi_module.WATCH_AFTER * 4})
        assert response.json()["status"] == "completed"
    finally:
        loop.set_task_factory(previous)
    assert "_cancel_on_disconnect" not in quick
    assert quick.count("RequestResponseCycle.run_asgi") == 5  # the requests were seen
    assert "_cancel_on_disconnect" in names


async def test_the_body_is_read_under_asyncio_own_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    body_timeout = 12.5  # told apart from the client's own deadlines
    scopes: list[float | None] = []
    real = anyio.fail_after

    def recorded(delay: float | None, *args: Any, **kwargs: Any) -> Any:
        scopes.append(delay)
        return real(delay, *args, **kwargs)

    engine = demo_engine()
    router = Router()
    NativeAPI(engine, router=router)
    async with engine, serve(ASGIApp(router, body_timeout=body_timeout)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            monkeypatch.setattr(anyio, "fail_after", recorded)
            response = await client.post("/runs", json={"agent": "echo", "input": "hello"})
    assert response.json()["status"] == "completed"
    assert body_timeout not in scopes


async def test_a_body_that_does_not_come_in_time_is_still_a_408() -> None:
    async def never(request: Request) -> Response:  # pragma: no cover - the body never arrives
        return json_response({})

    app = ASGIApp(never, body_timeout=0.2)
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"10")], "client": ("127.0.0.1", 1)}

    async def receive() -> dict[str, Any]:
        await anyio.sleep(30)
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with anyio.fail_after(10):
        await app(scope, receive, send)
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_timeout"


async def test_a_request_names_its_event_loop_for_anyio_once() -> None:
    seen: list[str | None] = []

    async def handler(request: Request) -> Response:
        import sniffio

        seen.append(sniffio.current_async_library_cvar.get())
        return json_response({"ok": True})

    import sniffio

    # As under `runengine serve` (uvicorn's asyncio.run): nobody has named the loop in the
    # context the server's tasks start from (anyio's test runner has, in this test's own).
    sniffio.current_async_library_cvar.set(None)
    async with serve(ASGIApp(handler), lifespan="off") as url:
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.post("/", json={})).json() == {"ok": True}
    assert seen == ["asyncio"]


@pytest.fixture
def dumps_counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every json.dumps the HTTP core makes (its module's `json`, counted)."""
    calls: list[Any] = []

    class CountingJson:
        loads = staticmethod(json.loads)

        @staticmethod
        def dumps(value: Any, **kwargs: Any) -> str:
            calls.append(value)
            return json.dumps(value, **kwargs)

    monkeypatch.setattr(core, "json", CountingJson)
    yield calls


def test_an_ascii_body_is_not_encoded_again(dumps_counted: list[Any]) -> None:
    assert Request(method="POST", path="/", body=b'{"agent": "echo", "input": "hello"}').json_object() == {
        "agent": "echo",
        "input": "hello",
    }
    assert dumps_counted == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": "\\ud800"}',  # an escape
        '{"input": "\ud800"}'.encode("utf-8", "surrogatepass"),  # the bytes themselves
        '{"input": "\\ud800"}'.encode("utf-16-le"),  # an escape in UTF-16
        '{"input": "\ud800"}'.encode("utf-16-le", "surrogatepass"),
    ],
)
def test_a_lone_surrogate_is_still_refused(body: bytes, dumps_counted: list[Any]) -> None:
    with pytest.raises(HttpError) as raised:
        Request(method="POST", path="/", body=body).json()
    assert raised.value.status == 400 and "lone surrogate" in raised.value.message


def test_control_characters_are_found_by_one_search() -> None:
    """Ids and short texts (a run id, an agent name: every request checks some) are searched for
    control characters in C, not character by character in Python; the same characters as
    declared (C0, DEL, C1), every code point checked."""
    import sys

    from runengine.validation import has_control_characters

    calls = PythonCalls("call", "c_call")

    sys.setprofile(calls)
    try:
        found = has_control_characters("r" * 200)
    finally:
        sys.setprofile(None)
    assert found is False
    assert calls.count < 10  # not one per character
    control = {cp for cp in range(0x110000) if has_control_characters(chr(cp))}
    assert control == set(range(0x20)) | set(range(0x7F, 0xA0))
    assert has_control_characters("ok\x85") and not has_control_characters("\ud800é")


def test_json_is_written_without_making_an_encoder_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """wire.dumps (every stored event, every answer) reuses one encoder: json.dumps with options
    makes a JSONEncoder per call. Still strict and compact."""
    from datetime import datetime, timezone

    from runengine.wire import dumps

    made = count_calls(monkeypatch, json.JSONEncoder, "__init__")
    value = {"a": [1, 2.5, "é", None], "at": datetime(2030, 1, 1, tzinfo=timezone.utc)}
    assert [dumps(value) for _ in range(10)] == ['{"a":[1,2.5,"é",null],"at":"2030-01-01T00:00:00.000000Z"}'] * 10
    assert made.count == 0
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            dumps({"x": bad})


async def test_a_whole_response_says_its_length_and_is_not_chunked(served) -> None:
    """A JSON answer goes with its Content-Length, so the server writes its body in one piece with
    no closing chunk (a chunked answer cost a send and a wake-up of the client more); a 204 has none."""
    client = served
    response = await client.post("/runs", json={"agent": "echo", "input": "hello"})
    assert response.status_code == 200 and response.json()["status"] == "completed"
    assert response.headers.get("transfer-encoding") is None
    assert response.headers["content-length"] == str(len(response.content))
    missing = await client.get("/runs/nope")  # an error is a whole response too
    assert missing.status_code == 404 and missing.headers["content-length"] == str(len(missing.content))
    deleted = await client.delete(f"/runs/{response.json()['run_id']}")
    assert deleted.status_code == 204 and "content-length" not in deleted.headers and deleted.content == b""


@pytest.mark.parametrize(("level", "access_lines"), [("info", True), ("debug", True), ("warning", False), ("error", False)])
def test_access_lines_are_built_only_at_levels_that_show_them(level: str, access_lines: bool) -> None:
    """uvicorn builds an access line for every response (the client's address, the path)
    whenever its access logger has a handler (`hasHandlers`), even when the level then drops
    it: at --log-level warning or error, where none is shown, it has none."""
    import logging

    import structlog

    from runengine.adapters.logs import configure_logging

    root, access = logging.getLogger(), logging.getLogger("uvicorn.access")
    saved = (root.handlers[:], root.level, access.handlers[:], access.propagate, structlog.get_config())
    try:
        configure_logging(level)
        assert access.hasHandlers() is access_lines
    finally:  # the process's logging as it was, for the tests after this one
        root.handlers[:], access.handlers[:] = saved[0], saved[2]
        root.setLevel(saved[1])
        access.propagate = saved[3]
        structlog.configure(**saved[4])



def test_requests_in_progress_share_one_timer() -> None:
    """The requests in progress share one timer that starts the watchers of those still running
    at its second sweep (WATCH_AFTER to 2 x WATCH_AFTER after they began): a quick request arms
    no timer of its own (a heap push and a cancel on the loop each), and a long one is watched."""

    class Loop:  # records what is armed and made, runs nothing
        def __init__(self) -> None:
            self.armed: list[Any] = []
            self.tasks: list[Any] = []

        def call_later(self, delay: float, callback: Any) -> Any:
            assert delay == asgi_module.WATCH_AFTER
            self.armed.append(callback)
            return callback

        def create_task(self, coro: Any) -> Any:
            coro.close()
            self.tasks.append(coro)
            return self

        def cancel(self) -> None:
            pass

    loop = Loop()
    watches = asgi_module._Watches()
    for _ in range(50):  # quick requests, all within one WATCH_AFTER
        watch = asgi_module._Watch(loop, None, None)  # type: ignore[arg-type]
        watches.add(loop, watch)  # type: ignore[arg-type]
        watches.discard(watch)
    assert len(loop.armed) == 1 and loop.tasks == []
    loop.armed.pop()()  # the sweep finds nothing in progress: no timer after it
    assert loop.armed == []
    long = asgi_module._Watch(loop, None, None)  # type: ignore[arg-type]
    watches.add(loop, long)  # type: ignore[arg-type]
    loop.armed.pop()()  # its first sweep: it began since the last one, not watched yet
    assert loop.tasks == [] and len(loop.armed) == 1
    loop.armed.pop()()  # the second: in progress for WATCH_AFTER at least, watched
    assert len(loop.tasks) == 1
    assert loop.armed == []  # nothing else in progress unwatched: the timer stops
    watches.discard(long)


# -- the protocol `runengine serve` gives uvicorn (adapters/uvicorn_http.py) ---------------------


@pytest.fixture
def server_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write the served connections (LimitedH11Protocol's) make to their sockets' transports."""
    from asyncio import selector_events

    from runengine.adapters.uvicorn_http import LimitedH11Protocol

    writes: list[bytes] = []
    real = selector_events._SelectorSocketTransport.write

    def write(self: Any, data: Any) -> None:
        if isinstance(self.get_protocol(), LimitedH11Protocol) and data:
            writes.append(bytes(data))
        real(self, data)

    monkeypatch.setattr(selector_events._SelectorSocketTransport, "write", write)
    return writes


@pytest.fixture
async def served_limited() -> Any:
    """The native API under uvicorn with the protocol `runengine serve` gives it."""
    from runengine.adapters.uvicorn_http import limited_protocol
    from runengine.limits import MAX_HEADER_BYTES

    engine = demo_engine()
    router = Router()
    NativeAPI(engine, router=router)
    app = ASGIApp(router)
    async with engine, serve(app, http=limited_protocol(), access_log=False, h11_max_incomplete_event_size=MAX_HEADER_BYTES) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
            yield http


async def test_a_whole_response_is_one_write_and_a_stream_head_is_not_held(served_limited, server_writes) -> None:
    """A response with a Content-Length goes to the socket in one write, head and body (uvicorn
    wrote them apart: two sends and two wake-ups of the client). A stream's head is written at
    once, before any event: a follower of a run that has nothing new still gets its 200."""
    client = served_limited
    assert (await client.post("/runs", json={"agent": "echo", "input": "warm"})).status_code == 200
    for i in range(3):
        server_writes.clear()
        answer = await client.post("/runs", json={"agent": "echo", "input": f"hello {i}", "mode": "sync"})
        assert answer.status_code == 200 and answer.json()["output"] == f"hello {i}"
        assert len(server_writes) == 1, server_writes
        head, _, body = server_writes[0].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body) == answer.json()

    # An error is a whole response too.
    server_writes.clear()
    missing = await client.get("/runs/no-such-run")
    assert missing.status_code == 404 and missing.json()["error"]["code"]
    assert len(server_writes) == 1, server_writes

    run = (await client.post("/runs", json={"agent": "listener", "input": "msg", "mode": "async"})).json()
    state = await wait_status(client, run["run_id"], "running")
    while (later := (await client.get(f"/runs/{run['run_id']}")).json())["last_seq"] != state["last_seq"]:
        state = later  # until its events so far (it waits for a signal that never comes) are all in
        await anyio.sleep(0.1)
    server_writes.clear()
    with anyio.fail_after(5):  # the head comes though no event does
        async with client.stream(
            "GET", f"/runs/{run['run_id']}/events", params={"after_seq": state["last_seq"]},
            headers={"accept": "text/event-stream"},
        ) as stream:
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    assert server_writes and server_writes[0].startswith(b"HTTP/1.1 200")


def test_a_body_is_read_with_one_strict_decoder_made_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`json.loads` with hooks makes a JSONDecoder (and its scanner) per call: the strict decoder
    is made once, and reads what `json.loads` read, the same way (its errors included)."""
    def loads(body: Any) -> Any:
        return json.loads(body, parse_constant=core._reject_constant, parse_float=core._finite_float)

    bodies: list[bytes | str] = [
        b'{"agent": "echo", "input": "hi"}', '{"a": 1.5}', b'\xef\xbb\xbf{"a": 1}', '\ufeff{"a": 1}',
        '{"a": NaN}', "1e400", b"[1, 2", '"\\ud800"', '{"a": 1}'.encode("utf-16"), '{"a": 1}'.encode("utf-32-le"),
        b'{"a": "\xc3\xa9"}', b"", b"  ", '{"a": 1} x', b'{"a": "\xff"}',
    ]

    def outcome(read: Any, body: bytes | str) -> tuple[str, Any]:
        try:
            return ("value", read(body))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return (type(exc).__name__, str(exc))

    expected = [outcome(loads, body) for body in bodies]
    core.parse_json(b"{}")
    made = count_calls(monkeypatch, json.JSONDecoder, "__init__")
    assert [outcome(core.parse_json, body) for body in bodies] == expected
    assert made.count == 0, made.count


def test_a_body_spec_checks_its_fields_names_without_rebuilding_them() -> None:
    """The native `POST /runs` body is checked against its fields' names made once with the spec
    (a tuple of 12 built, and two sets, per request before); an unknown field is still a 400."""
    from runengine.adapters.profiles.native import RUN_BODY

    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    body = {"agent": "echo", "input": "hello", "mode": "sync"}
    RUN_BODY.parse(body, now=now)
    calls = PythonCalls()
    sys.setprofile(calls)
    try:
        RUN_BODY.parse(body, now=now)
    finally:
        sys.setprofile(None)
    # The parse, its dict comprehension and each field's parse (and the helper of some): 24; 40 before.
    assert calls.count <= 2 * len(RUN_BODY.fields) + 4, calls.count
    with pytest.raises(HttpError) as refused:
        RUN_BODY.parse({**body, "colour": "red"}, now=now)
    assert refused.value.status == 400 and refused.value.details["unknown"] == ["colour"]
    assert refused.value.details["allowed"] == sorted(RUN_BODY.names)
