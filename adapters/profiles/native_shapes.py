"""The JSON shapes of the native API: a run, a run listing row, a session, a session's history.

`run_to_json` is the one RunState -> JSON mapping; other API profiles reuse it
(or pick fields from it) instead of writing their own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from runengine.engine import HistoryMessage
from runengine.events import ErrorInfo
from runengine.ports import RunSummary, SessionRecord, SessionRuns
from runengine.state import RunState
from runengine.wire import format_time


def _time(value: Any) -> str | None:
    return format_time(value) if value is not None else None


def error_to_json(error: ErrorInfo | None) -> dict[str, str] | None:
    return None if error is None else {"code": error.code, "message": error.message}


def run_to_json(state: RunState, *, waiting_for_agent: bool | None = False, waiting_for: str | None = None) -> dict[str, Any]:
    """The run object: what a client needs to know about a run, folded from its log, whether
    it waits for an engine that has its agent (`RunEngine.waiting_for_agent`), and what else a
    pending run waits for (`RunEngine.waiting_for`: "concurrency", "rate", "schedule")."""
    return {
        "run_id": state.run_id,
        "agent": state.agent,
        "status": state.status.value,
        "session_id": state.session_id,
        "input": state.input,
        "metadata": state.metadata,
        "mode": state.mode,
        "output": state.output,
        "error": error_to_json(state.error),
        "await_request": state.await_request,
        "cancel_reason": state.cancel_reason,
        "messages": [
            {"message_id": m.message_id, "role": m.role, "content": m.content} for m in state.messages
        ],
        "tool_calls": [
            {
                "call_id": c.call_id,
                "name": c.name,
                "arguments": c.arguments,
                "done": c.done,
                "output": c.output,
                "error": error_to_json(c.error),
            }
            for c in state.tool_calls
        ],
        "usage": {
            "input_tokens": state.usage.input_tokens,
            "output_tokens": state.usage.output_tokens,
            "cost": state.usage.cost,
        },
        "attempt": state.attempt,
        "start_at": _time(state.start_at),
        "sleeping_until": _time(state.sleeping_until),
        "input_expires_at": _time(state.input_expires_at),
        "suspended": state.suspended,
        "discarded_messages": list(state.discarded),
        "waiting_for_agent": waiting_for_agent,
        "parent_run_id": state.parent_run_id,
        "children": [
            {"run_id": c.run_id, "agent": c.agent, "status": c.status, "output": c.output, "error": error_to_json(c.error)}
            for c in state.children
        ],
        "signals": [{"signal_id": s.signal_id, "name": s.name, "taken": s.taken} for s in state.signals],
        "waiting_for": waiting_for,
        "priority": state.priority,
        "created_at": _time(state.created_at),
        "started_at": _time(state.started_at),
        "finished_at": _time(state.finished_at),
        "updated_at": _time(state.updated_at),
        "last_seq": state.last_seq,
        # A fork (POST /runs/{id}/fork): the run and the seq its log was copied up to.
        "forked_from": (
            {"run_id": state.forked_from, "seq": state.forked_at_seq} if state.forked_from is not None else None
        ),
    }


def summary_to_json(summary: RunSummary) -> dict[str, Any]:
    return {
        "run_id": summary.run_id,
        "agent": summary.agent,
        "status": summary.status.value,
        "session_id": summary.session_id,
        "created_at": _time(summary.created_at),
        "updated_at": _time(summary.updated_at),
        "last_seq": summary.last_seq,
    }


def history_message_to_json(message: HistoryMessage) -> dict[str, Any]:
    return {
        "role": message.role,
        "content": message.content,
        "run_id": message.run_id,
        "agent": message.agent,
        "at": _time(message.at),
    }


def session_status(record: SessionRecord, now: datetime) -> str:
    """`ended` (ended explicitly), `expired` (its expires_at has passed) or `active`: only an active
    session takes new runs."""
    if record.ended:
        return "ended"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    return "active"


def session_to_json(record: SessionRecord, runs: SessionRuns, *, now: datetime) -> dict[str, Any]:
    """The session object, with a count of the (visible) runs in it by status."""
    user_id = record.data.get("user_id")
    return {
        "session_id": record.session_id,
        "status": session_status(record, now),
        "user_id": user_id if isinstance(user_id, str) else None,
        "created_at": _time(record.created_at),
        "expires_at": _time(record.expires_at),
        "ended_at": _time(record.ended_at),
        "metadata": record.metadata,
        "runs": {
            "count": runs.count,
            "by_status": dict(sorted((status.value, n) for status, n in runs.by_status.items())),
        },
    }
