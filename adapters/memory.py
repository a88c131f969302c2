"""MemoryStore: the event store in process memory. For tests, demos and single-process use.

It is the model the conformance suite compares every other store with, so it is
kept obviously correct rather than clever: plain lists and dicts, per-run
wake-ups, nothing shared between event loops.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime, timedelta

import anyio
import attrs

from runengine.adapters.wakeup import RunWakeups
from runengine.adapters.profiles.durable_streams_store import Chunk, StreamMeta, StreamWrite, wake_key
from runengine.adapters.profiles.platform_webhook_store import WebhookRegistration
from runengine.errors import ConcurrencyConflict, InvalidRequest
from runengine.events import NO_DEADLINE, Event, wake_after
from runengine.schedules import Schedule
from runengine.ports import (
    DEFAULT_PAGE,
    MAX_PAGE,
    EndedRunPage,
    IdempotencyRecord,
    RunPage,
    RecordedPage,
    RunSummary,
    SessionRecord,
    SessionRuns,
)
from runengine.state import RunState
from runengine.status import Status
from runengine.transitions import status_after
from runengine.validation import (
    check_append,
    check_page,
    decode_listing_start,
    decode_ended_cursor,
    encode_cursor,
    encode_ended_cursor,
    micros,
)
from runengine.wire import data_to_json, to_json


class MemoryStore:
    shared = False

    def __init__(self) -> None:
        self._logs: dict[str, list[Event]] = {}
        self._runs: dict[str, RunSummary] = {}
        self._order: dict[str, int] = {}  # run id -> creation position (the cursor)
        self._counter = 0
        self._snapshots: dict[str, RunState] = {}
        self._keys: dict[tuple[str, str, str], IdempotencyRecord] = {}  # (principal, scope, key)
        self._sessions: dict[str, SessionRecord] = {}
        self._webhooks: dict[str, WebhookRegistration] = {}  # by webhook id, oldest first
        self._streams: dict[str, StreamMeta] = {}  # Durable Streams rows by path
        self._chunks: dict[str, list[Chunk]] = {}  # by stream id, in order
        self._schedules: dict[str, Schedule] = {}  # by Schedule.key
        self._wakeups = RunWakeups()

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """`memory://` (nothing else to say: every MemoryStore is new and empty)."""
        return cls()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> MemoryStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- events ---------------------------------------------------------------

    async def append(self, run_id: str, events: Sequence[Event], *, expected_seq: int) -> None:
        check_append(run_id, events, expected_seq)
        for event in events:  # what the other stores could not write (NaN ...) is refused here too
            data_to_json(event)
        log = self._logs.get(run_id)
        actual = len(log) if log is not None else 0
        if actual != expected_seq:
            raise ConcurrencyConflict(run_id, expected_seq, actual)
        if log is None:
            log = self._logs[run_id] = []
            first = events[0]
            self._counter += 1
            self._order[run_id] = self._counter
            summary = RunSummary(
                run_id=run_id,
                agent=getattr(first, "agent", ""),
                status=Status.PENDING,
                session_id=getattr(first, "session_id", None),
                owner=getattr(first, "owner", None),
                created_at=first.at,
                updated_at=first.at,
                last_seq=0,
            )
        else:
            summary = self._runs[run_id]
        log.extend(events)
        previous = None if expected_seq == 0 else summary.status
        status = status_after(previous, [e.type for e in events])
        self._runs[run_id] = RunSummary(
            run_id=run_id,
            agent=summary.agent,
            status=status or summary.status,
            session_id=summary.session_id,
            owner=summary.owner,
            created_at=summary.created_at,
            updated_at=events[-1].at,
            last_seq=len(log),
            wake_at=wake_after(summary.wake_at, events),
        )
        await anyio.lowlevel.checkpoint()  # appends are awaited like real I/O
        now = self._runs[run_id]  # as the run is now (others may have appended meanwhile)
        self._wakeups.notify(run_id, now.last_seq, status=now.status)

    async def read(self, run_id: str, *, after_seq: int = 0, limit: int = DEFAULT_PAGE) -> list[Event]:
        check_page(after_seq, limit)
        log = self._logs.get(run_id, [])
        return log[after_seq : after_seq + min(limit, MAX_PAGE)]

    async def read_recorded(self, run_id: str, *, after_seq: int = 0, limit: int = DEFAULT_PAGE) -> RecordedPage:
        """`read` for a replay (the RecordedReader port): the events are kept decoded already."""
        return RecordedPage.of(await self.read(run_id, after_seq=after_seq, limit=limit))

    async def last_seq(self, run_id: str) -> int:
        return len(self._logs.get(run_id, ()))

    async def wait(self, run_id: str, *, after_seq: int, timeout: float | None = None) -> bool:
        async def has_news() -> bool:
            return len(self._logs.get(run_id, ())) > after_seq

        return await self._wakeups.wait(run_id, after_seq=after_seq, timeout=timeout, has_news=has_news)

    async def wait_settled(self, run_id: str, *, after_seq: int, timeout: float | None = None) -> bool:
        """SettledWait: woken only by appends that leave the run ended or waiting for input."""

        async def has_news() -> bool:
            summary = self._runs.get(run_id)
            return summary is not None and summary.last_seq > after_seq and summary.status.settled

        return await self._wakeups.wait(run_id, after_seq=after_seq, timeout=timeout, has_news=has_news, settled=True)

    # -- listing ----------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunSummary | None:
        return self._runs.get(run_id)

    async def count_session_runs(self, session_id: str, *, owner: str | None = None) -> SessionRuns:
        counts: dict[Status, int] = {}
        first: tuple[int, RunSummary] | None = None
        for run_id, position in self._order.items():
            run = self._runs[run_id]
            if run.session_id != session_id or (owner is not None and run.owner != owner):
                continue
            counts[run.status] = counts.get(run.status, 0) + 1
            if first is None or position < first[0]:
                first = (position, run)
        return SessionRuns(by_status=counts, first_created_at=first[1].created_at if first else None)

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
            start = self._order.get(before_run, 0)  # an unknown run: nothing is older
        matches: list[RunSummary] = []
        for run_id, position in sorted(self._order.items(), key=lambda kv: -kv[1]):
            if start is not None and position >= start:
                continue
            run = self._runs[run_id]
            if session_id is not None and run.session_id != session_id:
                continue
            if status is not None and run.status != status:
                continue
            if owner is not None and run.owner != owner:
                continue
            matches.append(run)
            if len(matches) > limit:
                break
        page = matches[:limit]
        more = len(matches) > limit
        return RunPage(
            runs=tuple(page),
            next_before=encode_cursor(self._order[page[-1].run_id]) if more and page else None,
        )

    async def list_ended_runs(
        self, *, ended_before: datetime, limit: int = 100, after: str | None = None
    ) -> EndedRunPage:
        check_page(0, limit)
        start = decode_ended_cursor(after)
        cutoff = micros(ended_before)
        keys = sorted(
            (micros(run.updated_at), self._order[run.run_id], run.run_id)
            for run in self._runs.values()
            if run.status.terminal and run.updated_at is not None and micros(run.updated_at) < cutoff
        )
        matches = [key for key in keys if start is None or key[:2] > start][: limit + 1]
        page = matches[:limit]
        return EndedRunPage(
            runs=tuple(self._runs[run_id] for _, _, run_id in page),
            next_after=encode_ended_cursor(*page[-1][:2]) if len(matches) > limit else None,
        )

    async def list_waking(self, *, limit: int, after: str | None = None) -> RunPage:
        check_page(0, limit)
        start = decode_ended_cursor(after)
        keys = sorted(
            (micros(run.wake_at), self._order[run.run_id], run.run_id)
            for run in self._runs.values()
            if run.wake_at is not None and run.wake_at < NO_DEADLINE
        )
        matches = [key for key in keys if start is None or key[:2] > start][: limit + 1]
        page = matches[:limit]
        return RunPage(
            runs=tuple(self._runs[run_id] for _, _, run_id in page),
            next_before=encode_ended_cursor(*page[-1][:2]) if len(matches) > limit else None,
        )

    async def list_busy(self, *, limit: int, before: str | None = None) -> RunPage:
        check_page(0, limit)
        start = decode_listing_start(before, None)
        matches = [
            self._runs[run_id]
            for run_id, position in sorted(self._order.items(), key=lambda kv: -kv[1])
            if (start is None or position < start)
            and self._runs[run_id].wake_at is None and not self._runs[run_id].status.terminal
        ][: limit + 1]
        page = matches[:limit]
        return RunPage(
            runs=tuple(page),
            next_before=encode_cursor(self._order[page[-1].run_id]) if len(matches) > limit and page else None,
        )

    async def delete_run(self, run_id: str) -> bool:
        found = self._runs.pop(run_id, None) is not None
        self._logs.pop(run_id, None)
        self._order.pop(run_id, None)
        self._snapshots.pop(run_id, None)
        for identity in [identity for identity, record in self._keys.items() if record.run_id == run_id]:
            del self._keys[identity]
        await anyio.lowlevel.checkpoint()
        return found

    # -- snapshots, idempotency keys, sessions ----------------------------------

    async def save_snapshot(self, state: RunState) -> None:
        current = self._snapshots.get(state.run_id)
        if current is None or current.last_seq <= state.last_seq:
            self._snapshots[state.run_id] = state

    async def load_snapshot(self, run_id: str) -> RunState | None:
        return self._snapshots.get(run_id)

    async def reserve_idempotency_key(
        self, record: IdempotencyRecord, *, ttl: float, pending_for: float
    ) -> IdempotencyRecord | None:
        if not record.key:
            raise InvalidRequest("an idempotency key must not be empty")
        identity = (record.principal, record.scope, record.key)
        held = self._keys.get(identity)
        if held is not None and held != record:  # the same record again (a retried call): still stored
            age = record.created_at - held.created_at
            live = age <= timedelta(seconds=ttl if held.run_id in self._runs else pending_for)
            if live:
                return held
        self._keys[identity] = record
        return None

    async def release_idempotency_key(self, record: IdempotencyRecord) -> None:
        identity = (record.principal, record.scope, record.key)
        held = self._keys.get(identity)
        if held is not None and held.run_id == record.run_id:
            del self._keys[identity]

    async def put_session(self, session: SessionRecord) -> None:
        to_json(session.metadata, "session metadata")
        to_json(session.data, "session data")
        self._sessions[session.session_id] = session

    async def add_session(self, session: SessionRecord) -> SessionRecord:
        return self._sessions.setdefault(session.session_id, session)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        return self._sessions.get(session_id)

    # -- webhook registrations --------------------------------------------------------

    async def add_webhook(self, webhook: WebhookRegistration) -> None:
        self._webhooks[webhook.webhook_id] = webhook

    async def list_webhooks(self, app_id: str) -> list[WebhookRegistration]:
        return [w for w in self._webhooks.values() if w.app_id == app_id]

    async def delete_webhook(self, app_id: str, webhook_id: str) -> bool:
        found = self._webhooks.get(webhook_id)
        if found is None or found.app_id != app_id:
            return False
        del self._webhooks[webhook_id]
        return True


    # -- durable streams (the Durable Streams profile's DurableStreamStore) ---------------------

    async def stream_meta(self, path: str) -> StreamMeta | None:
        return self._streams.get(path)

    async def stream_chunks(self, stream_id: str, *, start: int, end: int, limit: int) -> list[Chunk]:
        chunks = self._chunks.get(stream_id, [])
        first = max(bisect.bisect_right(chunks, start, key=lambda c: c.start) - 1, 0)  # in order, contiguous
        return [c for c in chunks[first : first + limit + 1] if c.end > start and c.start < end][:limit]

    async def stream_write(self, write: StreamWrite) -> bool:
        for old, new in write.rows:  # checked before anything changes: all or nothing
            path = (old or new).path  # type: ignore[union-attr]
            current = self._streams.get(path)
            if old is None:  # an insert: the path must be free
                if current is not None:
                    return False
            elif current is None or (current.stream_id, current.version) != (old.stream_id, old.version):
                return False
        woken = []
        for old, new in write.rows:
            if new is None:
                del self._streams[old.path]  # type: ignore[union-attr]
            else:  # a read's touch since is kept (stream_touch)
                current = self._streams.get(new.path)
                touched = max(new.touched_us, current.touched_us) if current is not None else new.touched_us
                self._streams[new.path] = attrs.evolve(new, touched_us=touched)
            woken.append((old or new).stream_id)  # type: ignore[union-attr]
        for stream_id in write.drop:
            self._chunks.pop(stream_id, None)
        for stream_id, chunk in write.chunks:
            self._chunks.setdefault(stream_id, []).append(chunk)
        for stream_id in woken:
            self._wakeups.notify(wake_key(stream_id))
        return True

    async def stream_touch(self, path: str, at_us: int) -> None:
        current = self._streams.get(path)
        if current is not None and current.touched_us < at_us:
            self._streams[path] = attrs.evolve(current, touched_us=at_us)

    async def stream_wait(self, meta: StreamMeta, *, timeout: float) -> bool:
        async def has_news() -> bool:
            current = self._streams.get(meta.path)
            return current is None or current.stream_id != meta.stream_id or current.version != meta.version

        return await self._wakeups.wait(wake_key(meta.stream_id), after_seq=1 << 62, timeout=timeout, has_news=has_news)
    # -- schedules (runengine.schedules.ScheduleStore) ----------------------------------------

    async def add_schedule(self, schedule: Schedule) -> bool:
        return self._schedules.setdefault(schedule.key, schedule) is schedule

    async def get_schedule(self, key: str) -> Schedule | None:
        return self._schedules.get(key)

    async def list_schedules(self, *, owner: str | None = None, after: str | None = None, limit: int = 200) -> list[Schedule]:
        keys = sorted(k for k, s in self._schedules.items() if (owner is None or s.owner == owner) and (after is None or k > after))
        return [self._schedules[k] for k in keys[:limit]]

    async def set_schedule_paused(self, key: str, paused: bool) -> bool:
        found = self._schedules.get(key)
        if found is not None:
            self._schedules[key] = attrs.evolve(found, paused=paused)
        return found is not None

    async def advance_schedule(self, key: str, slot: datetime) -> bool:
        found = self._schedules.get(key)
        if found is None or (found.last_slot is not None and found.last_slot >= slot):
            return False
        self._schedules[key] = attrs.evolve(found, last_slot=slot)
        return True

    async def delete_schedule(self, key: str) -> bool:
        return self._schedules.pop(key, None) is not None
