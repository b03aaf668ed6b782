"""One author's chain on disk: append-only segment files of checksummed, length-prefixed records.

Record: `[u32 length][u32 crc32 of payload][payload]`, payload = `SignedEntry.to_record()`.
Segments are named after their first sequence number and roll over at `SEGMENT_BYTES`.

Opening scans every record: checksum, entry hash, and the chain (`seq` one more than the last,
`prev` the last entry's hash). An incomplete or damaged *last* record is a torn write from a
crash: a writable store cuts it off (and says so). Damage followed by good records is not a torn
write: it is reported as a problem with its sequence number, and the good records after it are
kept. The store itself is blocking; `AuditLog` and `Replica` call it from a writer thread.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bzzz.auditlog.entry import GENESIS, EntryError, SignedEntry
from bzzz.durable import fsync_dir

HEADER = struct.Struct(">II")
SEGMENT_BYTES = 4 * 1024 * 1024
MAX_RECORD_BYTES = 64 * 1024
PAYLOAD_START = b'{"entry":'  # every canonical record starts so: resynchronisation anchor


@dataclass(frozen=True)
class Problem:
    seq: int  # the entry concerned (for unreadable records: the one expected there)
    reason: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.reason}"


@dataclass
class _Segment:
    path: Path
    first_seq: int
    size: int  # bytes known to hold whole records


@dataclass
class ScanResult:
    head_seq: int = 0
    head_hash: str = GENESIS
    count: int = 0
    problems: list[Problem] = field(default_factory=list)
    tail_cut: int = 0  # bytes of an incomplete last record (cut when writable)


def _records(buf: bytes) -> Iterator[tuple[int, int, bytes | None]]:
    """(offset, end, payload) for each record; payload None for a damaged one."""
    pos = 0
    while pos < len(buf):
        good = _record_at(buf, pos)
        if good is not None:
            yield pos, good[0], good[1]
            pos = good[0]
            continue
        resync = _next_record(buf, pos + 1)
        yield pos, resync if resync is not None else len(buf), None
        if resync is None:
            return
        pos = resync


def _record_at(buf: bytes, pos: int) -> tuple[int, bytes] | None:
    if len(buf) - pos < HEADER.size:
        return None
    length, crc = HEADER.unpack_from(buf, pos)
    end = pos + HEADER.size + length
    if length > MAX_RECORD_BYTES or end > len(buf):
        return None
    payload = buf[pos + HEADER.size : end]
    return (end, payload) if zlib.crc32(payload) == crc else None


def _next_record(buf: bytes, start: int) -> int | None:
    """The next offset after damage where a whole, checksummed record begins."""
    at = buf.find(PAYLOAD_START, start + HEADER.size)
    while at != -1:
        if _record_at(buf, at - HEADER.size) is not None:
            return at - HEADER.size
        at = buf.find(PAYLOAD_START, at + 1)
    return None


class ChainStore:
    def __init__(self, directory: Path, author: str, writable: bool = True) -> None:
        self.directory = directory
        self.author = author
        self.writable = writable
        self._segments: list[_Segment] = []
        self._lock = threading.Lock()  # segment list: written by the writer, read by readers
        self._open: tuple[_Segment, BinaryIO] | None = None  # the segment being appended to
        self.scan = ScanResult()

    # ---- opening ---------------------------------------------------------------------------

    def open(self) -> ScanResult:
        if self.writable:
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        paths = sorted(self.directory.glob("*.seg")) if self.directory.exists() else []
        result = ScanResult()
        for index, path in enumerate(paths):
            last = index == len(paths) - 1
            buf = path.read_bytes()
            good_end = self._scan_segment(buf, result, last)
            if last and good_end < len(buf):
                result.tail_cut = len(buf) - good_end
                if self.writable:
                    with path.open("r+b") as handle:
                        handle.truncate(good_end)
                        os.fsync(handle.fileno())
            self._segments.append(_Segment(path, _first_seq(path), good_end if last else len(buf)))
        self.scan = result
        return result

    def _scan_segment(self, buf: bytes, result: ScanResult, last: bool) -> int:
        """Check each record; return where the whole records of this segment end."""
        good_end = 0
        for offset, end, payload in _records(buf):
            expected = result.head_seq + 1
            if payload is None:
                if last and end == len(buf):
                    return good_end  # nothing good after it: a torn write
                result.problems.append(Problem(expected, f"unreadable record at byte {offset}"))
                result.head_seq = expected  # skip it; the chain check resumes after it
                result.head_hash = ""
                good_end = end
                continue
            try:
                signed = SignedEntry.from_record(payload)
            except EntryError as exc:
                result.problems.append(Problem(expected, str(exc)))
                result.head_seq, result.head_hash, good_end = expected, "", end
                continue
            entry = signed.entry
            if entry.author != self.author:
                result.problems.append(Problem(entry.seq, f"author is {entry.author}"))
            elif entry.seq != expected:
                result.problems.append(Problem(entry.seq, f"expected seq {expected}"))
            elif result.head_hash and entry.prev != result.head_hash:
                result.problems.append(
                    Problem(entry.seq, "prev is not the hash of the entry before")
                )
            result.head_seq, result.head_hash = entry.seq, signed.hash
            result.count += 1
            good_end = end
        return good_end

    def refresh(self) -> None:
        """Read-only stores: take in what a writer appended since `open` (for following)."""
        assert not self.writable
        known = {segment.path for segment in self._segments}
        for path in sorted(self.directory.glob("*.seg")):
            if path not in known:
                self._segments.append(_Segment(path, _first_seq(path), 0))
        for segment in self._segments:
            segment.size = segment.path.stat().st_size

    # ---- writing (writer thread) -----------------------------------------------------------

    def append(self, entries: list[SignedEntry], sync: bool) -> None:
        """Write whole records; with `sync`, return only once they are on stable storage."""
        assert self.writable
        for signed in entries:
            payload = signed.to_record()
            record = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
            segment = self._segment_for(signed.entry.seq, len(record))
            handle = self._handle(segment)
            handle.write(record)
            with self._lock:
                segment.size += len(record)
        if self._open is not None:
            handle = self._open[1]
            handle.flush()
            if sync:
                os.fsync(handle.fileno())

    def _segment_for(self, seq: int, size: int) -> _Segment:
        current = self._segments[-1] if self._segments else None
        if current is None or (current.size + size > SEGMENT_BYTES and current.size > 0):
            path = self.directory / f"{seq:020d}.seg"
            path.touch(mode=0o640)
            fsync_dir(self.directory)
            current = _Segment(path, seq, 0)
            with self._lock:
                self._segments.append(current)
        return current

    def _handle(self, segment: _Segment) -> BinaryIO:
        if self._open is None or self._open[0] is not segment:
            self.close()
            self._open = (segment, segment.path.open("ab"))
        return self._open[1]

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    # ---- reading (any thread) --------------------------------------------------------------

    def read(self, from_seq: int, limit: int) -> list[SignedEntry]:
        """Up to `limit` entries from `from_seq` on (fewer at the head; none past it)."""
        with self._lock:
            segments = [(s.path, s.first_seq, s.size) for s in self._segments]
        out: list[SignedEntry] = []
        for index, (path, _first_seq, size) in enumerate(segments):
            next_first = segments[index + 1][1] if index + 1 < len(segments) else None
            if next_first is not None and next_first <= from_seq:
                continue
            with path.open("rb") as handle:
                buf = handle.read(size)
            for _offset, _end, payload in _records(buf):
                if payload is None:
                    continue
                try:
                    signed = SignedEntry.from_record(payload)
                except EntryError:
                    continue
                if signed.entry.seq >= from_seq:
                    out.append(signed)
                    if len(out) >= limit:
                        return out
        return out


def _first_seq(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        return 0
