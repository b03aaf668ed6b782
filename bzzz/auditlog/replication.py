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
is stored; a refusal is counted by reason.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from bzzz.auditlog.entry import GENESIS, EntryError, SignedEntry, Verifier
from bzzz.auditlog.log import AuditLog, ChainWriter
from bzzz.auditlog.reader import FORKS_FILE
from bzzz.auditlog.segments import ChainStore
from bzzz.p2p import GuestStopped, Host, Stream, StreamError

log = structlog.get_logger(__name__)

PROTOCOL = "/bzzz/log/1.0.0"
BATCH = 256
MAX_LINE = 128 * 1024
READ_TIMEOUT = 10.0


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
    def __init__(self, host: Host, own: AuditLog, root: Path, verify: Verifier) -> None:
        self._host = host
        self._own = own
        self._root = root
        self._verify = verify
        self._replicas: dict[str, ChainWriter] = {}
        self._wanted: dict[str, tuple[str, int]] = {}  # author -> (peer, announced seq)
        self._wake = asyncio.Event()
        self.refused: Counter[str] = Counter()
        self.forks: list[Fork] = []

    # ---- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every replica on disk and the fork evidence found so far."""
        for directory in sorted(p for p in self._root.iterdir() if p.is_dir()):
            if directory.name != self._own.author:
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

    async def _replica(self, author: str) -> ChainWriter:
        writer = self._replicas.get(author)
        if writer is None:
            writer = ChainWriter(ChainStore(self._root / author, author), fsync="batch")
            await writer.start()
            self._replicas[author] = writer
        return writer

    def forked(self, author: str) -> bool:
        return any(fork.author == author for fork in self.forks)

    # ---- serving ---------------------------------------------------------------------------

    async def serve(self, stream: Stream) -> None:
        """Answer requests on one stream until the asker closes it."""
        try:
            while line := await asyncio.wait_for(stream.readline(MAX_LINE), READ_TIMEOUT):
                try:
                    request = json.loads(line)
                    author, start = str(request["author"]), int(request["from"])
                    limit = max(1, min(int(request.get("limit", BATCH)), BATCH))
                except (ValueError, KeyError, TypeError) as exc:
                    await stream.write(_line({"error": f"bad request: {exc}"}))
                    return
                chain = (
                    self._own.writer if author == self._own.author else self._replicas.get(author)
                )
                entries = await chain.read(start, limit) if chain is not None else []
                await stream.write(b"".join(e.to_record() + b"\n" for e in entries))
                head = chain.head_seq if chain is not None else 0
                await stream.write(_line({"end": True, "head": head}))
        except (TimeoutError, StreamError) as exc:
            log.debug("auditlog_serve_ended", peer=stream.peer_id, reason=repr(exc))

    # ---- pulling ---------------------------------------------------------------------------

    def on_head(self, peer: str, seq: int) -> None:
        """A peer announced its own log's head: pull if it is news or needs checking."""
        if peer == self._own.author or self.forked(peer):
            return
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
            line = await asyncio.wait_for(stream.readline(MAX_LINE), READ_TIMEOUT)
            if not line:
                raise StreamError("the peer closed the stream mid-answer")
            if line.startswith(b'{"end"') or line.startswith(b'{"error"'):
                answer = json.loads(line)
                if "error" in answer:
                    raise StreamError(f"the peer refused: {answer['error']}")
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
            return Refused("wrong_author", f"seq {entry.seq} by {entry.author}")
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
        (ours,) = await replica.read(replica.head_seq, 1)
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
        return {
            "replicas": {
                author: {"seq": w.head_seq, "hash": w.head_hash, "forked": self.forked(author)}
                for author, w in sorted(self._replicas.items())
            },
            "refused": dict(self.refused),
            "forks": [fork.__dict__ for fork in self.forks],
        }


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode() + b"\n"
