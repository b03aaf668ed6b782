"""Logging: structlog events, one per record, written where the operator reads them.

- Under systemd, when stdout is the journal ($JOURNAL_STREAM names it, systemd.exec(5)), each
  record is one journal entry sent over journald's native protocol, with fields to filter on:
  `journalctl -u bzzz BZZZ_EVENT=node_ready`, `PEER=12D3…`, `-p err`. Should journald refuse
  an entry, the record goes to stdout instead, with a `<N>` priority prefix (sd-daemon(3)).
- On a terminal: coloured console lines with local timestamps.
- Anywhere else (a pipe, a file): console lines, or JSON objects with `--log-format json`, each
  with an ISO 8601 UTC timestamp and the level.

Records of other libraries (py-libp2p, zeroconf, PyGithub, urllib3) get an event name of ours,
their text in `detail`, and the level they deserve here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
JOURNAL_SOCKET = "/run/systemd/journal/socket"

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

# Records of other libraries that we know, by the start of their text: our event, our level.
# py-libp2p's failed dials and upgrades are retried by our Dialer, which logs what they mean
# (peer_dial_failed, peer_unreachable); PyGithub's urllib3 retries are off, ours log github_retry.
KNOWN_RECORDS = {
    ("libp2p", "failed to upgrade security"): ("libp2p_upgrade_failed", logging.DEBUG),
    ("libp2p", "fail to upgrade mux"): ("libp2p_upgrade_failed", logging.DEBUG),
    ("libp2p", "failed to open tcp stream"): ("libp2p_dial_failed", logging.DEBUG),
    ("libp2p", "unexpected error opening tcp stream"): ("libp2p_dial_failed", logging.DEBUG),
    ("libp2p", "failed to establish replacement"): ("libp2p_dial_failed", logging.DEBUG),
    # A stream on a connection that is going away (a peer restarting): the caller copes.
    ("libp2p", "failed to open stream to peer"): ("libp2p_stream_failed", logging.DEBUG),
    ("libp2p", "multiselectclient handshake"): ("libp2p_stream_failed", logging.DEBUG),
    ("libp2p", "error sending identify response"): ("libp2p_stream_failed", logging.DEBUG),
    # A connection that closed while py-libp2p was still setting it up (both sides dialled).
    ("libp2p", "swarm::add_conn"): ("libp2p_connection_raced", logging.DEBUG),
    ("urllib3", "retrying ("): ("urllib3_retry", logging.DEBUG),
}

# Journal fields journald gives a meaning to, and ours: an event field never takes their name.
JOURNAL_NAMES = frozenset(
    {
        *("MESSAGE", "MESSAGE_ID", "PRIORITY", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "ERRNO"),
        *("INVOCATION_ID", "USER_INVOCATION_ID", "DOCUMENTATION", "TID", "UNIT", "USER_UNIT"),
        *("SYSLOG_FACILITY", "SYSLOG_IDENTIFIER", "SYSLOG_PID", "SYSLOG_TIMESTAMP", "SYSLOG_RAW"),
        *("BZZZ_EVENT", "PEER", "TASK"),
    }
)
NOT_FIELDS = frozenset(("event", "level", "timestamp", "exc_info", "exception", "stack"))
MAX_MESSAGE = 64 * 1024  # with every field at its bound, an entry still fits one datagram
MAX_FIELD = 4096
MAX_FIELDS = 64
MAX_NAME = 64  # journald drops longer field names


def library_record(logger: str, text: str, level: int) -> tuple[str, int]:
    """Our event name and level for a record of another library."""
    top = logger.split(".")[0]
    lowered = text.lstrip().lower()
    for (library, start), known in KNOWN_RECORDS.items():
        if top == library and lowered.startswith(start):
            return known
    if top == "libp2p":
        # Its errors are routine network churn; `journalctl -p err` is for what we must act on.
        level = min(level, logging.WARNING)
    parts = logger.split(".")
    name = "_".join(dict.fromkeys((parts[0], parts[-1])))  # libp2p.network.swarm: libp2p_swarm
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "library", level


class _LibraryRecords(logging.Filter):
    """Give another library's record our event name and level; drop it below our level."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "_logger"):  # structlog's own: already ours
            return True
        event, level = library_record(record.name, str(record.msg), record.levelno)
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.bzzz_event = event
        return level >= self.threshold


