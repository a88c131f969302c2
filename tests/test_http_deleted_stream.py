"""Issue 20 item 13, over real HTTP: a run deleted while a client streams it ends the stream with a
last frame that says so (the one error format: code `not_found`, details {"run_id", "deleted":
true}), on every stream surface, instead of closing it silently as if the log had ended.

The client reads the first frame of a large run's stream and stops reading: the server stalls
writing the first pages of the log (500 events each, more than the socket buffers hold). The run
is deleted, and the client reads on: what the server had read before, then the last frame."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from httpkit import demo_engine, serve
from runengine import RunEngine, Status
from runengine.adapters.asgi import engine_asgi_app

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

ANYIO_BACKENDS = ("asyncio",)  # uvicorn
#: Over three pages of 500 events, each large: a server writes a page and reads the next before
#: it waits for the client (uvicorn), so the deletion must come two pages before the log's end.
DELTAS, SIZE = 1600, 16 * 1024
SSE = {"accept": "text/event-stream"}
#: The test client's receive buffer, fixed (no autotuning): with the server's send buffer it
#: holds far less than a page, so a client that stops reading stalls the server's stream.
RECEIVE_BUFFER = 256 * 1024


@pytest.fixture
async def served() -> AsyncIterator[tuple[RunEngine, httpx.AsyncClient]]:
    engine = demo_engine()

    @engine.agent("big", description="a long log of large messages")
    async def big(ctx: Any) -> None:
        size = ctx.input if isinstance(ctx.input, int) else SIZE
        for i in range(DELTAS):  # a message each (one message's whole text is one event)
            await ctx.say(f"#{i:04d}#" + "x" * size)

    small_buffer = httpx.AsyncHTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)])
    async with serve(engine_asgi_app(engine)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60.0, transport=small_buffer) as http:
            yield engine, http


async def frames(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str | None, str]]:
    """(event name, data) of each SSE frame; comments and ids left out."""
    event: str | None = None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


async def stalled_then_deleted(
    engine: RunEngine, http: httpx.AsyncClient, method: str, url: str, run_id_of: Any, **request: Any
) -> list[tuple[str | None, str]]:
    """Open the stream, read one frame, let the run end and delete it, then read the rest."""
    async with http.stream(method, url, headers=SSE, **request) as response:
        assert response.status_code == 200, await response.aread()
        stream = frames(response.aiter_lines())
        first = await stream.__anext__()
        run_id = run_id_of(response, first)
        with anyio.fail_after(30):
            while not (await engine.status(run_id)).status.terminal:
                await anyio.sleep(0.05)
        deleted = await http.delete(f"/runs/{run_id}")
        assert deleted.status_code == 204, deleted.text
        rest = [frame async for frame in stream]
    assert len(rest) > 10  # the stream went on after the deletion: what was read before it
    assert all(f"#{DELTAS - 1:04d}#" not in data for _, data in rest)  # the log's end never came
    return rest


def says_deleted(error: dict[str, Any], run_id: str | None = None) -> None:
    assert error["code"] == "not_found" and "deleted" in error["message"], error
    details = error.get("details", error.get("data"))
    if details is not None:
        assert details["deleted"] is True and (run_id is None or details["run_id"] == run_id), error


async def a_big_run(engine: RunEngine, size: int = SIZE) -> str:
    """An ended run whose log's first page is `size` x 500 bytes and more."""
    return (await engine.execute("big", size)).run_id


@pytest.mark.anyio
async def test_native_stream_ends_with_a_run_deleted_frame(served) -> None:
    engine, http = served
    run_id = await a_big_run(engine)
    rest = await stalled_then_deleted(engine, http, "GET", f"/runs/{run_id}/events", lambda r, f: run_id)
    event, data = rest[-1]
    assert event == "run.deleted"
    says_deleted(json.loads(data)["error"], run_id)
    assert (await http.get(f"/runs/{run_id}")).status_code == 404


@pytest.mark.anyio
async def test_v1_stream_ends_with_a_run_deleted_frame(served) -> None:
    engine, http = served
    run_id = await a_big_run(engine)
    rest = await stalled_then_deleted(engine, http, "GET", f"/v1/runs/{run_id}/events", lambda r, f: run_id)
    event, data = rest[-1]
    assert event == "run.deleted"
    says_deleted(json.loads(data)["error"], run_id)


@pytest.mark.anyio
async def test_acp_stream_ends_with_an_error_event(served) -> None:
    engine, http = served
    run_id = await a_big_run(engine)
    rest = await stalled_then_deleted(engine, http, "GET", f"/acp/runs/{run_id}/events", lambda r, f: run_id)
    last = json.loads(rest[-1][1])
    assert last["type"] == "error"
    says_deleted(last["error"], run_id)


@pytest.mark.anyio
async def test_platform_stream_ends_with_an_error_event(served) -> None:
    engine, http = served
    rest = await stalled_then_deleted(
        engine, http, "POST", "/platform/apps/big/execute/stream", lambda r, f: r.headers["x-trace-id"], json={"message": "go"}
    )
    event, data = rest[-1]
    assert event == "error"
    says_deleted(json.loads(data)["error"])


@pytest.mark.anyio
async def test_kore_stream_ends_with_a_last_event_saying_so(served) -> None:
    engine, http = served
    body = {
        "sessionIdentity": [{"type": "userReference", "value": "u1"}],
        "input": [{"type": "text", "content": "go"}],
        "invoke": {"tasks": [{"type": "agent", "name": "big"}]},
        "stream": {"enable": True, "streamMode": "tokens"},
    }
    rest = await stalled_then_deleted(
        engine, http, "POST", "/kore/apps/big/environments/dev/runs/execute",
        lambda r, f: json.loads(f[1])["sessionInfo"]["runId"], json=body,
    )
    last = json.loads(rest[-1][1])
    assert last["isLastEvent"] is True
    says_deleted(last["error"])
    assert (await engine.list_runs(status=Status.COMPLETED)).runs == ()


@pytest.mark.anyio
async def test_runengine_tail_says_the_run_was_deleted(served) -> None:
    """The CLI's `tail` (a client of the native stream) stops with the reason instead of
    reconnecting to a run that is gone. It is paused (SIGSTOP) as soon as it prints the first
    event, to stall its stream."""
    import os
    import signal

    from test_cli import COMMAND

    engine, http = served
    run_id = await a_big_run(engine, size=32 * 1024)
    process = await anyio.open_process([*COMMAND, "tail", run_id, "--json", "--url", str(http.base_url).rstrip("/")])
    async with process:
        assert process.stdout is not None and process.stderr is not None
        first = await process.stdout.receive()
        assert b'"run.created"' in first
        os.kill(process.pid, signal.SIGSTOP)
        try:
            with anyio.fail_after(30):
                while not (await engine.status(run_id)).status.terminal:
                    await anyio.sleep(0.05)
            assert (await http.delete(f"/runs/{run_id}")).status_code == 204
        finally:
            os.kill(process.pid, signal.SIGCONT)
        with anyio.fail_after(60):
            async for _ in process.stdout:  # what it read before the deletion
                pass
            await process.wait()
        stderr = b"".join([chunk async for chunk in process.stderr]).decode()
    assert process.returncode == 1, stderr
    assert "was deleted" in stderr
