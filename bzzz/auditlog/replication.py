"""Replicas of other nodes' logs, pulled over the libp2p stream protocol `/bzzz/log/1.0.0`.

Protocol (one JSON object per line, either way): the asker sends
`{"author": <peer id>, "from": <seq>, "limit": <n>}`; the server answers with the records of
that author's chain from `from` on (its own log, or a replica it holds), at most `limit`, then
`{"end": true, "head": <seq>}`. The asker may ask again on the same stream.

A pull starts at the newest entry we already hold, so every pull re-checks it: an author who
rewrote history (a valid signature over a different entry for a sequence number we hold) is a
fork. Both entries are kept as evidence in `forks.jsonl`, the fork is logged as an error and
shown by `bzzz status` and `bzzz log verify`, and that author is no longer replicated.
Everything else a peer sends is verified (hash, author's signature, sequence, chain) before it
is stored; a refusal is counted by reason. Lines are bounded (`MAX_LINE`), parsed by typed models
(JSON depth and numbers bounded), and any failure of one stream ends that stream, counted.

Crowds are bounded: an author is replicated only once it has been a connected peer for a while
(or is in `allow_peers`), at most `max_replicas` at once (the replica of the author heard from
least recently is closed to make room; its files stay), and every replica's writes share one
small pool of threads.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bzzz.auditlog.entry import GENESIS, MAX_ENTRY_BYTES, EntryError, SignedEntry, Verifier
from bzzz.auditlog.log import AuditLog, ChainWriter
from bzzz.auditlog.reader import FORKS_FILE
from bzzz.auditlog.segments import ChainStore
from bzzz.p2p import GuestStopped, Host, Stream, StreamError

log = structlog.get_logger(__name__)

PROTOCOL = "/bzzz/log/1.0.0"
BATCH = 256
# A record is an entry (at most MAX_ENTRY_BYTES) plus its hash and signature.
MAX_LINE = MAX_ENTRY_BYTES + 1024
READ_TIMEOUT = 10.0
WRITER_THREADS = 2
STATUS_REPLICAS = 64  # replicas listed in `bzzz status` (all are counted)

_Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
_Author = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[1-9A-HJ-NP-Za-km-z]+$")]


class _Ask(BaseModel):
    """A request line: `{"author", "from", "limit"}`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    author: _Author
    start: _Seq = Field(alias="from")
    limit: Annotated[int, Field(ge=1, le=10**6)] = BATCH


class _End(BaseModel):
    """The last line of an answer: `{"end": true, "head": n}` or `{"error": "..."}`."""

    model_config = ConfigDict(extra="ignore")
    end: bool = False
    head: _Seq = 0
    error: Annotated[str, Field(max_length=1024)] | None = None


class Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Fork:
    author: str
    seq: int
    ours: str  # hash we hold
    theirs: str  # hash the author also signed
    peer: str


