"""Claims: one issue, one worker, even when agents share a GitHub account or cannot hear
each other.

1. P2P intents: agents that could take an announced task publish `task_claim` with their peer
   id; after a short window each computes the same winner among the intents it heard: the lowest
   `sha256("<repo>#<n>:<peer id>")` (it spreads tasks evenly, unlike "lowest id"). Only the winner
   goes on.
2. GitHub settles what P2P missed (a partition, a late intent): the winner comments
   `bzzz-claim: <peer id> <nonce>`, re-reads the comments, and holds the task only if its claim is
   the oldest *standing* one (GitHub orders comments) and no attempt has succeeded. A claim
   stands until a `bzzz-release: <peer id> <nonce>` or `bzzz-done: <peer id> <nonce> ...` comment
   ends it, or until it has not been renewed (edited) for `lease_timeout`. A losing claim is
   deleted. (Re-reading after our own comment closes the gap between reading the issue and its
   comments: a result that landed in between is seen.)
3. The holder renews its lease by `task_progress` messages and, at longer intervals, by editing
   its claim comment; a silent holder's claim lapses and the task can be taken over.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bzzz.tasks.github import Comment, GitHub
from bzzz.tasks.model import Task

CLAIM = "bzzz-claim:"
RELEASE = "bzzz-release:"
DONE = "bzzz-done:"
_MARK = re.compile(r"^(bzzz-claim|bzzz-release|bzzz-done):\s+(\S+)\s+(\S+)(?:\s+(\S+))?", re.M)


def intent_winner(key: str, peers: Iterable[str]) -> str:
    """The agent that goes on to claim `key` among those whose intents were heard."""
    return min(peers, key=lambda peer: hashlib.sha256(f"{key}:{peer}".encode()).digest())


@dataclass(frozen=True)
class Claim:
    peer: str
    nonce: str
    comment_id: int
    renewed_at: datetime


@dataclass(frozen=True)
class ClaimState:
    """What the comments of an issue say about who holds it."""

    standing: Claim | None  # the oldest live claim: the holder
    failures: int  # finished attempts that failed
    succeeded: bool  # an attempt finished well: nothing left to claim


def read_claims(comments: list[Comment], now: datetime, lease: timedelta) -> ClaimState:
    claims: list[Claim] = []
    ended: set[str] = set()
    failures = 0
    succeeded = False
    for comment in comments:
        match = _MARK.match(comment.body)
        if match is None:
            continue
        kind, peer, nonce, outcome = match.groups()
        if kind == "bzzz-claim":
            claims.append(Claim(peer, nonce, comment.id, comment.updated_at))
        else:
            ended.add(nonce)
            if kind == "bzzz-done" and outcome == "failure":
                failures += 1
            succeeded = succeeded or (kind == "bzzz-done" and outcome == "success")
    live = [c for c in claims if c.nonce not in ended and now - c.renewed_at < lease]
    standing = min(live, key=lambda c: c.comment_id) if live else None
    return ClaimState(standing, failures, succeeded)


class Claimer:
    """The GitHub side of a claim's life: claim, renew, end."""

    def __init__(self, github: GitHub, peer_id: str, agent_id: str, lease: float) -> None:
        self._github = github
        self._peer = peer_id
        self._agent = agent_id
        self._lease = timedelta(seconds=lease)

    async def state(self, task: Task) -> ClaimState:
        comments = await self._github.comments(task.repository, task.number)
        return read_claims(comments, datetime.now(UTC), self._lease)

    async def claim(self, task: Task, nonce: str, takeover_of: str | None = None) -> int | None:
        """Comment our claim and keep it only if it is the standing one; return its comment id
        if we hold the task."""
        note = (
            f"Taking over from `{takeover_of}`, whose lease lapsed."
            if takeover_of is not None
            else "Claimed."
        )
        body = (
            f"{CLAIM} {self._peer} {nonce}\n\n{note} Agent `{self._agent}` works on this task; "
            f"the claim stands while the agent renews it (lease {int(self._lease.total_seconds())}"
            " s)."
        )
        mine = await self._github.comment(task.repository, task.number, body)
        state = await self.state(task)
        # Finished meanwhile (its holder's result landed between our reads): nothing to hold.
        if not state.succeeded and state.standing is not None and state.standing.nonce == nonce:
            return mine.id
        await self._github.delete_comment(task.repository, mine.id)
        return None

    async def renew(self, task: Task, claim_comment: int, nonce: str) -> bool:
        """Edit our claim (GitHub stamps the time) and say whether it still stands."""
        body = (
            f"{CLAIM} {self._peer} {nonce}\n\nAgent `{self._agent}` is working on this task "
            f"(renewed {datetime.now(UTC).isoformat(timespec='seconds')})."
        )
        await self._github.edit_comment(task.repository, claim_comment, body)
        return await self.stands(task, nonce)

    async def stands(self, task: Task, nonce: str) -> bool:
        standing = (await self.state(task)).standing
        return standing is not None and standing.nonce == nonce

    async def end(self, task: Task, nonce: str, outcome: str, text: str) -> None:
        """`outcome`: "success" or "failure" (a finished attempt), "released" (given back)."""
        marker = RELEASE if outcome == "released" else DONE
        suffix = "" if outcome == "released" else f" {outcome}"
        body = f"{marker} {self._peer} {nonce}{suffix}\n\n{text}"
        await self._github.comment(task.repository, task.number, body)
