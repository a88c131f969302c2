"""The exceptions of the engine. Each has a stable `code` that transports map to their wire errors.

`ErrorInfo` is the same fact as recorded in a log (a failed run's or tool call's code and message)."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class ErrorInfo:
    """Why a run (or a tool call) failed: a stable machine code and a human message."""

    code: str
    message: str = ""


class RunEngineError(Exception):
    """Base of every error the engine raises on purpose."""

    code: str = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidTransition(RunEngineError):
    """An event that the run's current state does not allow; the state is unchanged."""

    code = "invalid_transition"

    def __init__(self, status: str | None, event_type: str, seq: int, reason: str) -> None:
        state = status if status is not None else "(no run)"
        super().__init__(
            f"cannot apply {event_type!r} (seq {seq}) in state {state!r}: {reason}",
            status=status,
            event_type=event_type,
            seq=seq,
        )
        self.status = status
        self.event_type = event_type
        self.seq = seq
        self.reason = reason


class ConcurrencyConflict(RunEngineError):
    """An append whose expected seq is stale: another writer got there first. Nothing was written."""

    code = "conflict"

    def __init__(self, run_id: str, expected_seq: int, actual_seq: int) -> None:
        super().__init__(
            f"run {run_id!r}: expected last seq {expected_seq}, the log is at {actual_seq}",
            run_id=run_id,
            expected_seq=expected_seq,
            actual_seq=actual_seq,
        )
        self.run_id = run_id
        self.expected_seq = expected_seq
        self.actual_seq = actual_seq


class RunNotFound(RunEngineError):
    code = "not_found"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id!r}", run_id=run_id)
        self.run_id = run_id


class RunDeleted(RunNotFound):
    """The run was deleted while its log was being read (a stream that had begun): what a stream
    tells its client last, instead of ending as if the run had no more events."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.message = f"run {run_id!r} was deleted"
        self.args = (self.message,)
        self.details = {"run_id": run_id, "deleted": True}

    def error_body(self) -> dict[str, object]:
        """The one error format, as the last frame of a stream carries it."""
        return {"error": {"code": self.code, "message": self.message, "details": dict(self.details)}}


class AgentNotFound(RunEngineError):
    code = "agent_not_found"

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        super().__init__(f"no agent named {name!r}", agent=name, known=sorted(known or []))
        self.name = name


class SessionNotFound(RunEngineError):
    code = "not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"no session {session_id!r}", session_id=session_id)
        self.session_id = session_id


class InvalidRunState(RunEngineError):
    """A command that the run's current status does not allow (e.g. input when not waiting)."""

    code = "conflict"

    def __init__(self, run_id: str, status: str, wanted: str) -> None:
        super().__init__(
            f"run {run_id!r} is {status!r}; {wanted}", run_id=run_id, status=status
        )
        self.run_id = run_id
        self.status = status


class InvalidRequest(RunEngineError):
    """Arguments that are malformed (wrong type, unknown mode, too large)."""

    code = "invalid_request"


class IdempotencyKeyReused(RunEngineError):
    """An Idempotency-Key sent again with a different request (IETF Idempotency-Key draft: 422)."""

    code = "idempotency_error"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"the Idempotency-Key {key!r} was used with a different request; use a new key for a new request",
            idempotency_key=key,
        )


class SessionExists(RunEngineError):
    """A session id that is taken (by whom is not said)."""

    code = "conflict"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} already exists", session_id=session_id)
        self.session_id = session_id


class EngineNotStarted(RunEngineError):
    code = "engine_not_started"

    def __init__(self) -> None:
        super().__init__("the engine is not running: use `async with engine:` first")


class StoreError(RunEngineError):
    code = "store_error"


class SchemaVersionError(StoreError):
    """The database was written by a newer schema than this version knows."""

    code = "schema_version"


class AgentFailed(Exception):
    """Raise from an agent to fail its run with a chosen error code (instead of `agent_error`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TooManyEvents(AgentFailed):
    """The run's log holds as many events as the engine allows (`max_events_per_run`): the agent's
    next event is refused, and the run ends failed with code `too_many_events`."""

    def __init__(self, run_id: str, limit: int) -> None:
        super().__init__("too_many_events", f"run {run_id!r} reached the limit of {limit} events")
        self.limit = limit


class EventTooLarge(AgentFailed):
    """An event larger than the engine allows (`max_event_bytes` of JSON): refused, nothing recorded.
    Uncaught, it ends the run failed with code `event_too_large`."""

    def __init__(self, event_type: str, size: int, limit: int) -> None:
        super().__init__(
            "event_too_large", f"a {event_type} event of {size} bytes of JSON is over the limit of {limit} bytes"
        )
        self.event_type = event_type
        self.size = size
        self.limit = limit


class ReplayDivergence(RunEngineError):
    """A resumed agent's calls do not match its recorded log (its code changed, or it is not
    deterministic). The run fails with this code; the log is left as it was."""

    code = "replay_divergence"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, **details)


class StepFailed(RunEngineError):
    """A `ctx.step` or `ctx.tool_call` function raised. Raised live and on replay alike, so a
    resumed agent takes the same path; `error` holds what was recorded."""

    code = "step_failed"

    def __init__(self, name: str, error_code: str, error_message: str) -> None:
        super().__init__(f"{name} failed: {error_message}", name=name, error_code=error_code)
        self.name = name
        self.error_code = error_code
        self.error_message = error_message


class InputTimedOut(RunEngineError):
    """`ctx.ask(..., timeout=...)` passed its deadline without input (recorded: also on replay)."""

    code = "input_timed_out"
