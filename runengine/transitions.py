"""The allowed transitions of a run, declared once, as data.

`TRANSITIONS[(status, event_type)]` is the status after that event. A pair that is
not in the table is illegal. The reducer validates against this table, the
hypothesis strategies walk it to generate valid histories, the stores use it to
keep their run listings current, and `mermaid()` draws it for the docs.

`None` stands for "no run yet": the only event it accepts is `run.created`.
`UNKNOWN` stands for any event type this version does not know: a live run
accepts it (forward compatibility) and stays where it is; a finished run does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .status import TERMINAL_STATUSES, Status

#: Pseudo event type for events of a type this version does not know.
UNKNOWN = "(unknown)"

P, R, W = Status.PENDING, Status.RUNNING, Status.WAITING_FOR_INPUT
C, F, X = Status.COMPLETED, Status.FAILED, Status.CANCELLED

_ROWS: list[tuple[Status | None, str, Status]] = [
    (None, "run.created", P),
    # pending: waiting to be picked up by the engine or a worker
    (P, "run.started", R),
    (P, "run.failed", F),  # e.g. the agent vanished before it started
    (P, "run.cancelled", X),
    (P, UNKNOWN, P),
    # running: the agent is producing output
    (R, "message.delta", R),
    (R, "message.completed", R),
    (R, "message.discarded", R),  # a resumed run drops the partial message of a lost process
    (R, "thought", R),
    (R, "tool.call", R),
    (R, "tool.result", R),
    (R, "step.completed", R),
    (R, "timer.started", R),
    (R, "timer.fired", R),
    (R, "run.resumed", R),  # another engine takes the run up and replays its log
    (R, "run.suspended", R),  # a graceful stop: the run stays unfinished for the next engine
    (R, "usage", R),
    (R, "custom", R),
    (R, "run.waiting_for_input", W),
    (R, "run.requeued", P),  # its worker was lost; opt-in policy runs it again
    (R, "run.completed", C),
    (R, "run.failed", F),
    (R, "run.cancelled", X),
    (R, UNKNOWN, R),
    # waiting for input: only the input, or the end, moves it on
    (W, "run.input", R),
    (W, "run.input_timed_out", R),
    (W, "run.resumed", W),
    (W, "run.suspended", W),
    (W, "usage", W),
    (W, "custom", W),
    (W, "run.requeued", P),
    (W, "run.failed", F),  # timeout, worker lost
    (W, "run.cancelled", X),
    (W, UNKNOWN, W),
    # completed / failed / cancelled absorb nothing: no rows.
]

TRANSITIONS: Mapping[tuple[Status | None, str], Status] = MappingProxyType(
    {(src, event_type): dst for src, event_type, dst in _ROWS}
)

#: Every status a run can be in, plus None for "no run yet".
STATES: tuple[Status | None, ...] = (None, *Status)


def allowed(status: Status | None) -> tuple[str, ...]:
    """The event types (and possibly UNKNOWN) that `status` accepts, in table order."""
    return tuple(event_type for src, event_type, _ in _ROWS if src == status)


def next_status(status: Status | None, event_type: str, known: bool = True) -> Status | None:
    """The status after `event_type`, or None when the table does not allow it."""
    return TRANSITIONS.get((status, event_type if known else UNKNOWN))


def status_after(status: Status | None, event_types: list[str]) -> Status | None:
    """Fold a batch of event types through the table (used by stores for listings).

    Pairs the table does not know leave the status as it was: stores record what
    the engine wrote, the engine is the one that validates.
    """
    for event_type in event_types:
        nxt = TRANSITIONS.get((status, event_type))
        if nxt is None:
            nxt = TRANSITIONS.get((status, UNKNOWN))
        if nxt is not None:
            status = nxt
    return status


def is_terminal(status: Status | None) -> bool:
    return status in TERMINAL_STATUSES


def mermaid() -> str:
    """The table as a Mermaid state diagram (self-loops folded into one label per state)."""
    lines = ["stateDiagram-v2"]
    loops: dict[Status, list[str]] = {}
    for src, event_type, dst in _ROWS:
        if src is not None and src == dst:
            loops.setdefault(src, []).append(event_type)
            continue
        left = "[*]" if src is None else src.value
        lines.append(f"    {left} --> {dst.value}: {event_type}")
    for status, types in loops.items():
        lines.append(f"    {status.value} --> {status.value}: {', '.join(types)}")
    for status in Status:
        if status in TERMINAL_STATUSES:
            lines.append(f"    {status.value} --> [*]")
    return "\n".join(lines)
