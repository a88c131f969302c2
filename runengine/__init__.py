"""runengine: an event-sourced run engine for agent runs.

A run's events are appended to its log with gapless sequence numbers; its state is
what the pure reducer gets by folding that log. Storage and transport are adapters
(`runengine.adapters.*`) around this core.
"""

from importlib import metadata as _metadata
from pkgutil import extend_path as _extend_path

# The adapters are the repository's top-level adapters/ folder, installed as runengine.adapters.
# Run from a checkout's root (where ./runengine shadows the installed package), the installed
# copy's adapters are still found: the package's path spans every runengine/ on sys.path.
__path__ = _extend_path(__path__, __name__)

from .context import MessageStream, RunContext
from .engine import AgentFailed, HistoryMessage, RunEngine, SessionBusy, SessionEnded
from .errors import (
    AgentNotFound,
    ConcurrencyConflict,
    EngineNotStarted,
    IdempotencyKeyReused,
    InputTimedOut,
    InvalidRequest,
    InvalidRunState,
    InvalidTransition,
    ReplayDivergence,
    RunDeleted,
    RunEngineError,
    RunNotFound,
    SchemaVersionError,
    SessionExists,
    SessionNotFound,
    StepFailed,
    StoreError,
)
from .events import (
    Custom,
    ErrorInfo,
    Event,
    MessageCompleted,
    MessageDelta,
    MessageDiscarded,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunInput,
    RunInputTimedOut,
    RunRequeued,
    RunResumed,
    RunStarted,
    RunSuspended,
    RunWaitingForInput,
    StepCompleted,
    Thought,
    TimerFired,
    TimerStarted,
    ToolCall,
    ToolResult,
    UnknownEvent,
    Usage,
)
from .ports import EventStore, IdempotencyRecord, RunPage, RunSummary, SessionRecord
from .reducer import Fold, apply, fold
from .state import Message, RunState, ThoughtRecord, ToolCallRecord, UsageTotals
from .status import Status
from .stores import open_store
from .transitions import TRANSITIONS

# pyproject.toml holds the version; the installed metadata is read, not restated.
__version__ = _metadata.version("runengine")

__all__ = [
    "InputTimedOut", "MessageDiscarded", "ReplayDivergence", "RunInputTimedOut", "RunResumed", "RunSuspended",
    "StepCompleted", "StepFailed", "TimerFired", "TimerStarted",
    "AgentFailed", "AgentNotFound", "ConcurrencyConflict", "Custom", "EngineNotStarted", "ErrorInfo", "Event",
    "EventStore", "Fold", "HistoryMessage", "IdempotencyKeyReused", "IdempotencyRecord", "InvalidRequest", "InvalidRunState", "InvalidTransition",
    "Message", "MessageCompleted", "MessageDelta", "MessageStream", "RunCancelled", "RunCompleted",
    "RunContext", "RunCreated", "RunDeleted", "RunEngine", "RunEngineError", "RunFailed", "RunInput", "RunNotFound",
    "RunPage", "RunRequeued", "RunStarted", "RunState", "RunSummary", "RunWaitingForInput",
    "SchemaVersionError", "SessionBusy", "SessionEnded", "SessionExists", "SessionNotFound", "SessionRecord", "Status",
    "StoreError", "TRANSITIONS", "Thought", "ThoughtRecord", "ToolCall", "ToolCallRecord", "ToolResult",
    "UnknownEvent", "Usage", "UsageTotals", "apply", "fold", "open_store",
]
