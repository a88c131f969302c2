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

# The public surface: what an embedding program needs (the engine, the context its agents get,
# the state and events it reads, the errors it catches). Everything else is imported from its
# own module (runengine.events, runengine.errors, runengine.ports, ...).
from .context import RunContext
from .engine import RunEngine, SessionBusy
from .errors import (
    AgentNotFound,
    InvalidRequest,
    InvalidRunState,
    InvalidTransition,
    RunEngineError,
    RunNotFound,
    SessionNotFound,
    StepFailed,
)
from .events import (
    ErrorInfo,
    Event,
    MessageCompleted,
    MessageDelta,
    RunCompleted,
    RunCreated,
    RunFailed,
    Thought,
    ToolCall,
    ToolResult,
)
from .reducer import fold
from .state import RunState
from .status import Status
from .stores import open_store

# pyproject.toml holds the version; the installed metadata is read, not restated.
__version__ = _metadata.version("runengine")

__all__ = [
    "RunEngine", "RunContext", "RunState", "Status", "Event", "fold", "open_store",
    "RunCreated", "RunCompleted", "RunFailed", "MessageDelta", "MessageCompleted", "ToolCall", "ToolResult",
    "Thought", "ErrorInfo",
    "RunEngineError", "InvalidRequest", "InvalidRunState", "InvalidTransition", "RunNotFound", "AgentNotFound",
    "SessionNotFound", "SessionBusy", "StepFailed",
]
