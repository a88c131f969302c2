"""Data lifecycle: deleting ended runs (engine, HTTP), retention swept in the background, a run's
log exported as JSON lines and imported again, `runengine prune` on a SQLite file, and a version 2
SQLite file migrated when opened."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import httpx
import pytest
from click.testing import CliRunner

from httpkit import demo_engine, serve
from runengine import InvalidRequest, InvalidRunState, RunEngine, RunNotFound, Status
from runengine.adapters.asgi import engine_asgi_app
from runengine.adapters.cli import main
from runengine.adapters.sqlite import SCHEMA_VERSION, SQLiteStore
from runengine.demo import register_demo_agents
from runengine.events import RunCompleted, RunCreated, RunStarted
from runengine.adapters.profiles.native import NativeAPI
from runengine.adapters.profiles.platform_webhook_store import WebhookRegistration
from runengine.ports import SessionRecord
from runengine.logfile import dump_log, export_run, import_run, parse_log
from runengine.http.core import Request
from runengine.limits import MAX_INPUT_BYTES
from runengine.stores import open_store
from runengine.testing.conformance import read_all
from runengine.testing.logs import load_log, save_log
from runengine.options import Retention

BIN = Path(sys.executable).parent / "runengine"
COMMAND = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "runengine.adapters.cli"]
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


class Clock:
    """The engine's injected clock, moved by the test."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def running_log(run_id: str, at: datetime) -> list[RunCreated | RunStarted]:
    return [RunCreated(run_id=run_id, seq=1, at=at, agent="echo"), RunStarted(run_id=run_id, seq=2, at=at)]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


# -- engine.delete_run ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_engine_deletes_an_ended_run_and_only_for_its_owner() -> None:
    engine = demo_engine()
    async with engine:
        done = await engine.execute("echo", "hello world", owner="alice", idempotency_key="k")
        waiting = await engine.execute("approval", None, owner="alice")
        assert waiting.status is Status.WAITING_FOR_INPUT

        with pytest.raises(RunNotFound):  # another principal's run is answered as a missing one
            await engine.delete_run(done.run_id, owner="bob")
        with pytest.raises(InvalidRunState) as active:
            await engine.delete_run(waiting.run_id, owner="alice")
        assert active.value.code == "conflict" and active.value.status == "waiting_for_input"
        with pytest.raises(RunNotFound):
            await engine.delete_run("no-such-run")
        assert (await engine.status(done.run_id)).status is Status.COMPLETED  # refusals changed nothing

        await engine.delete_run(done.run_id, owner="alice")
        with pytest.raises(RunNotFound):
            await engine.status(done.run_id)
        assert [e async for e in engine.events(waiting.run_id, follow=False)]  # the other run is intact
        with pytest.raises(RunNotFound):
            await engine.delete_run(done.run_id, owner="alice")
        assert [r.run_id for r in (await engine.list_runs()).runs] == [waiting.run_id]
        # its idempotency record went with it: the same key starts a new run
        again = await engine.execute("echo", "hello world", owner="alice", idempotency_key="k")
        assert again.run_id != done.run_id and again.status is Status.COMPLETED

        await engine.resume(waiting.run_id, "yes")
        ended = await engine.wait(waiting.run_id)
        await engine.delete_run(ended.run_id)  # no owner given: no ownership check


