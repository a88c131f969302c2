"""A third party's store, written against the narrow port alone (tests/thirdparty/keyvalue_store.py),
passes the run-log conformance suite, found by URL through its `runengine.stores` entry point
(declared by the test distribution tests/thirdparty/keyvalue_store-0.1.dist-info) as any
installed store is, and an engine runs agents on it."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runengine.engine import RunEngine
from runengine.errors import InvalidRequest
from runengine.idempotency import IdempotencyStore
from runengine.ports import EventStore, SessionStore
from runengine.retention import EndedRuns
from runengine.stores import open_store, store_schemes
from runengine.testing.conformance import LogConformance, StoreFactory
from runengine.options import Retention

THIRD_PARTY = Path(__file__).parent / "thirdparty"


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test distribution on sys.path: its module and its entry point become visible."""
    monkeypatch.syspath_prepend(str(THIRD_PARTY))
    yield


@pytest.mark.usefixtures("installed")
class TestKeyValueStoreInMemory(LogConformance):
    max_examples = 20

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        @contextlib.asynccontextmanager
        async def factory() -> AsyncIterator[EventStore]:
            store = open_store("kv://")
            await store.open()
            try:
                yield store
            finally:
                await store.close()

        return factory


@pytest.mark.usefixtures("installed")
class TestKeyValueStoreOnDbm(LogConformance):
    max_examples = 10

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        numbers = itertools.count()

        @contextlib.asynccontextmanager
        async def factory() -> AsyncIterator[EventStore]:
            store = open_store(f"kv://{tmp_path}/runs{next(numbers)}.dbm")
            await store.open()
            try:
                yield store
            finally:
                await store.close()

        return factory


def test_found_by_its_entry_point_and_declares_the_log_port_only(installed: None) -> None:
    assert "kv" in store_schemes()
    store = open_store("kv://")
    assert type(store).__module__ == "keyvalue_store"
    assert isinstance(store, EventStore)
    for port in (SessionStore, IdempotencyStore, EndedRuns):
        assert not isinstance(store, port)


def test_unknown_without_its_distribution() -> None:
    with pytest.raises(InvalidRequest):
        open_store("kv://")


@pytest.mark.anyio
async def test_an_engine_runs_on_it_and_refuses_what_it_does_not_keep(installed: None, tmp_path: Path) -> None:
    url = f"kv://{tmp_path}/engine.dbm"
    engine = RunEngine(url)

    @engine.agent("echo")
    async def echo(ctx):  # type: ignore[no-untyped-def]
        await ctx.say(f"you said {ctx.input}")
        return ctx.input

    async with engine:
        state = await engine.execute("echo", "hi")
        assert state.status.value == "completed" and state.output == "hi"
        with pytest.raises(InvalidRequest, match="keeps no sessions"):
            await engine.execute("echo", "hi", session_id="s1")
        with pytest.raises(InvalidRequest, match="keeps no idempotency records"):
            await engine.execute("echo", "hi", idempotency_key="k")
    with pytest.raises(InvalidRequest, match="ended runs"):
        RunEngine(url, retention=Retention(runs=60))
    async with RunEngine(url) as again:  # the dbm file kept the run
        assert (await again.status(state.run_id)).output == "hi"