def _library_event(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is not None and not event_dict.get("_from_structlog"):
        event_dict["detail"] = event_dict["event"]
        event_dict["event"] = event_dict.pop("bzzz_event", None) or record.name  # ExtraAdder's
    return event_dict


# ---- journald -------------------------------------------------------------------------------


def _field_name(key: str) -> str:
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_0123456789")[:MAX_NAME] or "FIELD"
    if name in JOURNAL_NAMES or name.startswith(("OBJECT_", "COREDUMP_")):
        name = f"BZZZ_{name}"[:MAX_NAME]
    return name


def _bounded(value: Any, limit: int = MAX_FIELD) -> str:
    return (value if isinstance(value, str) else str(value))[:limit]


def journal_fields(
    event_dict: Mapping[str, Any], message: str, record: logging.LogRecord
) -> dict[str, str]:
    """The journal entry of one record: MESSAGE, PRIORITY, where it was logged, and each event
    field as an upper-case journal field (`peer` or `peer_id` as PEER, `task` as TASK)."""
    level = str(event_dict.get("level", "info"))
    fields = {
        "MESSAGE": _bounded(message, MAX_MESSAGE),
        "PRIORITY": str(PRIORITIES.get(level, 6)),
        "SYSLOG_IDENTIFIER": "bzzz",
        "BZZZ_EVENT": _bounded(event_dict.get("event", "")),
        "CODE_FILE": record.pathname,
        "CODE_LINE": str(record.lineno),
        "CODE_FUNC": record.funcName,
    }
    rest = {k: v for k, v in event_dict.items() if k not in NOT_FIELDS}
    for key, name in (("peer", "PEER"), ("peer_id", "PEER"), ("task", "TASK")):
        if key in rest and name not in fields:
            fields[name] = _bounded(rest.pop(key))
    for key, value in list(rest.items())[:MAX_FIELDS]:
        fields.setdefault(_field_name(str(key)), _bounded(value))
    return fields


def _encode(fields: Mapping[str, str]) -> bytes:
    """journald's native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL): KEY=value lines; a
    value with a newline as KEY, newline, its length (64-bit little endian), the value."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class _JournalHandler(logging.Handler):
    """One journal entry per record. Our own protocol code, not libsystemd's sd_journal_send:
    that adds its own CODE_FILE/LINE/FUNC (the binding's), so each would appear twice."""

    def __init__(self, path: str, fallback: logging.Handler) -> None:
        super().__init__()
        self.path = path
        self.fallback = fallback
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):  # room for a traceback, as libsystemd asks
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = json.loads(self.format(record))
        except Exception:
            self.handleError(record)
            return
        try:
            self.socket.sendto(_encode(entry), self.path)
        except OSError:
            # journald gone or the entry too big: the line still reaches stdout, the journal.
            self.fallback.handle(record)

    def flush(self) -> None:
        self.fallback.flush()

    def close(self) -> None:
        self.socket.close()
        super().close()


def _journal_entry(render: Processor) -> Processor:
    """Last processor of the journal's formatter: the entry's fields, as JSON."""

    def entry(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        record = event_dict.pop("_record")
        event_dict.pop("_from_structlog", None)
        message = str(render(logger, name, dict(event_dict)))  # renderers consume exc_info
        return json.dumps(journal_fields(event_dict, message, record))

    return entry


def is_journal(env: Mapping[str, str], stream: TextIO) -> bool:
    """True if `stream` is the journal: $JOURNAL_STREAM names its device and inode. A child
    that inherited the variable but writes elsewhere (a file, a pipe) is not."""
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(stream.fileno())
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


# ---- rendering ------------------------------------------------------------------------------


def _prefixed(renderer: Processor) -> Processor:
    def render(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        tag = f"<{PRIORITIES.get(str(event_dict.get('level', 'info')), 6)}>"
        line = str(renderer(logger, name, event_dict))
        # Every physical line gets the tag, so a traceback keeps its priority in the journal.
        return "\n".join(tag + part for part in line.split("\n"))

    return render


def _json() -> Processor:
    render = structlog.processors.JSONRenderer()

    def json_line(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        # The traceback as one string: no frame locals (a token may be one) in the logs.
        return str(
            render(logger, name, structlog.processors.format_exc_info(logger, name, event_dict))
        )

    return json_line


def _message(console: structlog.dev.ConsoleRenderer) -> Processor:
    """A journal entry's MESSAGE: the event and its fields (the level is PRIORITY)."""

    def message(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        event_dict.pop("level", None)
        return str(console(logger, name, event_dict))

    return message


def configure(
    level: str,
    fmt: str,
    env: Mapping[str, str],
    stream: TextIO | None = None,
    journal_socket: str = JOURNAL_SOCKET,
) -> None:
    stream = stream or sys.stdout
    logging.disable(logging.NOTSET)  # undo close()
    journal = is_journal(env, stream)
    interactive = not journal and stream.isatty()
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
    ]
    if fmt == "json" or not journal:  # journald stamps its entries and lines itself
        shared.append(structlog.processors.TimeStamper(fmt="iso", utc=not interactive))
    plain = structlog.dev.plain_traceback
    renderer: Processor
    if fmt == "json":
        renderer = _json()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=interactive, exception_formatter=plain)
        if journal:
            renderer = _prefixed(renderer)

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
    foreign = [*shared, _library_event]
    handler: logging.Handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=foreign,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    if journal and os.path.exists(journal_socket):
        message = (
            _json()
            if fmt == "json"
            else _message(
                structlog.dev.ConsoleRenderer(
                    colors=False, pad_event_to=0, exception_formatter=plain
                )
            )
        )
        handler = _JournalHandler(journal_socket, fallback=handler)
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=foreign, processors=[_journal_entry(message)]
            )
        )
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler.addFilter(_LibraryRecords(root.level))
    root.handlers[:] = [handler]
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


def close() -> None:
    """Write nothing more. The node calls it after node_stopped, its last line: a record that
    comes later (a worker thread, a library finishing) would read as if the node still ran."""
    logging.disable(logging.CRITICAL)
    for handler in logging.getLogger().handlers:
        handler.flush()


def bind(**fields: Any) -> None:
    """Fields added to every following log line of this context."""
    structlog.contextvars.bind_contextvars(**fields)
