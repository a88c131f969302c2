"""The statuses a run can be in."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING_FOR_INPUT = "waiting_for_input"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def settled(self) -> bool:
        """Whether the run rests here until someone acts: ended, or waiting for input (what
        `RunEngine.wait` waits for; a store's settled wake-up fires only at these)."""
        return self in SETTLED_STATUSES


TERMINAL_STATUSES: frozenset[Status] = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CANCELLED}
)
SETTLED_STATUSES: frozenset[Status] = TERMINAL_STATUSES | {Status.WAITING_FOR_INPUT}
