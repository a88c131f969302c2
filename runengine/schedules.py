"""Schedules: an agent run started at each slot of a cron expression, in a time zone.

    await engine.schedule("digest", cron="0 9 * * 1-5", agent="digest", input={...},
                          timezone="Europe/Paris", missed="catch_up_one")

A schedule is a record in the store (the `ScheduleStore` port), never held only in memory: it
outlives the process that made it. Each engine on the store runs one `Schedules.run` task, which
sleeps (on `engine.clock`) until the earliest next slot of any schedule, or `poll` seconds to see
the schedules other processes made, then starts the runs that are due.

Exactly one run per slot, whatever the number of processes: the run's id is derived from the
schedule and the slot (`slot_run_id`), and a run is created only once (`run.created` at seq 1,
appended with expected_seq 0: of two processes creating it, one gets ConcurrencyConflict, which
means "already started"). After starting it, the schedule's `last_slot` is moved to the slot
(a compare-and-set: it only moves forward), so a later process does not look at it again.

Missed slots (every process was down): a slot reached more than `grace` seconds late is missed;
each slot reached within `grace` starts its run. `missed="skip"` starts nothing for the missed
slots; `"catch_up_one"` starts one run for them, however many there were (for the latest missed
slot, unless an on-time slot's run already follows them). Slots while paused are skipped: resume
moves `last_slot` to the present. Overlapping runs follow the session policies: a schedule with a
`session_id` starts its runs in that session under its `session_policy` (reject: the slot is
skipped while a run is active; enqueue: it waits; interrupt: it cancels the active one).

Cron expressions are croniter's (five fields; a sixth, last, field is seconds); times are computed
in the schedule's IANA time zone (zoneinfo), so "0 9 * * *" is 9:00 local across DST changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import anyio.abc
import attrs
import structlog
from croniter import croniter

from .clock import Clock
from .errors import InvalidRequest, RunEngineError
from .ownership import can_access, session_key
from .validation import is_run_id
from .wire import to_json

log = structlog.get_logger("runengine.schedules")

#: What happens to the slots missed while no process ran the schedule (or while it was paused).
MISSED_POLICIES: tuple[str, ...] = ("skip", "catch_up_one")
#: A slot reached at most this many seconds late is on time; later, it is missed.
DEFAULT_GRACE = 60.0
#: How often the schedules are read again (to see those other processes made or changed).
DEFAULT_POLL = 30.0
#: Schedules read per store call while scanning or listing.
PAGE = 200
#: The metadata a scheduled run carries: its schedule and slot.
SCHEDULE_KEY, SLOT_KEY = "schedule_id", "schedule_slot"


class ScheduleNotFound(RunEngineError):
    code = "not_found"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"no schedule {schedule_id!r}", schedule_id=schedule_id)


class ScheduleExists(RunEngineError):
    """A schedule id the caller already uses (ids are per principal, like session ids)."""

    code = "conflict"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id!r} already exists", schedule_id=schedule_id)


@attrs.frozen(kw_only=True)
class Schedule:
    """A schedule as stored. Its id is its owner's (two principals' "daily" are two schedules)."""

    schedule_id: str
    cron: str
    agent: str
    input: Any = None
    timezone: str = "UTC"
    owner: str | None = None
    session_id: str | None = None
    session_policy: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    missed: str = "skip"
    paused: bool = False
    created_at: datetime
    #: The latest slot handled (a run started, or skipped); None: none yet.
    last_slot: datetime | None = None

    @property
    def key(self) -> str:
        """The id the store keeps it under: its owner's namespace (runengine.ownership.session_key)."""
        return session_key(self.owner, self.schedule_id)

    def next_slot(self, after: datetime) -> datetime:
        """The first slot strictly after `after` (UTC)."""
        local = after.astimezone(ZoneInfo(self.timezone))
        return croniter(self.cron, local).get_next(datetime).astimezone(timezone.utc)  # type: ignore[no-any-return]

    def latest_slot(self, now: datetime) -> datetime:
        """The last slot at or before `now` (UTC)."""
        previous: datetime = croniter(self.cron, now.astimezone(ZoneInfo(self.timezone))).get_prev(datetime)
        following = self.next_slot(previous)
        return following if following <= now else previous.astimezone(timezone.utc)

    def next_fire(self, now: datetime, grace: float = DEFAULT_GRACE) -> datetime | None:
        """When its next run starts (None while paused): an on-time slot not started yet, or the
        first slot after `now`."""
        if self.paused:
            return None
        handled = self.last_slot or self.created_at
        return self.next_slot(max(handled, now - timedelta(seconds=grace)))