class Replicator:
    def __init__(
        self,
        host: Host,
        own: AuditLog,
        root: Path,
        verify: Verifier,
        eligible: Callable[[str], bool] = lambda author: True,
        max_replicas: int = 64,
    ) -> None:
        self._host = host
        self._own = own
        self._root = root
        self._verify = verify
        self._eligible = eligible  # may we replicate this author (connected for a while)?
        self._max = max_replicas
        self._pool = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="replicas")
        self._replicas: dict[str, ChainWriter] = {}
        self._heard: dict[str, float] = {}  # author -> when it last announced a head
        self._wanted: dict[str, tuple[str, int]] = {}  # author -> (peer, announced seq)
        self._wake = asyncio.Event()
        self.refused: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()  # pulls and serves that failed, evictions
        self.forks: list[Fork] = []

    # ---- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the replicas on disk (the most recently written, up to the limit) and the fork
        evidence found so far."""
        directories = [p for p in self._root.iterdir() if p.is_dir() and p.name != self._own.author]
        directories.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for directory in directories[: self._max]:
            await self._replica(directory.name)
        forks = self._root / FORKS_FILE
        if forks.exists():
            for line in forks.read_text().splitlines():
                record = json.loads(line)
                self.forks.append(
                    Fork(
                        record["author"],
                        record["seq"],
                        record["ours"]["hash"],
                        record["theirs"]["hash"],
                        record["peer"],
                    )
                )

    async def stop(self) -> None:
        for writer in self._replicas.values():
            await writer.stop()
        self._pool.shutdown(wait=True)

    async def _replica(self, author: str) -> ChainWriter:
        writer = self._replicas.get(author)
        if writer is None:
            if len(self._replicas) >= self._max:
                await self._evict()
            writer = ChainWriter(
                ChainStore(self._root / author, author), fsync="batch", executor=self._pool
            )
            await writer.start()
            self._replicas[author] = writer
        return writer

    async def _evict(self) -> None:
        """Close the replica of the author heard from least recently (its files stay)."""
        author = min(self._replicas, key=lambda a: self._heard.get(a, 0.0))
        writer = self._replicas.pop(author)
        self._heard.pop(author, None)
        self.errors["evicted"] += 1
        log.info("auditlog_replica_closed", author=author, reason="max_replicas")
        await writer.stop()

    def forked(self, author: str) -> bool:
        return any(fork.author == author for fork in self.forks)

    # ---- serving ---------------------------------------------------------------------------

    async def serve(self, stream: Stream) -> None:
        """Answer requests on one stream until the asker closes it (or breaks the protocol)."""
        try:
            while True:
                async with asyncio.timeout(READ_TIMEOUT):  # never wait_for: see _ask
                    line = await stream.readline(MAX_LINE)
                if not line and stream.at_end:
                    return
                try:
                    ask = _Ask.model_validate_json(line)
                except ValidationError as exc:
                    problem = exc.errors(include_url=False, include_input=False)[0]
                    await stream.write(_line({"error": f"bad request: {problem['msg']}"}))
                    return
                author, limit = ask.author, min(ask.limit, BATCH)
                chain = (
                    self._own.writer if author == self._own.author else self._replicas.get(author)
                )
                entries = await chain.read(max(ask.start, 1), limit) if chain is not None else []
                await stream.write(b"".join(e.to_record() + b"\n" for e in entries))
                head = chain.head_seq if chain is not None else 0
                await stream.write(_line({"end": True, "head": head}))
        except (TimeoutError, StreamError, GuestStopped) as exc:
            log.debug("auditlog_serve_ended", peer=stream.peer_id, reason=repr(exc))
        except Exception:
            self.errors["serve"] += 1
            log.exception("auditlog_serve_failed", peer=stream.peer_id)

    # ---- pulling ---------------------------------------------------------------------------

    def on_head(self, peer: str, seq: int) -> None:
        """A peer announced its own log's head: pull if it is news or needs checking."""
        if peer == self._own.author or self.forked(peer) or not self._eligible(peer):
            return
        self._heard[peer] = time.monotonic()
        replica = self._replicas.get(peer)
        if replica is None or seq != replica.head_seq or replica.head_seq == 0:
            self._wanted[peer] = (peer, seq)
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._wanted:
                author, (peer, _seq) = self._wanted.popitem()
                try:
                    await self.pull(peer, author)
                except GuestStopped:
                    return
                except (StreamError, TimeoutError) as exc:
                    log.info("auditlog_pull_failed", peer=peer, author=author, error=str(exc))
                except Exception:  # one pull's bug or a peer's trick must not stop the others
                    self.errors["pull"] += 1
                    log.exception("auditlog_pull_crashed", peer=peer, author=author)

    async def pull(self, peer: str, author: str) -> int:
        """Fetch `author`'s new entries from `peer`; return how many were stored."""
        replica = await self._replica(author)
        stored = 0
        stream = await self._host.open_stream(peer, PROTOCOL)
        try:
            while not self.forked(author):
                check = replica.head_seq  # re-fetch our newest entry to compare
                start = check if check else 1
                batch = await self._ask(stream, author, start)
                if check and batch:
                    if not await self._same_as_ours(replica, batch[0], peer):
                        return stored
                    batch = batch[1:]
                fresh, refusal = self._verified(replica, author, batch)
                # Durable before the next round, which re-reads our newest entry from disk.
                await asyncio.gather(*(replica.advance(entry) for entry in fresh))
                stored += len(fresh)
                if refusal is not None:
                    self.refused[refusal.reason] += 1
                    log.warning(
                        "auditlog_entry_refused",
                        peer=peer,
                        author=author,
                        reason=refusal.reason,
                        detail=str(refusal),
                    )
                    break
                if len(batch) < BATCH - (1 if check else 0):
                    break
        finally:
            await stream.close()
        if stored:
            log.info(
                "auditlog_replicated",
                peer=peer,
                author=author,
                entries=stored,
                head=replica.head_seq,
            )
        return stored

    async def _ask(self, stream: Stream, author: str, start: int) -> list[SignedEntry]:
        await stream.write(_line({"author": author, "from": start, "limit": BATCH}))
        entries: list[SignedEntry] = []
        while True:
            # Not wait_for: in Python 3.11 it swallows a cancellation that arrives as the read
            # completes (gh-86296), and the node's stop then waited for this loop forever.
            async with asyncio.timeout(READ_TIMEOUT):
                line = await stream.readline(MAX_LINE)
            if not line:
                raise StreamError("the peer closed the stream mid-answer")
            if line.startswith(b'{"end"') or line.startswith(b'{"error"'):
                try:
                    answer = _End.model_validate_json(line)
                except ValidationError:
                    self.refused["malformed"] += 1
                    raise StreamError("malformed end of answer") from None
                if answer.error is not None:
                    raise StreamError(f"the peer refused: {answer.error!r}")
                return entries
            try:
                entries.append(SignedEntry.from_record(line))
            except EntryError as exc:
                self.refused["malformed"] += 1
                raise StreamError(f"malformed entry: {exc}") from None
            if len(entries) > BATCH:
                raise StreamError("the peer sent more than asked")

    def _verified(
        self, replica: ChainWriter, author: str, batch: list[SignedEntry]
    ) -> tuple[list[SignedEntry], Refused | None]:
        """The entries of `batch` that extend the replica, each checked, up to the first bad
        one (and why it was refused)."""
        seq, prev = replica.head_seq, replica.head_hash or GENESIS
        for index, signed in enumerate(batch):
            refusal = self._refusal(signed, author, seq, prev)
            if refusal is not None:
                return batch[:index], refusal
            seq, prev = signed.entry.seq, signed.hash
        return batch, None

    def _refusal(self, signed: SignedEntry, author: str, seq: int, prev: str) -> Refused | None:
        entry = signed.entry
        if entry.author != author:
            return Refused("wrong_author", f"seq {entry.seq} by {entry.author[:128]!r}")
        if len(entry.canonical) > MAX_ENTRY_BYTES:
            return Refused("too_large", f"seq {entry.seq}: {len(entry.canonical)} bytes")
        if not signed.signed_by_author(self._verify):
            return Refused("bad_signature", f"seq {entry.seq}")
        if entry.seq != seq + 1:
            return Refused("out_of_order", f"seq {entry.seq} after {seq}")
        if entry.prev != prev:
            return Refused("broken_chain", f"seq {entry.seq} does not follow {seq}")
        return None

    async def _same_as_ours(self, replica: ChainWriter, theirs: SignedEntry, peer: str) -> bool:
        """Compare the peer's version of our newest entry with ours; record a fork if the
        author signed both."""
        held = await replica.read(replica.head_seq, 1)
        if not held:
            self.refused["unreadable_replica"] += 1
            return False  # our copy cannot be read back: nothing to compare against
        ours = held[0]
        if theirs.entry.seq != ours.entry.seq:
            return False  # not what we asked for: try again another time
        if theirs.hash == ours.hash:
            return True
        if theirs.entry.author != ours.entry.author or not theirs.signed_by_author(self._verify):
            self.refused["bad_signature"] += 1
            return False
        await self._record_fork(ours, theirs, peer)
        return False

    async def _record_fork(self, ours: SignedEntry, theirs: SignedEntry, peer: str) -> None:
        fork = Fork(ours.entry.author, ours.entry.seq, ours.hash, theirs.hash, peer)
        self.forks.append(fork)
        log.error(
            "auditlog_fork",
            author=fork.author,
            seq=fork.seq,
            ours=fork.ours,
            theirs=fork.theirs,
            peer=peer,
        )
        evidence = {
            "author": fork.author,
            "seq": fork.seq,
            "peer": peer,
            "detected_at": datetime.now(UTC).isoformat(),
            "ours": json.loads(ours.to_record()),
            "theirs": json.loads(theirs.to_record()),
        }

        def write() -> None:
            with (self._root / FORKS_FILE).open("a") as handle:
                handle.write(json.dumps(evidence, sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

        await asyncio.get_running_loop().run_in_executor(None, write)

    # ---- what the node tells ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Bounded, whatever the crowd: the first `STATUS_REPLICAS` replicas, every count."""
        shown = sorted(self._replicas.items())[:STATUS_REPLICAS]
        return {
            "replicas": {
                author: {"seq": w.head_seq, "hash": w.head_hash, "forked": self.forked(author)}
                for author, w in shown
            },
            "replicas_total": len(self._replicas),
            "refused": dict(self.refused),
            "errors": dict(self.errors),
            "forks": [fork.__dict__ for fork in self.forks[:STATUS_REPLICAS]],
            "forks_total": len(self.forks),
        }


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode() + b"\n"
