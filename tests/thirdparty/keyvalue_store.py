"""KeyValueStore: a third party's run log, written against the narrow port alone.

It keeps everything in one mapping of text keys to text values: a plain dict (`kv://`, gone with
the process) or a `dbm` file (`kv:///path/runs.dbm`, kept). It knows runengine only through its
public core: the port (`runengine.ports.EventStore`), the argument checks every store applies
(`runengine.validation`), the status each event leads to (`runengine.transitions`) and the JSON
form of events and states (`runengine.wire`). docs/stores.md walks through it.

Keys:
    run/<run_id>          the run's summary (JSON), position included
    event/<run_id>/<seq>  one event: {"type", "at", "data"}
    snapshot/<run_id>     the latest snapshot (runengine.wire.state_to_json)
    position/<n>          the run created n-th (n zero-padded, so keys sort by creation)
    positions             the last position handed out
"""

from __future__ import annotations

import dbm
import json
from collections.abc import MutableMapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import anyio

from runengine.errors import ConcurrencyConflict, InvalidRequest
from runengine.events import Event, RunCreated
from runengine.ports import DEFAULT_PAGE, MAX_PAGE, RunPage, RunSummary
from runengine.state import RunState
from runengine.status import Status
from runengine.transitions import status_after
from runengine.validation import check_append, check_page, decode_listing_start, encode_cursor
from runengine.wire import data_to_json, event_from_stored, loads_stored, state_from_json, state_to_json


