"""Appending to a chain without blocking the event loop, and the node's own signed log.

`ChainWriter` owns one `ChainStore` and a thread that does all of its disk I/O. Appends queue
up; the thread writes everything queued in one go and (per the fsync policy) syncs once for the
lot: group commit. `always`: an append returns only after its fsync; appends that arrive while
one is being synced share the next fsync. `batch`: the writer waits `batch_ms` to gather more
first. Either way an acknowledged append is on disk; `batch` trades latency for throughput.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from bzzz.auditlog.entry import GENESIS, Entry, SignedEntry, Signer, check_size, fit
from bzzz.auditlog.segments import ChainStore, ScanResult

log = structlog.get_logger(__name__)

FsyncPolicy = Literal["always", "batch"]


class AuditLogError(RuntimeError):
    """The log cannot take appends (its disk failed); nothing more is acknowledged."""


class ChainWriter:
    """Appends to one chain. Its disk I/O runs in `executor` (one writer thread of its own by
    default; replicas share a small pool, since each writer has at most one job at a time)."""

    def __init__(
        self,
        store: ChainStore,
        fsync: FsyncPolicy = "always",
        batch_ms: int = 5,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.store = store
        self._fsync = fsync
        self._batch_s = batch_ms / 1000
        self._pending: list[tuple[SignedEntry, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._owns_thread = executor is None
        self._thread = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="auditlog")
        self._task: asyncio.Task[None] | None = None
        self.failed: BaseException | None = None
        self.head_seq = 0
        self.head_hash = ""

    async def start(self) -> ScanResult:
        scan = await asyncio.get_running_loop().run_in_executor(self._thread, self.store.open)
        self.head_seq, self.head_hash = scan.head_seq, scan.head_hash
        if scan.tail_cut:
            log.warning(
                "auditlog_tail_cut",
                author=self.store.author,
                bytes=scan.tail_cut,
                head_seq=scan.head_seq,
            )
        for problem in scan.problems:
            log.error(
                "auditlog_damaged", author=self.store.author, seq=problem.seq, reason=problem.reason
            )
        self._task = asyncio.create_task(self._write_loop(), name=f"auditlog-{self.store.author}")
        return scan

    async def stop(self) -> None:
        """Write what is queued, then stop the writer and close the files."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        await asyncio.get_running_loop().run_in_executor(self._thread, self.store.close)
        if self._owns_thread:
            self._thread.shutdown(wait=True)

    def advance(self, signed: SignedEntry) -> asyncio.Future[None]:
        """Queue an entry that extends the head; the future resolves once it is durable."""
        if self.failed is not None:
            raise AuditLogError(f"audit log unavailable: {self.failed}")
        self.head_seq, self.head_hash = signed.entry.seq, signed.hash
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((signed, future))
        self._wake.set()
        return future

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._fsync == "batch" and not self._stopping:
                await asyncio.sleep(self._batch_s)
            batch, self._pending = self._pending, []
            entries = [signed for signed, _ in batch]
            try:
                await loop.run_in_executor(self._thread, self.store.append, entries, True)
            except OSError as exc:
                self._fail(exc, batch)
                return
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    def _fail(self, exc: OSError, batch: list[tuple[SignedEntry, asyncio.Future[None]]]) -> None:
        self.failed = exc
        log.error("auditlog_write_failed", author=self.store.author, error=str(exc))
        for _, future in batch + self._pending:
            if not future.done():
                future.set_exception(AuditLogError(f"audit log unavailable: {exc}"))
        self._pending = []

    async def read(self, from_seq: int, limit: int) -> list[SignedEntry]:
        """Entries from `from_seq` on (read in a worker thread, not the writer's)."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self.store.read, from_seq, limit
        )


class AuditLog:
    """The node's own log: single writer, every entry signed with the node's key."""

    def __init__(self, writer: ChainWriter, author: str, sign: Signer) -> None:
        self.writer = writer
        self.author = author
        self._sign = sign
        self._head: SignedEntry | None = None

    async def start(self) -> ScanResult:
        scan = await self.writer.start()
        if scan.head_seq:
            newest = await self.writer.read(scan.head_seq, 1)
            self._head = newest[0] if newest else None
        return scan

    async def stop(self) -> None:
        await self.writer.stop()

    async def append(self, type: str, data: dict[str, Any]) -> SignedEntry:
        """Add an entry; return once it is on disk (per the fsync policy)."""
        signed, durable = self.append_nowait(type, data)
        await durable
        return signed

    def append_nowait(
        self, type: str, data: dict[str, Any]
    ) -> tuple[SignedEntry, asyncio.Future[None]]:
        """Chain and queue an entry now, so its place follows the order of events; the future
        tells when it is on disk. `data` is cut to fit (see `fit`): appending never fails on
        what it is given."""
        entry = Entry(
            seq=self.writer.head_seq + 1,
            timestamp=datetime.now(UTC).isoformat(),
            author=self.author,
            type=type[:64],
            data=fit(data),
            prev=self.writer.head_hash or GENESIS,
        )
        check_size(entry)
        signed = SignedEntry.create(entry, self._sign)
        durable = self.writer.advance(signed)
        self._head = signed
        return signed, durable

    @property
    def head(self) -> SignedEntry | None:
        """The newest entry: capability broadcasts announce its (seq, hash, signature)."""
        return self._head
