"""Reading logs straight from disk, read-only: for `bzzz log show|verify|follow`, with or
without a running daemon (an append in progress is just not seen yet)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bzzz.auditlog.entry import SignedEntry, Verifier
from bzzz.auditlog.segments import ChainStore, Problem, ScanResult

READ_BATCH = 1024
FORKS_FILE = "forks.jsonl"  # fork evidence, next to the authors' directories


def log_root(state_dir: Path) -> Path:
    return state_dir / "auditlog"


def authors(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def open_chain(root: Path, author: str) -> tuple[ChainStore, ScanResult]:
    store = ChainStore(root / author, author, writable=False)
    return store, store.open()


def entries(store: ChainStore, since: int = 1) -> Iterator[SignedEntry]:
    start = since
    while batch := store.read(start, READ_BATCH):
        yield from batch
        start = batch[-1].entry.seq + 1


@dataclass(frozen=True)
class Finding:
    author: str
    problem: Problem


def verify(root: Path, check_signature: Verifier) -> tuple[dict[str, int], list[Finding]]:
    """Check every chain under `root`: records, hashes, chain links and signatures, and the
    recorded forks. Returns the head of each author and what is wrong, in log order."""
    heads: dict[str, int] = {}
    findings: list[Finding] = []
    for author in authors(root):
        store, scan = open_chain(root, author)
        heads[author] = scan.head_seq
        problems = list(scan.problems)
        for signed in entries(store):
            if not signed.signed_by_author(check_signature):
                problems.append(Problem(signed.entry.seq, "signature does not verify"))
        findings += [Finding(author, p) for p in sorted(problems, key=lambda p: p.seq)]
    forks = root / FORKS_FILE
    if forks.exists():
        for line in forks.read_text().splitlines():
            fork = json.loads(line)
            findings.append(
                Finding(
                    fork["author"],
                    Problem(fork["seq"], f"fork: also signed {fork['theirs']['hash']}"),
                )
            )
    return heads, findings
