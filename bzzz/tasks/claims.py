"""Claims: one issue, one worker, even when agents share a GitHub account or cannot hear
each other. GitHub's comment order settles who holds a task; its clock measures leases.

1. P2P intents (`rounds`): agents that could take an announced task publish `task_claim`; after
   a short window each computes the same winner among the intents it heard: the lowest
   `sha256("<repo>#<n>:<peer id>")` (it spreads tasks evenly). Only the winner goes on.
2. GitHub settles what P2P missed (a partition, a late intent): the winner comments
   `bzzz-claim: <peer id> <nonce>`, re-reads the comments, and holds the task only if its claim
   is the oldest *standing* one and no attempt has succeeded; a losing claim is deleted.
3. A claim stands until `bzzz-release: <peer> <nonce>` or `bzzz-done: <peer> <nonce> <outcome>`
   ends it, until a later claim names it as taken over (`takes-over:<nonce>`), or while its
   last renewal (an edit: GitHub stamps `updated_at`) is older than the lease on GitHub's clock.
   Naming the lapsed claims in a takeover is what keeps a lapsed holder from coming back: its
   late edit would otherwise make its older comment the standing claim again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bzzz.tasks.github import Comment, GitHub
from bzzz.tasks.model import Outcome, Task

CLAIM = "bzzz-claim:"
RELEASE = "bzzz-release:"
DONE = "bzzz-done:"
TAKES_OVER = "takes-over:"
_MARK = re.compile(r"^(bzzz-claim|bzzz-release|bzzz-done):[ \t]+(\S+)[ \t]+(\S+)(?:[ \t]+(\S+))?")


def intent_winner(key: str, peers: Iterable[str]) -> str:
    """The agent that goes on to claim `key` among those whose intents were heard."""
    return min(peers, key=lambda peer: hashlib.sha256(f"{key}:{peer}".encode()).digest())


@dataclass(frozen=True)
class Claim:
    peer: str
    nonce: str
    comment_id: int
    renewed_at: datetime  # on GitHub's clock


@dataclass(frozen=True)
class ClaimState:
    """What the comments of an issue say about who holds it."""

    standing: Claim | None  # the oldest live claim: the holder
    lapsed: tuple[Claim, ...]  # claims neither ended nor renewed within the lease
    failures: int  # finished attempts that failed
    succeeded: bool  # an attempt finished well: nothing left to claim
    ended: frozenset[str]  # nonces whose attempt ended (released, done or taken over)
    marked: frozenset[str]  # nonces with their own release or done marker


def read_claims(comments: list[Comment], now: datetime, lease: timedelta) -> ClaimState:
    claims: list[Claim] = []
    ended: set[str] = set()
    marked: set[str] = set()
    failures = 0
    succeeded = False
    for comment in comments:
        match = _MARK.match(comment.body)
        if match is None:
            continue
        kind, peer, nonce, extra = match.groups()
        if kind == "bzzz-claim":
            claims.append(Claim(peer, nonce, comment.id, comment.updated_at))
            if extra and extra.startswith(TAKES_OVER):
                ended.update(n for n in extra.removeprefix(TAKES_OVER).split(",") if n)
            continue
        ended.add(nonce)
        marked.add(nonce)
        if kind == "bzzz-done" and extra == Outcome.FAILURE:
            failures += 1
        succeeded = succeeded or (kind == "bzzz-done" and extra == Outcome.SUCCESS)
    open_claims = [c for c in claims if c.nonce not in ended]
    live = [c for c in open_claims if now - c.renewed_at < lease]
    lapsed = tuple(c for c in open_claims if c not in live)
    standing = min(live, key=lambda c: c.comment_id) if live else None
    return ClaimState(standing, lapsed, failures, succeeded, frozenset(ended), frozenset(marked))


def claim_line(peer: str, nonce: str, takes_over: Iterable[str] = ()) -> str:
    """The first line of a claim comment; renewals keep it as it is."""
    over = ",".join(takes_over)
    return f"{CLAIM} {peer} {nonce}" + (f" {TAKES_OVER}{over}" if over else "")


class Claimer:
    """The GitHub side of a claim's life: claim, renew, end."""

    def __init__(self, github: GitHub, peer_id: str, agent_id: str, lease: float) -> None:
        self._github = github
        self._peer = peer_id
        self._agent = agent_id
        self.lease = timedelta(seconds=lease)

    async def state(self, task: Task) -> ClaimState:
        comments = await self._github.comments(task.repository, task.number)
        return read_claims(comments, self._github.now(), self.lease)

    async def claim(
        self, task: Task, nonce: str, takes_over: tuple[Claim, ...] = ()
    ) -> Claim | None:
        """Comment our claim and keep it only if it is the standing one; return it if we hold
        the task. Lapsed claims are named, so that their holders cannot come back."""
        previous = ", ".join(f"`{c.peer[-6:]}`" for c in takes_over)
        note = f"Taking over from {previous}, whose lease lapsed." if takes_over else "Claimed."
        body = (
            f"{claim_line(self._peer, nonce, (c.nonce for c in takes_over))}\n\n{note} "
            f"Agent `{self._agent}` works on this task; the claim stands while the agent renews "
            f"it (lease {int(self.lease.total_seconds())} s)."
        )
        mine = await self._github.comment(task.repository, task.number, body)
        state = await self.state(task)
        # Finished meanwhile (its holder's result landed between our reads): nothing to hold.
        if not state.succeeded and state.standing is not None and state.standing.nonce == nonce:
            return state.standing
        await self._github.delete_comment(task.repository, mine.id)
        return None

    async def renew(self, task: Task, claim: Claim, takes_over: tuple[str, ...] = ()) -> Claim:
        """Edit our claim; GitHub stamps the time of the renewal (returned)."""
        body = (
            f"{claim_line(self._peer, claim.nonce, takes_over)}\n\nAgent `{self._agent}` is "
            f"working on this task (renewed {self._github.now().isoformat(timespec='seconds')})."
        )
        edited = await self._github.edit_comment(task.repository, claim.comment_id, body)
        return Claim(claim.peer, claim.nonce, claim.comment_id, edited.updated_at)

    async def stands(self, task: Task, nonce: str) -> bool:
        """Our claim is the standing one, and no other attempt has succeeded."""
        state = await self.state(task)
        return not state.succeeded and state.standing is not None and state.standing.nonce == nonce

    async def end(self, task: Task, nonce: str, outcome: Outcome, text: str) -> None:
        """End our attempt with its marker (released, or done with its outcome), unless it
        already has one (a restart, or a lost answer)."""
        if nonce in (await self.state(task)).marked:
            return
        marker = RELEASE if outcome is Outcome.RELEASED else DONE
        suffix = "" if outcome is Outcome.RELEASED else f" {outcome.value}"
        body = f"{marker} {self._peer} {nonce}{suffix}\n\n{text}"
        await self._github.comment(task.repository, task.number, body)
