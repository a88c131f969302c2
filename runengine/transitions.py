"""The allowed transitions of a run: one table of data, built from the event declarations.

`TRANSITIONS[(status, event_type)]` is the status after that event: the rows are the
`moves` each event class in `runengine.events` declares. A pair that is not in the
table is illegal. The reducer validates against this table, the
hypothesis strategies walk it to generate valid histories, the stores use it to
keep their run listings current, and `mermaid()` draws it for the docs.

`None` stands for "no run yet": the only event it accepts is `run.created`.
`UNKNOWN` stands for any event type this version does not know: a live run
accepts it (forward compatibility) and stays where it is; a finished run does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .events import KNOWN_EVENTS, UnknownEvent
from .status import TERMINAL_STATUSES, Status

#: Pseudo event type for events of a type this version does not know.
UNKNOWN = "(unknown)"


def _rows() -> list[tuple[Status | None, str, Status]]:
    """Every event class's `moves`, grouped by the status before (None first), in declaration order."""
    rows = [
        (before, UNKNOWN if cls is UnknownEvent else cls.type, after)
        for cls in (*KNOWN_EVENTS, UnknownEvent)
        for before, after in cls.moves.items()
    ]
    order = {status: i for i, status in enumerate((None, *Status))}
    return sorted(rows, key=lambda row: order[row[0]])  # stable: declaration order within a status


_ROWS = _rows()

TRANSITIONS: Mapping[tuple[Status | None, str], Status] = MappingProxyType(
    {(src, event_type): dst for src, event_type, dst in _ROWS}
)


def allowed(status: Status | None) -> tuple[str, ...]:
    """The event types (and possibly UNKNOWN) that `status` accepts, in table order."""
    return tuple(event_type for src, event_type, _ in _ROWS if src == status)


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