def check_schedule(schedule: Schedule) -> None:
    """InvalidRequest for a schedule that cannot be kept or run (the engine checks the agent)."""
    if not is_run_id(schedule.schedule_id):
        raise InvalidRequest("a schedule id must be 1 to 256 characters without control characters or '/'",
                             schedule_id=schedule.schedule_id)
    if not isinstance(schedule.cron, str) or not croniter.is_valid(schedule.cron):
        raise InvalidRequest(f"not a cron expression: {schedule.cron!r}", cron=schedule.cron)
    try:
        ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidRequest(f"unknown time zone {schedule.timezone!r} (an IANA name, e.g. Europe/Paris)",
                             timezone=schedule.timezone) from None
    if schedule.missed not in MISSED_POLICIES:
        raise InvalidRequest(f"missed must be one of {', '.join(MISSED_POLICIES)}", missed=schedule.missed)
    if not isinstance(schedule.metadata, dict):
        raise InvalidRequest("metadata must be an object")
    to_json(schedule.input, "input")
    to_json(schedule.metadata, "metadata")


def slot_run_id(schedule: Schedule, slot: datetime) -> str:
    """The id of the run a schedule starts at `slot`: the same in every process, so that a slot
    creates one run however many processes reach it."""
    text = f"{schedule.key}\n{slot.astimezone(timezone.utc).isoformat()}"
    return "sched_" + hashlib.sha256(text.encode()).hexdigest()[:32]


#: The fields a schedule entry of the configuration names (`schedule_from_entry`).
ENTRY_FIELDS: tuple[str, ...] = (
    "schedule_id", "cron", "agent", "input", "timezone", "metadata", "session_id", "session_policy", "missed",
)