# -- retention: the background sweep ------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("store", "anyio_backend"), [("memory", "asyncio"), ("memory", "trio"), ("sqlite", "asyncio")])
async def test_retention_sweep_deletes_expired_ended_runs_in_the_background(
    tmp_path: Path, store: str, anyio_backend: str
) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'r.db'}"
    clock = Clock()
    engine = register_demo_agents(
        RunEngine(url, clock=clock, retention=Retention(runs=timedelta(hours=1), sweep_interval=0.02)),
        delay=0,
    )
    async with engine:
        old = await engine.execute("echo", "old")
        waiting = await engine.execute("approval", None)  # active: never swept, however old
        clock.now = T0 + timedelta(minutes=30)
        recent = await engine.execute("echo", "recent")
        clock.now = T0 + timedelta(hours=1, minutes=10)  # `old` ended 70 min ago, `recent` 40
        with anyio.fail_after(20):
            while await engine.store.get_run(old.run_id) is not None:
                await anyio.sleep(0.01)
        assert (await engine.status(recent.run_id)).status is Status.COMPLETED
        assert (await engine.status(waiting.run_id)).status is Status.WAITING_FOR_INPUT
        clock.now = T0 + timedelta(days=30)
        with anyio.fail_after(20):
            while await engine.store.get_run(recent.run_id) is not None:
                await anyio.sleep(0.01)
        assert (await engine.status(waiting.run_id)).status is Status.WAITING_FOR_INPUT
        assert engine.sweeper is not None
    # the sweep task stopped with the engine (the engine's task group would not exit otherwise)


def test_retention_arguments_are_checked() -> None:
    assert RunEngine(retention=Retention(runs=timedelta(days=2))).retention.runs == 2 * 86400
    assert RunEngine(retention=Retention(runs=90)).retention.runs == 90.0
    assert RunEngine().retention.runs is None
    for bad in (0, -1, float("nan"), float("inf"), "30d", True, timedelta(0)):
        with pytest.raises(InvalidRequest):
            RunEngine(retention=Retention(runs=bad))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        RunEngine(retention=Retention(runs=60, sweep_interval=0))


# -- HTTP: DELETE /runs/{run_id} ------------------------------------------------------------------

TOKENS = {"t-alice": "alice", "t-bob": "bob"}


def auth_hook(headers):
    return TOKENS.get(headers.get("authorization", "").removeprefix("Bearer "))


def as_user(url: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30.0)


@pytest.mark.server
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_http_delete_is_for_the_owner_and_ended_runs_only(anyio_backend: str) -> None:
    async with serve(engine_asgi_app(demo_engine(), auth=auth_hook)) as url:
        async with as_user(url, "t-alice") as alice, as_user(url, "t-bob") as bob:
            done = (await alice.post("/runs", json={"agent": "echo", "input": "mine"})).json()
            waiting = (await alice.post("/runs", json={"agent": "approval"})).json()
            for run_id in (done["run_id"], waiting["run_id"], "no-such-run"):
                response = await bob.delete(f"/runs/{run_id}")
                assert response.status_code == 404
                assert response.json()["error"]["code"] == "not_found"
            response = await alice.delete(f"/runs/{waiting['run_id']}")
            assert response.status_code == 409
            error = response.json()["error"]
            assert error["code"] == "conflict" and error["details"]["status"] == "waiting_for_input"
            assert (await alice.get(f"/runs/{done['run_id']}")).json()["status"] == "completed"

            response = await alice.delete(f"/runs/{done['run_id']}")
            assert response.status_code == 204 and response.content == b""
            for gone in (await alice.get(f"/runs/{done['run_id']}"), await alice.get(f"/runs/{done['run_id']}/events")):
                assert gone.status_code == 404
            assert (await alice.delete(f"/runs/{done['run_id']}")).status_code == 404
            assert [r["run_id"] for r in (await alice.get("/runs")).json()["runs"]] == [waiting["run_id"]]
            assert (await alice.get(f"/runs/{waiting['run_id']}")).json()["status"] == "waiting_for_input"


@pytest.mark.anyio
async def test_http_delete_without_auth_and_in_the_openapi_document() -> None:
    engine = demo_engine()
    api = NativeAPI(engine)
    async with engine:
        state = await engine.execute("echo", "a b")
        response = await api(Request(method="DELETE", path=f"/runs/{state.run_id}"))
        assert response.status == 204
        assert await engine.store.get_run(state.run_id) is None
        response = await api(Request(method="GET", path="/openapi.json"))
        operation = json.loads(response.body)["paths"]["/runs/{run_id}"]["delete"]
        assert operation["operationId"] == "deleteRun"
        assert set(operation["responses"]) == {"204", "404", "409"}


