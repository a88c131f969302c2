"""Issue 25 (schedules) without code: `runengine serve --schedule JSON`, RUNENGINE_SCHEDULE (a JSON
array) and `[[schedule]]` tables of the config file; checked at start (a bad entry is a usage
error), kept in the store, declared again at each start. A real `runengine serve` process on
SQLite, stopped and started again: each slot of an every-second schedule has exactly one run."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from faultkit import ServeProcess
from runengine.adapters.cli import main, serve
from runengine.adapters.configfile import settings
from runengine.adapters.sqlite import SQLiteStore
from runengine.reducer import fold

ANYIO_BACKENDS = ("asyncio",)
TICK = {"schedule_id": "tick", "cron": "* * * * * *", "agent": "echo", "input": "tick"}


def parsed(args: list[str]) -> dict[str, Any]:
    with serve.make_context("serve", list(args)) as ctx:
        return dict(ctx.params)


def test_schedules_from_the_command_line_the_environment_and_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [s.envvar for s in settings(serve)] + ["RUNENGINE_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    assert parsed([])["schedules"] == ()
    assert parsed(["--schedule", json.dumps(TICK)])["schedules"] == (TICK,)
    config = tmp_path / "runengine.toml"
    config.write_text(
        '[[schedule]]\nschedule_id = "digest"\ncron = "0 9 * * 1-5"\nagent = "echo"\ntimezone = "Europe/Paris"\n'
        'input = {topic = "news"}\n\n[[schedule]]\nschedule_id = "tick"\ncron = "* * * * *"\nagent = "echo"\n'
    )
    from_file = parsed(["--config", str(config)])["schedules"]
    assert [s["schedule_id"] for s in from_file] == ["digest", "tick"] and from_file[0]["input"] == {"topic": "news"}
    monkeypatch.setenv("RUNENGINE_SCHEDULE", json.dumps([TICK, {**TICK, "schedule_id": "tock"}]))
    assert [s["schedule_id"] for s in parsed([])["schedules"]] == ["tick", "tock"]


def test_bad_schedules_are_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    for entry, message in [
        ("{not json", "not JSON"),
        ("[1]", "JSON object"),
        (json.dumps({**TICK, "cron": "every second"}), "not a cron expression"),
        (json.dumps({**TICK, "agent": "nobody"}), "no agent named 'nobody'"),
        (json.dumps({**TICK, "timezone": "Mars/Olympus"}), "unknown time zone"),
        (json.dumps({**TICK, "every": 1}), "unknown schedule field(s) every"),
        (json.dumps({"cron": "* * * * *", "agent": "echo"}), "needs schedule_id"),
    ]:
        result = runner.invoke(main, ["serve", "--store", "memory://", "--schedule", entry])
        assert result.exit_code == 2 and message in result.output, (entry, result.output)


def slots_started(path: Path) -> list[str]:
    """The slot of every run the `tick` schedule started (each run once: one slot, one run)."""
    import anyio

    async def read() -> list[str]:
        async with SQLiteStore(str(path)) as store:
            page = await store.list_runs(limit=1000)
            slots = []
            for summary in page.runs:
                state = fold(await store.read(summary.run_id, limit=1000))
                assert state is not None
                if state.metadata.get("schedule_id") == "tick":
                    slots.append(state.metadata["schedule_slot"])
            assert await store.list_schedules() and len(await store.list_schedules()) == 1
            return sorted(slots)

    return anyio.run(read)


@pytest.mark.server
def test_a_served_schedule_across_a_restart_starts_each_slot_once(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    args = ["--store", f"sqlite:///{db}", "--delay", "0", "--schedule", json.dumps(TICK)]
    for attempt in range(2):  # stopped (SIGTERM), then started again with the same entry
        server = ServeProcess(args, tmp_path / f"serve{attempt}.log")
        server.start()
        time.sleep(3.5)
        server.kill(signal.SIGTERM)
    slots = slots_started(db)
    assert len(slots) == len(set(slots)) >= 5, slots
    # Every second from the first slot to the last has its run: the slots while the server was
    # down were less than the grace late at the restart, so they started then (once).
    first, last = (time.mktime(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")) for s in (slots[0], slots[-1]))
    assert len(slots) == int(last - first) + 1, slots