class KeyValueStore:
    """The run log in a mapping of text keys to text values (a dict, or a dbm file)."""

    #: One process writes it (the engine fails the runs a dead process left unfinished at start).
    shared = False

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._db: MutableMapping[Any, Any] | None = None
        self._news: anyio.Event | None = None  # set (and replaced) on every append

    @classmethod
    def from_url(cls, url: str) -> KeyValueStore:
        """`kv://` (a dict in memory) or `kv:///path/to/file.dbm` (a dbm file)."""
        parts = urlsplit(url)
        return cls(parts.path or None)

    # -- open, close --------------------------------------------------------------------

    async def open(self) -> None:
        if self._db is None:
            self._db = dbm.open(self.path, "c") if self.path else {}

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None and hasattr(db, "close"):
            db.close()

    async def __aenter__(self) -> KeyValueStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get(self, key: str) -> str | None:
        if self._db is None:
            raise InvalidRequest("the store is not open")
        value = self._db.get(key)
        return value.decode() if isinstance(value, bytes) else value

    # -- the log --------------------------------------------------------------------------

    async def append(self, run_id: str, events: Sequence[Event], *, expected_seq: int) -> None:
        check_append(run_id, events, expected_seq)
        rows = {f"event/{run_id}/{e.seq}": _event_text(e) for e in events}  # bad data fails here, first
        summary = await self.get_run(run_id)
        actual = summary.last_seq if summary is not None else 0
        if actual != expected_seq:
            raise ConcurrencyConflict(run_id, expected_seq, actual)
        position = self._run_position(run_id)
        if summary is None:  # a new run: check_append saw to it that events[0] is run.created
            first = events[0]
            assert isinstance(first, RunCreated)
            position = int(self._get("positions") or 0) + 1
            summary = RunSummary(run_id=run_id, agent=first.agent, status=Status.PENDING, session_id=first.session_id,
                                 owner=first.owner, created_at=first.at, last_seq=0)
        status = status_after(summary.status if expected_seq else None, [e.type for e in events]) or summary.status
        assert self._db is not None
        self._db.update(rows)  # events first, the summary (which makes them visible) last
        self._db[f"run/{run_id}"] = _summary_text(summary, status, events[-1], position)
        if expected_seq == 0:
            self._db[f"position/{position:012d}"] = run_id
            self._db["positions"] = str(position)
        news, self._news = self._news, None
        if news is not None:
            news.set()
        await anyio.lowlevel.checkpoint()

    async def read(self, run_id: str, *, after_seq: int = 0, limit: int = DEFAULT_PAGE) -> list[Event]:
        check_page(after_seq, limit)
        summary = await self.get_run(run_id)
        last = summary.last_seq if summary is not None else 0
        events = []
        for seq in range(after_seq + 1, min(last, after_seq + min(limit, MAX_PAGE)) + 1):
            row = json.loads(self._get(f"event/{run_id}/{seq}") or "null")
            events.append(event_from_stored(run_id, seq, row["type"], datetime.fromisoformat(row["at"]), loads_stored(row["data"])))
        return events

    async def wait(self, run_id: str, *, after_seq: int, timeout: float | None = None) -> bool:
        with anyio.move_on_after(timeout):
            while True:
                if self._news is None:
                    self._news = anyio.Event()
                news = self._news  # taken before the check: an append during it still wakes us
                summary = await self.get_run(run_id)
                if summary is not None and summary.last_seq > after_seq:
                    return True
                await news.wait()
        return False

    # -- summaries and the listing ----------------------------------------------------------

    async def get_run(self, run_id: str) -> RunSummary | None:
        text = self._get(f"run/{run_id}")
        return _summary_from_text(text) if text is not None else None

    def _run_position(self, run_id: str) -> int:
        text = self._get(f"run/{run_id}")
        return int(json.loads(text)["position"]) if text is not None else 0

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: Status | None = None,
        owner: str | None = None,
        limit: int = 50,
        before: str | None = None,
        before_run: str | None = None,
    ) -> RunPage:
        check_page(0, limit)
        start = decode_listing_start(before, before_run)
        if before_run is not None:
            start = self._run_position(before_run)  # 0 for an unknown run: nothing is older
        assert self._db is not None
        positions = sorted((k.decode() if isinstance(k, bytes) else k for k in self._db.keys()), reverse=True)
        found: list[tuple[int, RunSummary]] = []
        for key in positions:
            if not key.startswith("position/"):
                continue
            position = int(key.split("/")[1])
            if start is not None and position >= start:
                continue
            run = await self.get_run(self._get(key) or "")
            if run is None:
                continue
            if session_id is not None and run.session_id != session_id:
                continue
            if status is not None and run.status != status:
                continue
            if owner is not None and run.owner != owner:
                continue
            found.append((position, run))
            if len(found) > limit:
                break
        page = found[:limit]
        return RunPage(runs=tuple(run for _, run in page),
                       next_before=encode_cursor(page[-1][0]) if len(found) > limit else None)

    # -- snapshots, deleting ------------------------------------------------------------------

    async def save_snapshot(self, state: RunState) -> None:
        current = await self.load_snapshot(state.run_id)
        if current is None or current.last_seq <= state.last_seq:
            assert self._db is not None
            self._db[f"snapshot/{state.run_id}"] = state_to_json(state)

    async def load_snapshot(self, run_id: str) -> RunState | None:
        text = self._get(f"snapshot/{run_id}")
        return state_from_json(text) if text is not None else None

    async def delete_run(self, run_id: str) -> bool:
        summary = await self.get_run(run_id)
        position = self._run_position(run_id)
        assert self._db is not None
        # the summary first: a reader never sees a run whose events are half gone
        for key in [f"run/{run_id}", f"position/{position:012d}", f"snapshot/{run_id}"]:
            self._db.pop(key, None)
        for seq in range(1, (summary.last_seq if summary else 0) + 1):
            self._db.pop(f"event/{run_id}/{seq}", None)
        return summary is not None


def _event_text(event: Event) -> str:
    return json.dumps({"type": event.type, "at": event.at.isoformat(), "data": data_to_json(event)})


def _summary_text(summary: RunSummary, status: Status, last: Event, position: int) -> str:
    return json.dumps({
        "run_id": summary.run_id, "agent": summary.agent, "status": status.value, "session_id": summary.session_id,
        "owner": summary.owner, "created_at": summary.created_at.isoformat() if summary.created_at else None,
        "updated_at": last.at.isoformat(), "last_seq": last.seq, "position": position,
    })


def _summary_from_text(text: str) -> RunSummary:
    row = json.loads(text)
    return RunSummary(
        run_id=row["run_id"], agent=row["agent"], status=Status(row["status"]), session_id=row["session_id"],
        owner=row["owner"], last_seq=row["last_seq"],
        created_at=datetime.fromisoformat(row["created_at"]) if row["created_at"] else None,
        updated_at=datetime.fromisoformat(row["updated_at"]),
    )