# -- export / import -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_export_then_import_gives_the_same_log_and_state(tmp_path: Path) -> None:
    engine = demo_engine()
    async with engine:
        original = await engine.execute("pizza", "one margherita please", metadata={"table": 4})
        log = await read_all(engine.store, original.run_id)
        path = tmp_path / "run.jsonl"
        with path.open("w", encoding="utf-8") as out:
            assert await export_run(engine.store, original.run_id, out.write) == len(log)
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(log) and all(json.loads(line)["run_id"] == original.run_id for line in lines)
        assert load_log(path) == log  # the testing kit's loader

        target = open_store("memory://")
        await target.open()
        now = datetime.now(timezone.utc)
        imported = await import_run(target, load_log(path), now=now)
        assert imported == original
        assert await read_all(target, original.run_id) == log
        assert await target.get_run(original.run_id) == await engine.store.get_run(original.run_id)
        with pytest.raises(InvalidRunState):  # a run id that exists is refused
            await import_run(target, log, now=now)
        assert await read_all(target, original.run_id) == log

        waiting = await engine.execute("approval", None)
        with pytest.raises(InvalidRequest, match="has not ended"):
            await import_run(target, await read_all(engine.store, waiting.run_id), now=now)
        assert await target.get_run(waiting.run_id) is None
        with pytest.raises(RunNotFound):
            await export_run(engine.store, "no-such-run", print)


def test_a_bad_log_names_its_line(tmp_path: Path) -> None:
    log = [
        RunCreated(run_id="r", seq=1, at=T0, agent="a"),
        RunStarted(run_id="r", seq=2, at=T0),
        RunCompleted(run_id="r", seq=3, at=T0, output="ok"),
    ]
    text = dump_log(log)
    assert parse_log(text.splitlines()) == log
    save_log(log, tmp_path / "fixture.jsonl")
    assert load_log(tmp_path / "fixture.jsonl") == log
    lines = text.splitlines()
    cases = {
        "not json": [lines[0], "{nope", lines[2]],
        "a gap": [lines[0], lines[2]],
        "another run": [lines[0], lines[1].replace('"run_id":"r"', '"run_id":"x"'), lines[2]],
        "after the end": [*lines, lines[2].replace('"seq":3', '"seq":4')],
        "not an event": [lines[0], "[1, 2]"],
        "empty": ["", "  "],
    }
    for name, bad in cases.items():
        with pytest.raises(InvalidRequest) as caught:
            parse_log(bad)
        if name != "empty":
            assert caught.value.message.startswith("line "), name


def _log_lines(**created: object) -> list[str]:
    """An ended run's log as JSON lines; `created` changes its run.created."""
    fields = {"run_id": "r", "agent": "echo", "input": "hi", **created}
    run_id = str(fields["run_id"])
    return dump_log(
        [
            RunCreated(seq=1, at=T0, **fields),  # type: ignore[arg-type]
            RunStarted(run_id=run_id, seq=2, at=T0),
            RunCompleted(run_id=run_id, seq=3, at=T0, output="ok"),
        ]
    ).splitlines()


def test_cli_import_refuses_what_the_api_refuses(tmp_path: Path) -> None:
    """Issue 20, item 12: `runengine import` holds a log to the API's checks and limits."""
    store = f"sqlite:///{tmp_path / 'target.db'}"
    good = _log_lines()
    future = _log_lines()
    future[2] = future[2].replace("2026-03-01", "9999-03-01")
    cases = {
        "a 20 MiB input": (_log_lines(input="x" * (20 * 1024 * 1024)), "limit is"),
        "an input over the API's limit": (_log_lines(input="x" * (MAX_INPUT_BYTES + 1)), "'input'"),
        "a 5,000-character run id": (_log_lines(run_id="r" * 5000), "run id"),
        "a run id with a newline": (_log_lines(run_id="a\nb"), "run id"),
        "a run id with NUL": (_log_lines(run_id="a\x00b"), "run id"),
        "a run id with /..": (_log_lines(run_id="a/.."), "run id"),
        "an agent with a control character": (_log_lines(agent="ec\x07ho"), "'agent'"),
        "an unknown event type": (
            [*good[:2], good[2].replace('"run.completed"', '"run.teleported"'), good[2].replace('"seq":3', '"seq":4')],
            "unknown event type",
        ),
        "a seq as a string": ([good[0], good[1].replace('"seq":2', '"seq":"2"'), good[2]], "seq must be an integer"),
        "a run ended in year 9999": (future, "later than now"),
    }
    runner = CliRunner()
    for name, (lines, says) in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = runner.invoke(main, ["import", str(path), "--store", store])
        assert result.exit_code == 1 and says in result.output, (name, result.output[:300])
    # Nothing was imported; the good log still is.
    path = tmp_path / "good.jsonl"
    path.write_text("\n".join(good) + "\n", encoding="utf-8")
    result = runner.invoke(main, ["import", str(path), "--store", store])
    assert result.exit_code == 0 and "imported run r: 3 events" in result.output, result.output
    with sqlite3.connect(tmp_path / "target.db") as conn:
        assert [row[0] for row in conn.execute("SELECT run_id FROM runs")] == ["r"]


