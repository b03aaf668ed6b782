"""What the web view reads: the node's own answers (the control socket's very commands) and its
files (the agents' transcripts, the audit log), each read bounded and off the event loop.

The readers here are blocking; the server calls them with `asyncio.to_thread`, through a short
cache, so that twenty open pages do not read the same files twenty times.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bzzz.auditlog import reader
from bzzz.auditlog.entry import EntryError, SignedEntry, Verifier
from bzzz.auditlog.segments import _records
from bzzz.control import Command

T = TypeVar("T")

TRANSCRIPT_BYTES = 1024 * 1024  # the newest MiB of a transcript is shown
TRANSCRIPT_ENTRIES = 500
AUDIT_LIMIT = 500  # entries an audit query may ask for
AUTHOR_BYTES = 1024 * 1024  # read from the end of one author's log, for one query
ALL_AUTHORS_BYTES = 4 * 1024 * 1024  # shared by every author when none is named
MAX_AUTHORS = 128
PROBLEMS_SHOWN = 200
FORKS_BYTES = 256 * 1024  # the newest fork evidence shown
FORKS_SHOWN = 16

_KEY = re.compile(r"^([\w.-]{1,100}/[\w.-]{1,100})#([0-9]{1,9})$")


@dataclass(frozen=True)
class Sources:
    """What the view reads from its node. `commands` is the control socket's own table
    (status, peers, tasks, discuss), so the page, the API and the CLI show the same data."""

    commands: Mapping[str, Command]
    github: Callable[[], dict[str, Any] | None]
    hops: Callable[[str], int | None]  # an Antennae message's hop count, if still known
    state_dir: Path
    verify: Verifier
    agent_id: str = ""

    async def ask(self, command: str, args: dict[str, Any] | None = None) -> Any:
        result = self.commands[command](args or {})
        if inspect.isawaitable(result):
            result = await result
        return result

    @property
    def log_root(self) -> Path:
        return reader.log_root(self.state_dir)

    @property
    def transcripts(self) -> Path:
        return self.state_dir / "transcripts"


def task_key(text: str) -> str | None:
    """`owner/repo#n` if `text` is one (it names files and is matched against peers' data)."""
    return text if _KEY.match(text) else None


class Cache:
    """Answers kept for `ttl` seconds, computed once however many ask at the same moment."""

    def __init__(self, ttl: float, size: int = 32) -> None:
        self._ttl = ttl
        self._size = size
        self._answers: dict[Hashable, tuple[float, Any]] = {}
        self._lock = asyncio.Lock()
        self.computed = 0

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            kept = self._answers.get(key)
            if kept is not None and time.monotonic() - kept[0] < self._ttl:
                return kept[1]  # type: ignore[no-any-return]
            value = await compute()
            self.computed += 1
            if len(self._answers) >= self._size:
                self._answers.clear()
            self._answers[key] = (time.monotonic(), value)
            return value


# ---- transcripts ------------------------------------------------------------------------------


def transcript(directory: Path, key: str) -> dict[str, Any] | None:
    """The newest transcript of task `key` in `directory` (the newest MiB of it), or None."""
    repository, _, number = key.rpartition("#")
    prefix = f"{repository.replace('/', '__')}#{number}-"
    try:
        with os.scandir(directory) as listing:
            found = [
                (entry.stat().st_mtime, entry.path)
                for entry in listing
                if entry.name.startswith(prefix) and entry.name.endswith(".jsonl")
            ]
    except OSError:
        return None
    if not found:
        return None
    path = Path(max(found)[1])
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - TRANSCRIPT_BYTES)
        handle.seek(start)
        lines = handle.read().split(b"\n")
    if start > 0:
        lines = lines[1:]  # cut mid-line
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return {
        "file": path.name,
        "bytes": size,
        "truncated": start > 0 or len(entries) > TRANSCRIPT_ENTRIES,
        "entries": entries[-TRANSCRIPT_ENTRIES:],
    }


# ---- the audit log ----------------------------------------------------------------------------


def audit_tail(root: Path, author: str, type_: str, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` entries (of `type_`, if given) of `author`'s log, or of every log,
    newest first. Only the end of each log is read (its newest MiB, shared when every author
    is asked): a tail, not a search."""
    authors = reader.authors(root)
    if author:
        authors = [a for a in authors if a == author or (len(author) >= 6 and a.endswith(author))]
    authors = authors[:MAX_AUTHORS]
    if not authors:
        return []
    shared = max(64 * 1024, ALL_AUTHORS_BYTES // len(authors))
    budget = AUTHOR_BYTES if len(authors) == 1 else shared
    rows: list[dict[str, Any]] = []
    for name in authors:
        rows += _newest(root / name, type_, limit, budget)
    rows.sort(key=lambda r: (r["timestamp"], r["seq"]), reverse=True)
    return rows[:limit]


def _newest(directory: Path, type_: str, limit: int, budget: int) -> list[dict[str, Any]]:
    """Read segments from the newest back, each from its end, until `limit` entries match or
    `budget` bytes were read. A cut first record is skipped (the record format resynchronises)."""
    try:
        segments = sorted(directory.glob("*.seg"), reverse=True)
    except OSError:
        return []
    found: list[dict[str, Any]] = []
    for path in segments:
        if budget <= 0 or len(found) >= limit:
            break
        try:
            with path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                start = max(0, size - budget)
                handle.seek(start)
                buf = handle.read(size - start)
        except OSError:
            continue
        budget -= len(buf)
        matched = []
        for _offset, _end, payload in _records(buf):
            if payload is None:
                continue  # the cut first record, a torn last one, or damage (verify says)
            try:
                signed = SignedEntry.from_record(payload)
            except EntryError:
                continue
            if not type_ or signed.entry.type == type_:
                matched.append(_row(signed))
        found += matched[::-1]  # newest first
    return found[:limit]


def _row(signed: SignedEntry) -> dict[str, Any]:
    entry = signed.entry
    return {
        "author": entry.author,
        "seq": entry.seq,
        "timestamp": entry.timestamp,
        "type": entry.type,
        "data": entry.data,
        "hash": signed.hash,
    }


def verification(root: Path, verify: Verifier) -> dict[str, Any]:
    """`bzzz log verify --json`, and the fork evidence: every chain, hash and signature."""
    started = time.monotonic()
    heads, findings = reader.verify(root, verify)
    return {
        "ok": not findings,
        "heads": heads,
        "problems": [
            {"author": f.author, "seq": f.problem.seq, "reason": f.problem.reason}
            for f in findings[:PROBLEMS_SHOWN]
        ],
        "problems_total": len(findings),
        "forks": fork_evidence(root),
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "took_s": round(time.monotonic() - started, 3),
    }


def fork_evidence(root: Path) -> list[dict[str, Any]]:
    """The newest recorded forks: both entries signed for the same place in a chain."""
    path = root / reader.FORKS_FILE
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - FORKS_BYTES)
            handle.seek(start)
            lines = handle.read().split(b"\n")
    except OSError:
        return []
    if start > 0:
        lines = lines[1:]
    forks = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            forks.append(record)
    return forks[-FORKS_SHOWN:][::-1]
