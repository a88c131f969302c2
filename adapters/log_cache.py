"""What a single-writer store committed itself, kept in memory so that reads of it cost no
database call: run summaries, the runs it created that have no snapshot (short runs never get
one), and the committed tail of each recently written run (the many subscribers of a live run
re-reading after each wake-up). Only a store that is the sole writer of its database may trust it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence

from runengine.events import Event
from runengine.ports import RunSummary

#: Run summaries (and snapshot-free runs) kept.
SUMMARIES = 8192

#: A committed event in the tail: the event as a read gives it, or a call that makes it (decoding
#: its stored row). Most tails are never read (a run nobody follows), so a store may defer the
#: decoding to the first read, which keeps the decoded event in its place.
TailEvent = Event | Callable[[], Event]


class _Tail:
    """The committed tail of one run's log: events first_seq .. first_seq+len-1."""

    __slots__ = ("first_seq", "events", "keep")

    def __init__(self, first_seq: int, keep: int) -> None:
        self.first_seq = first_seq
        self.events: list[TailEvent] = []
        self.keep = keep

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.events) - 1

    def trim(self) -> None:
        """Down to the last `keep` events (called now and then, not on every append)."""
        drop = len(self.events) - self.keep
        del self.events[:drop]
        self.first_seq += drop


class CommittedCache:
    """Least recently written entries go first: `tail_events` per run (up to twice that between
    trims) for `tail_runs` runs (0: no tails), SUMMARIES summaries."""

    def __init__(self, tail_events: int, tail_runs: int) -> None:
        self.tail_events = max(1, tail_events)
        self.tail_runs = max(0, tail_runs)
        self._summaries: collections.OrderedDict[str, RunSummary] = collections.OrderedDict()
        self._snapshot_free: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._tails: collections.OrderedDict[str, _Tail] = collections.OrderedDict()

    def summary(self, run_id: str) -> RunSummary | None:
        return self._summaries.get(run_id)

    def snapshot_free(self, run_id: str) -> bool:
        """Whether the run is known to have no snapshot."""
        return run_id in self._snapshot_free

    def set_snapshot_free(self, run_id: str, free: bool) -> None:
        if not free:
            self._snapshot_free.pop(run_id, None)
            return
        self._snapshot_free[run_id] = None
        if len(self._snapshot_free) > SUMMARIES:
            self._snapshot_free.popitem(last=False)

    def read(self, run_id: str, after_seq: int, limit: int) -> list[Event] | None:
        """The committed events after `after_seq` as a read gives them, or None when not kept."""
        tail = self._tails.get(run_id)
        if tail is None:
            return None
        if after_seq >= tail.last_seq:
            return []
        if after_seq + 1 < tail.first_seq:
            return None
        start = after_seq + 1 - tail.first_seq
        kept = tail.events
        found = kept[start : start + limit]
        for index, event in enumerate(found):
            if not isinstance(event, Event):  # not decoded yet: now, once
                found[index] = kept[start + index] = event()
        return found  # type: ignore[return-value]  # every one decoded above

    def committed(
        self,
        *,
        found: Mapping[str, int],
        summaries: Iterable[RunSummary],
        snapshot_free: Iterable[str],
        snapshots: Iterable[str],
        tails: Iterable[tuple[str, int, Sequence[TailEvent]]],
        deleted: Iterable[str],
    ) -> None:
        """What one commit did: the last seq it `found` of each run it appended to (a cached run
        found otherwise was written by someone else: forgotten), the `summaries` it wrote, the runs
        it created `snapshot_free`, the runs it wrote `snapshots` of, the `tails` it appended (run,
        first seq, events as a read gives them, or calls that make them) and the runs it `deleted`.
        (One loop per kind, no call per run: a commit of many runs' steps is answered on the loop.)"""
        kept = self._summaries
        for run_id, seq in found.items():
            cached = kept.get(run_id)
            if cached is not None and cached.last_seq != seq:
                self.forget(run_id)
        for summary in summaries:
            kept[summary.run_id] = summary
            kept.move_to_end(summary.run_id)
        while len(kept) > SUMMARIES:
            kept.popitem(last=False)
        for run_id in snapshot_free:
            self.set_snapshot_free(run_id, True)
        for run_id in snapshots:
            self.set_snapshot_free(run_id, False)
        tails_kept = self._tails
        for run_id, first_seq, events in tails:
            # events first_seq .. committed: exactly what a read would give back (or makes it)
            tail = tails_kept.get(run_id)
            if tail is None or tail.first_seq + len(tail.events) != first_seq:
                if not self.tail_runs:
                    continue
                tail = tails_kept[run_id] = _Tail(first_seq, self.tail_events)
                if len(tails_kept) > self.tail_runs:
                    tails_kept.popitem(last=False)
            tails_kept.move_to_end(run_id)
            tail.events.extend(events)
            if len(tail.events) > 2 * tail.keep:
                tail.trim()
        for run_id in deleted:
            self.forget(run_id)

    def forget(self, run_id: str) -> None:
        self._summaries.pop(run_id, None)
        self._snapshot_free.pop(run_id, None)
        self._tails.pop(run_id, None)

    def clear(self) -> None:
        self._summaries.clear()
        self._snapshot_free.clear()
        self._tails.clear()


__all__ = ["CommittedCache", "SUMMARIES", "TailEvent"]