@pytest.mark.server
def test_cli_export_import_round_trip_and_prune_on_a_sqlite_file(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'target.db'}"
    now = datetime.now(timezone.utc)
    ages = {"ended-40d": timedelta(days=40), "ended-31d": timedelta(days=31), "ended-10d": timedelta(days=10)}

    async def populate() -> dict[str, str]:
        clock = Clock()
        engine = register_demo_agents(RunEngine(source, clock=clock), delay=0)
        ids: dict[str, str] = {}
        async with engine:
            for name, age in ages.items():
                clock.now = now - age
                ids[name] = (await engine.execute("pizza", "a diavola")).run_id
        async with SQLiteStore(tmp_path / "source.db") as store:  # a run still going, begun long ago
            ids["active-50d"] = "active-50d"
            await store.append("active-50d", running_log("active-50d", now - timedelta(days=50)), expected_seq=0)
        return ids

    ids = anyio.run(populate)
    exported = tmp_path / "run.jsonl"
    result = cli("export", ids["ended-40d"], "--store", source, "-o", str(exported))
    assert result.returncode == 0, result.stderr
    stdout = cli("export", ids["ended-40d"], "--store", source)
    assert stdout.stdout == exported.read_text(encoding="utf-8")
    result = cli("import", str(exported), "--store", target)
    assert result.returncode == 0, result.stderr
    again = cli("import", str(exported), "--store", target)
    assert again.returncode == 1 and "exists already" in again.stderr
    assert cli("export", ids["ended-40d"], "--store", target).stdout == exported.read_text(encoding="utf-8")
    missing = cli("export", "no-such-run", "--store", source, "-o", str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 1 and not (tmp_path / "missing.jsonl").exists()

    dry = cli("prune", "--older-than", "30d", "--store", source, "--dry-run")
    assert dry.returncode == 0 and set(dry.stdout.split()) == {ids["ended-40d"], ids["ended-31d"]}
    result = cli("prune", "--older-than", "30d", "--store", source)
    assert result.returncode == 0 and "deleted 2 run(s)" in result.stdout
    for bad in ("30", "30x", "-1d", "0h", "d", "1.5d"):  # refused before the store is opened
        refused = CliRunner().invoke(main, ["prune", "--older-than", bad, "--store", source])
        assert refused.exit_code == 2 and "--older-than" in refused.output

    with sqlite3.connect(tmp_path / "source.db") as conn:
        left = {row[0] for row in conn.execute("SELECT run_id FROM runs")}
        events = {row[0] for row in conn.execute("SELECT DISTINCT run_id FROM events")}
    assert left == events == {ids["ended-10d"], ids["active-50d"]}
    assert cli("prune", "--older-than", "12h", "--store", source).stdout.startswith("deleted 1 run(s)")
    assert cli("prune", "--older-than", "90m", "--store", source).stdout.startswith("deleted 0 run(s)")


# -- the SQLite schema: a version 2 file is migrated when opened ------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_version_2_sqlite_file_opens_and_is_migrated(tmp_path: Path, anyio_backend: str) -> None:
    path = tmp_path / "v2.db"
    engine = register_demo_agents(RunEngine(SQLiteStore(path), clock=Clock()), delay=0)
    async with engine:
        done = await engine.execute("echo", "x")
    async with SQLiteStore(path) as store:
        await store.append("running", running_log("running", T0 - timedelta(days=1)), expected_seq=0)
    with sqlite3.connect(path) as conn:  # back to what version 2 wrote
        conn.execute("DROP INDEX runs_by_ended")
        conn.execute("DROP INDEX idempotency_by_run")
        conn.execute("ALTER TABLE runs DROP COLUMN ended_us")
        conn.execute("DROP TABLE webhooks")
        conn.execute("DROP INDEX runs_by_wake")  # version 5's timer index
        conn.execute("DROP INDEX runs_busy")
        conn.execute("ALTER TABLE runs DROP COLUMN wake_at")
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version VALUES (2)")
    async with SQLiteStore(path) as store:
        page = await store.list_ended_runs(ended_before=T0 + timedelta(seconds=1))
        assert [r.run_id for r in page.runs] == [done.run_id]
        assert (await store.get_run("running")).status is Status.RUNNING  # type: ignore[union-attr]
        await store.append("running", [RunCompleted(run_id="running", seq=3, at=T0 - timedelta(hours=1))], expected_seq=2)
        page = await store.list_ended_runs(ended_before=T0 + timedelta(seconds=1))
        assert [r.run_id for r in page.runs] == ["running", done.run_id]  # ended an hour before `done`
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"runs_by_ended", "idempotency_by_run", "runs_by_wake", "runs_busy"} <= indexes