def schedule_from_entry(entry: Any, now: datetime) -> Schedule:
    """A schedule from a configuration entry (`runengine serve --schedule` JSON, a config file
    table): an object of ENTRY_FIELDS; its owner is None (the server's own). InvalidRequest."""
    if not isinstance(entry, dict):
        raise InvalidRequest("a schedule entry is an object (schedule_id, cron, agent, ...)")
    unknown = sorted(set(entry) - set(ENTRY_FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown schedule field(s) {', '.join(unknown)}; the fields are: {', '.join(ENTRY_FIELDS)}")
    for name in ("schedule_id", "cron", "agent"):
        if not isinstance(entry.get(name), str):
            raise InvalidRequest(f"a schedule entry needs {name} (a string)", field=name)
    for name in ("timezone", "session_id", "session_policy", "missed"):
        if entry.get(name) is not None and not isinstance(entry[name], str):
            raise InvalidRequest(f"{name} must be a string", field=name)
    schedule = Schedule(
        **{name: entry[name] for name in ENTRY_FIELDS if entry.get(name) is not None}, created_at=now
    )
    check_schedule(schedule)
    return schedule


@runtime_checkable
class ScheduleStore(Protocol):
    """Where a store keeps schedules (the port this module uses), by `Schedule.key`."""

    async def add_schedule(self, schedule: Schedule) -> bool:
        """Store `schedule` unless its key is taken (atomic); whether it was stored."""

    async def get_schedule(self, key: str) -> Schedule | None: ...

    async def list_schedules(self, *, owner: str | None = None, after: str | None = None, limit: int = PAGE) -> list[Schedule]:
        """Up to `limit` schedules in key order, after the key `after`; only `owner`'s when given."""

    async def set_schedule_paused(self, key: str, paused: bool) -> bool:
        """Pause or resume; whether there is such a schedule."""

    async def advance_schedule(self, key: str, slot: datetime) -> bool:
        """Set `last_slot` to `slot` if it is None or earlier (atomic); whether it moved."""

    async def delete_schedule(self, key: str) -> bool:
        """Delete it; whether there was one. Its runs stay."""


#: Starts the run of a slot: False when this engine cannot (it lacks the agent), to leave the
#: slot to an engine that can.
StartRun = Callable[[Schedule, datetime, str], Awaitable[bool]]


class Schedules:
    """The schedules of one store: kept there, and started on time by `run`."""

    def __init__(
        self, store: ScheduleStore, clock: Clock, start_run: StartRun, *,
        grace: float = DEFAULT_GRACE, poll: float = DEFAULT_POLL,
    ) -> None:
        self.store = store
        self._clock = clock
        self._start_run = start_run
        self.grace = grace
        self.poll = poll
        #: Schedules to declare (`declare`) when `run` starts: the configuration's (`runengine serve --schedule`).
        self.declared: list[Schedule] = []
        self._wake: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None

    # -- keeping them ----------------------------------------------------------------------

    async def add(self, schedule: Schedule) -> Schedule:
        check_schedule(schedule)
        if not await self.store.add_schedule(schedule):
            raise ScheduleExists(schedule.schedule_id)
        self.wake()
        return schedule

    async def declare(self, schedule: Schedule) -> Schedule:
        """Make the stored schedule of `schedule`'s key say what it says (a configuration entry, at
        each start): added when missing, replaced when its cron, agent, input ... differ (keeping
        its last slot and whether it is paused), left alone when the same."""
        check_schedule(schedule)
        stored = await self.store.get_schedule(schedule.key)
        if stored is not None:
            schedule = attrs.evolve(schedule, created_at=stored.created_at, last_slot=stored.last_slot, paused=stored.paused)
            if stored == schedule:
                return stored
            await self.store.delete_schedule(schedule.key)
        await self.store.add_schedule(schedule)
        return schedule

    async def get(self, schedule_id: str, *, owner: str | None = None) -> Schedule:
        """`owner`'s schedule (any, with owner None: auth off); ScheduleNotFound otherwise."""
        found = await self.store.get_schedule(session_key(owner, schedule_id)) if is_run_id(schedule_id) else None
        if found is None or not can_access(found.owner, owner):
            raise ScheduleNotFound(schedule_id)
        return found

    async def list(self, *, owner: str | None = None, after: str | None = None, limit: int = PAGE) -> list[Schedule]:
        """`owner`'s schedules (all, with owner None) in id order, after the schedule id `after`."""
        return await self.store.list_schedules(
            owner=owner, after=session_key(owner, after) if after is not None else None, limit=limit
        )

    async def pause(self, schedule_id: str, *, owner: str | None = None) -> Schedule:
        found = await self.get(schedule_id, owner=owner)
        await self.store.set_schedule_paused(found.key, True)
        return await self.get(schedule_id, owner=owner)

    async def resume(self, schedule_id: str, *, owner: str | None = None) -> Schedule:
        """Resume a paused schedule: the slots while it was paused are not started."""
        found = await self.get(schedule_id, owner=owner)
        if found.paused:
            latest = found.latest_slot(self._clock())
            if latest > (found.last_slot or found.created_at):
                await self.store.advance_schedule(found.key, latest)
            await self.store.set_schedule_paused(found.key, False)
            self.wake()
        return await self.get(schedule_id, owner=owner)

    async def delete(self, schedule_id: str, *, owner: str | None = None) -> None:
        found = await self.get(schedule_id, owner=owner)
        await self.store.delete_schedule(found.key)

    # -- starting their runs --------------------------------------------------------------

    def wake(self) -> None:
        """Look at the schedules again now (one was added or resumed)."""
        if self._wake is not None:
            self._wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start each due slot's run, until `stop`."""
        with anyio.CancelScope() as self._scope:
            self._wake = anyio.Event()
            for schedule in self.declared:
                await self.declare(schedule)
            task_status.started()
            while True:
                earliest = await self.tick()
                until = self._clock() + timedelta(seconds=self.poll)
                with self._clock.move_on_at(until if earliest is None else min(earliest, until)):
                    await self._wake.wait()
                self._wake = anyio.Event()

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def tick(self) -> datetime | None:
        """Start the runs due now; the earliest slot to come (None: no schedule is active)."""
        earliest: datetime | None = None
        after: str | None = None
        while True:
            try:
                page = await self.store.list_schedules(after=after, limit=PAGE)
            except Exception:  # the store is away: try again at the next poll
                log.exception("could not read the schedules")
                return None
            for schedule in page:
                try:
                    upcoming = await self.fire_due(schedule)
                except Exception:
                    log.exception("could not start a scheduled run", schedule_id=schedule.schedule_id)
                    continue
                if upcoming is not None and (earliest is None or upcoming < earliest):
                    earliest = upcoming
            if len(page) < PAGE:
                return earliest
            after = page[-1].key

    async def fire_due(self, schedule: Schedule) -> datetime | None:
        """Start the runs of the schedule's due slots; its next slot (None: left to another engine)."""
        if schedule.paused:
            return None
        now = self._clock()
        handled = schedule.last_slot or schedule.created_at
        first = schedule.next_slot(handled)
        if first > now:
            return first
        cutoff = now - timedelta(seconds=self.grace)  # a slot at or before it is missed
        on_time: list[datetime] = []
        slot = schedule.next_slot(max(handled, cutoff))
        while slot <= now:
            on_time.append(slot)
            slot = schedule.next_slot(slot)
        due = on_time
        if first <= cutoff:  # slots were missed
            latest_missed = schedule.latest_slot(cutoff)
            if not on_time and schedule.missed == "catch_up_one":
                due = [latest_missed]  # one run stands for them all
            else:
                log.info("missed schedule slots skipped", schedule_id=schedule.schedule_id,
                         until=latest_missed.isoformat())
                await self.store.advance_schedule(schedule.key, latest_missed)
        for slot in due:
            if not await self._start_run(schedule, slot, slot_run_id(schedule, slot)):
                return None  # for an engine that has the agent
            await self.store.advance_schedule(schedule.key, slot)
        return schedule.next_slot(now)


__all__ = [
    "DEFAULT_GRACE", "DEFAULT_POLL", "MISSED_POLICIES", "SCHEDULE_KEY", "SLOT_KEY", "Schedule", "ScheduleExists",
    "ScheduleNotFound", "ScheduleStore", "Schedules", "check_schedule", "schedule_from_entry", "slot_run_id",
]
