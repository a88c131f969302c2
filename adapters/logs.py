"""Process logging for `runengine serve` / `worker`: one format for runengine's, uvicorn's and
every library's lines, as coloured console lines or JSON (one object per line).

    configure_logging("info", "json")

Lines logged while a run executes carry its `run_id` and `agent` (the driver binds them with
structlog's contextvars); an exception's traceback is part of the line (`exception` key in JSON).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
import structlog.contextvars
import structlog.stdlib
import structlog.tracebacks

LogFormat = Literal["console", "json"]
LOG_FORMATS: tuple[str, ...] = ("console", "json")


def _capture_exc_info(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """`exc_info=True` means the exception being handled now: take it now, the line is formatted later."""
    if event_dict.get("exc_info") is True:
        event_dict["exc_info"] = sys.exc_info()
    return event_dict


def configure_logging(level: str = "info", log_format: LogFormat = "console", *, log_locals: bool = False) -> None:
    """Route structlog and the standard library's logging through one handler on stderr.

    A traceback shows no frame's local variables unless `log_locals`: in the engine's frames
    they hold a run's whole state, its input and metadata, which carry secrets and personal
    data that logs must not. `log_locals` is for debugging on one's own machine."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {LOG_FORMATS}")
    threshold = getattr(logging, level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        tail: list[Any] = [
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=log_locals))
        ]
    else:
        tty = sys.stderr.isatty()
        renderer = structlog.dev.ConsoleRenderer(
            colors=tty,
            # A terminal gets a framed traceback (with rich installed); a file or a pipe the plain one, grep-able.
            exception_formatter=(
                structlog.dev.RichTracebackFormatter(show_locals=log_locals)
                if tty and structlog.dev.rich is not None
                else structlog.dev.plain_traceback
            ),
        )
        tail = []
    structlog.configure(
        processors=[*shared, _capture_exc_info, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,  # uvicorn's, asyncpg's ... lines
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # uvicorn builds each access line (the client's address, the path) whenever its logger has
    # a handler, before the level drops it: above INFO, where none is shown, it has none.
    logging.getLogger("uvicorn.access").propagate = threshold <= logging.INFO


__all__ = ["LOG_FORMATS", "LogFormat", "configure_logging"]
