"""Runs as Durable Streams (/ds/v1/stream/runs/{run_id}) and the streams' ownership, over real HTTP:
the protocol's Python client (`durable-streams` on PyPI) reads a live run through a dropped
connection with no gap and no duplicate; a run's stream refuses writes as the protocol says; with
auth on, another principal can neither read a run's stream nor see a stream someone else made."""

from __future__ import annotations

from typing import Any

import anyio
import attrs
import httpx
import pytest
from durable_streams import astream

from httpkit import TcpProxy, alice_and_bob, demo_engine, serve, wait_status
from runengine.adapters.asgi import engine_asgi_app

pytestmark = [pytest.mark.anyio, pytest.mark.server]
ANYIO_BACKENDS = ("asyncio",)  # uvicorn
TERMINAL = {"run.completed", "run.failed", "run.cancelled"}
ZERO = "0000000000000000_0000000000000000"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@attrs.define
class Reader:
    """What a client has read of a run's stream: the events, and the offset to resume from."""

    url: str
    offset: str = "-1"
    events: list[dict[str, Any]] = attrs.field(factory=list)

    def done(self) -> bool:
        return bool(self.events) and self.events[-1]["type"] in TERMINAL

    async def read(self) -> None:
        """The run's events from `offset` on (long-poll: the client's own loop) up to a terminal one."""
        async with astream(self.url, offset=self.offset, live="long-poll") as response:
            async for batch in response.iter_events(mode="json"):
                self.events.extend(batch.data)
                self.offset = batch.next_offset  # with the events it follows: a cut loses neither
                if self.done():
                    return


async def test_the_python_client_reads_a_live_run_through_a_disconnect_without_gap_or_duplicate(tmp_path: Any) -> None:
    engine = demo_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    async with serve(engine_asgi_app(engine)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        async with TcpProxy(int(url.rsplit(":", 1)[1])) as proxy:
            run = (await client.post("/runs", json={"agent": "ticker", "input": {"n": 80, "every": 0.01}, "mode": "async"})).json()
            reader = Reader(f"http://127.0.0.1:{proxy.port}/ds/v1/stream/runs/{run['run_id']}")
            cuts = attempts = 0
            while not reader.done():
                attempts += 1
                assert attempts < 50
                try:
                    with anyio.fail_after(30):
                        async with anyio.create_task_group() as tg:

                            async def cut() -> None:  # the connection drops while the client reads
                                await anyio.sleep(0.15)
                                proxy.drop()

                            if cuts < 3:
                                cuts += 1
                                tg.start_soon(cut)
                            await reader.read()
                            tg.cancel_scope.cancel()
                except (httpx.HTTPError, OSError, ExceptionGroup):
                    pass  # dropped: resume from the last offset the client was given
            await wait_status(client, run["run_id"], "completed")
            logged = [e.seq async for e in engine.events(run["run_id"], follow=False)]
    seqs = [event["seq"] for event in reader.events]
    assert attempts > 1  # it was cut and resumed
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
    assert seqs == logged
    assert reader.offset == f"0000000000000000_{len(seqs):016d}"  # offsets sort like the seq


async def test_a_runs_stream_refuses_writes_and_reads_to_its_end() -> None:
    engine = demo_engine()
    async with serve(engine_asgi_app(engine)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        run = (await client.post("/runs", json={"agent": "echo", "input": "one two"})).json()
        await wait_status(client, run["run_id"], "completed")
        path = f"/ds/v1/stream/runs/{run['run_id']}"
        for method in ("PUT", "POST", "DELETE"):
            refused = await client.request(method, path, content=b"[1]", headers={"content-type": "application/json"})
            assert refused.status_code == 405, refused.text
            assert refused.headers["allow"] == "GET, HEAD"
            assert refused.json()["error"]["code"] == "method_not_allowed"
        whole = await client.get(path)
        assert whole.status_code == 200
        assert [e["seq"] for e in whole.json()] == list(range(1, len(whole.json()) + 1))
        assert whole.json()[-1]["type"] == "run.completed"
        assert whole.headers["stream-closed"] == "true"  # closed when the run ended
        tail = whole.headers["stream-next-offset"]
        head = await client.head(path)
        assert head.headers["stream-next-offset"] == tail and head.headers["stream-closed"] == "true"
        at_end = await client.get(path, params={"offset": tail, "live": "long-poll"})
        assert at_end.status_code == 204 and at_end.headers["stream-closed"] == "true"  # EOF, no wait
        sse = await client.get(path, params={"offset": "-1", "live": "sse"})
        assert sse.text.count("event: data") == sse.text.count("event: control") - 0
        assert '"streamClosed":true' in sse.text


async def test_another_principal_can_read_neither_a_runs_stream_nor_a_stream_it_did_not_make() -> None:
    engine = demo_engine()
    async with alice_and_bob(engine, {"a-token": "alice", "b-token": "bob"}) as (alice, bob):
        run = (await alice.post("/runs", json={"agent": "echo", "input": "secret"})).json()
        await wait_status(alice, run["run_id"], "completed")
        path = f"/ds/v1/stream/runs/{run['run_id']}"
        assert (await alice.get(path)).status_code == 200
        for method in ("GET", "HEAD"):
            assert (await bob.request(method, path)).status_code == 404
        assert (await bob.get(path, params={"offset": ZERO, "live": "sse"})).status_code == 404
        # Streams people make: one namespace per principal, like sessions.
        made = await alice.put("/ds/v1/stream/notes", content=b"alice's", headers={"content-type": "text/plain"})
        assert made.status_code == 201
        assert (await bob.get("/ds/v1/stream/notes")).status_code == 404
        assert (await bob.post("/ds/v1/stream/notes", content=b"x", headers={"content-type": "text/plain"})).status_code == 404
        assert (await bob.delete("/ds/v1/stream/notes")).status_code == 404
        fork = await bob.put("/ds/v1/stream/mine", headers={"stream-forked-from": "/v1/stream/notes"})
        assert fork.status_code == 404  # nor fork it
        assert (await bob.put("/ds/v1/stream/notes", headers={"content-type": "application/json"})).status_code == 201
        assert (await alice.get("/ds/v1/stream/notes")).text == "alice's"
        anonymous = await alice.get("/ds/v1/stream/notes", headers={"authorization": ""})
        assert anonymous.status_code == 401
