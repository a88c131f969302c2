"""A Durable Stream read on one `runengine serve` process and written on another (one store): a
long-poll and an SSE reader on B get what is appended, and the close, on A (PostgreSQL: the
append's NOTIFY wakes B's readers; SQLite: B's readers look again every second)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faultkit import ServeProcess

pytestmark = pytest.mark.server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    if request.param == "sqlite":
        store = f"sqlite:///{tmp_path / 'streams.db'}"
    else:
        store = str(request.getfixturevalue("pg_schema_url"))
    # Long-polls far longer than the test waits: an answer with data is a wake-up, not a timeout.
    args = ["--store", store, "--durable-streams-long-poll", "60", "--log-level", "warning"]
    one = ServeProcess(args, tmp_path / "one.log")
    one.start()
    two = ServeProcess(args, tmp_path / "two.log")
    try:
        two.start()
        yield one, two
    finally:
        two.kill(signal.SIGTERM)
        one.kill(signal.SIGTERM)


def test_a_reader_on_one_process_gets_what_another_appends(two_servers: tuple[ServeProcess, ServeProcess]) -> None:
    writer, reader = two_servers
    url = "/ds/v1/stream/shared"
    with httpx.Client(base_url=writer.base, timeout=30) as a, httpx.Client(base_url=reader.base, timeout=30) as b:
        made = a.put(url, content=b"first ", headers={"content-type": "text/plain"})
        assert made.status_code == 201
        tail = made.headers["stream-next-offset"]
        assert b.get(url).text == "first "  # the other process sees the stream at once
        answers: dict[str, httpx.Response | str] = {}
        listening = threading.Event()

        def long_poll() -> None:
            listening.set()
            answers["long-poll"] = b.get(url, params={"offset": tail, "live": "long-poll"})

        def sse() -> None:
            with b.stream("GET", url, params={"offset": tail, "live": "sse"}) as response:
                answers["sse"] = "".join(response.iter_text())  # until the close ends it

        threads = [threading.Thread(target=long_poll), threading.Thread(target=sse)]
        for thread in threads:
            thread.start()
        listening.wait(5)
        time.sleep(0.5)  # most likely waiting by now (were they not, they would read it as catch-up: no harm)
        assert a.post(url, content=b"second", headers={"content-type": "text/plain"}).status_code == 204
        threads[0].join(30)
        polled = answers["long-poll"]
        assert isinstance(polled, httpx.Response) and polled.status_code == 200 and polled.text == "second"
        assert a.post(url, headers={"stream-closed": "true"}).status_code == 204
        threads[1].join(30)
        assert not threads[1].is_alive()
        events = str(answers["sse"])
        assert "data:second" in events and '"streamClosed":true' in events