# -- schema version 4: webhook registrations leave the sessions for a table of their own ---------------

#: Two registrations as the Agent Platform profile kept them before version 4: an ended session
#: `platform.webhooks.<app_id>` whose data listed them.
OLD_REGISTRATIONS = SessionRecord(
    session_id="platform.webhooks.app1",
    created_at=T0,
    ended_at=T0,
    data={
        "kind": "platform.webhooks",
        "app_id": "app1",
        "webhooks": [
            {"webhook_id": "wh_b", "url": "https://example.com/1", "events": ["session.started"], "secret": "s1",
             "created_at": "2026-03-01T00:00:00Z", "owner": "alice"},
            {"webhook_id": "wh_a", "url": "https://example.com/2", "events": ["session.ended", "conversation.escalated"],
             "secret": "whsec_x", "created_at": "2026-03-01T00:00:05Z", "owner": None},
        ],
    },
)
MIGRATED_REGISTRATIONS = [
    WebhookRegistration(webhook_id="wh_b", app_id="app1", url="https://example.com/1", events=("session.started",),
                        secret="s1", created_at=T0, owner="alice"),
    WebhookRegistration(webhook_id="wh_a", app_id="app1", url="https://example.com/2",
                        events=("session.ended", "conversation.escalated"), secret="whsec_x",
                        created_at=T0 + timedelta(seconds=5), owner=None),
]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_version_3_sqlite_file_moves_webhook_registrations_to_their_table(tmp_path: Path, anyio_backend: str) -> None:
    path = tmp_path / "v3.db"
    async with SQLiteStore(path) as store:
        await store.put_session(OLD_REGISTRATIONS)
        await store.put_session(SessionRecord(session_id="platform.webhooks.mine", created_at=T0, data={"a": 1}))
    with sqlite3.connect(path) as conn:  # back to what version 3 wrote
        conn.execute("DROP TABLE webhooks")
        conn.execute("DROP INDEX runs_by_wake")
        conn.execute("DROP INDEX runs_busy")
        conn.execute("ALTER TABLE runs DROP COLUMN wake_at")
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version VALUES (3)")
    async with SQLiteStore(path) as store:
        assert await store.list_webhooks("app1") == MIGRATED_REGISTRATIONS
        assert await store.get_session("platform.webhooks.app1") is None
        # a session of that name that held no registrations is left alone
        assert (await store.get_session("platform.webhooks.mine")).data == {"a": 1}  # type: ignore[union-attr]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]

