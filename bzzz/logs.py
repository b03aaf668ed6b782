"""Logging: structlog, one event per line on stdout, with a syslog priority prefix for journald.

Under systemd (or whenever stdout is not a terminal) each line starts with `<N>` (sd-daemon(3)),
so `journalctl -p err` works; journald adds its own timestamps, so we add none there. Records
of other libraries (py-libp2p, zeroconf, PyGithub) go through the same renderer.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}

# Libraries that are chatty at INFO about things an operator of bzzz does not act on.
QUIET_LIBRARIES = (
    "libp2p",
    "multiaddr",
    "zeroconf",
    "github",
    "urllib3",
    "asyncio",
    "httpx",
    "httpcore",
    "openai",
)


def _prefixed(renderer: Processor, prefix: bool) -> Processor:
    def render(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        level = str(event_dict.get("level", "info"))
        line = str(renderer(logger, name, event_dict))
        if not prefix:
            return line
        tag = f"<{PRIORITIES.get(level, 6)}>"
        # Every physical line gets the tag, so a traceback keeps its priority in the journal.
        return "\n".join(tag + part for part in line.split("\n"))

    return render


class _DemoteLibraryErrors(logging.Filter):
    """py-libp2p logs routine dial and stream failures as errors; we log what they mean.

    Keeping them at warning keeps `journalctl -p err` for things an operator must act on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.name.startswith("libp2p"):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure(
    level: str,
    fmt: str,
    env: Mapping[str, str],
    stream: TextIO | None = None,
) -> None:
    stream = stream or sys.stdout
    interactive = stream.isatty() and "JOURNAL_STREAM" not in env
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
    ]
    if interactive:
        shared.append(structlog.processors.TimeStamper(fmt="iso", utc=False))
    renderer: Processor
    if fmt == "json":
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=interactive, exception_formatter=structlog.dev.plain_traceback
        )

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _prefixed(renderer, prefix=not interactive),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(_DemoteLibraryErrors())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    library_level = logging.DEBUG if level == "debug" else logging.WARNING
    for name in QUIET_LIBRARIES:
        library = logging.getLogger(name)
        # `import libp2p` clears its logger's handlers and stops propagation; undo that.
        library.handlers.clear()
        library.propagate = True
        library.setLevel(library_level)
    # Some library modules pin their own logger's level (py-libp2p's auto-connector: INFO).
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and name.startswith(
            tuple(f"{lib}." for lib in QUIET_LIBRARIES)
        ):
            logger.setLevel(logging.NOTSET)


def bind(**fields: Any) -> None:
    """Fields added to every following log line of this context."""
    structlog.contextvars.bind_contextvars(**fields)
