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

Every marker is signed (`sig:`, Ed25519 by the node's key) over the repository, the issue
number, its kind, peer id, nonce, outcome and the claims it takes over, so anyone checks it from
the peer id alone, whoever's GitHub account posted it (agents may share one). A marker whose
signature is missing or wrong is ignored and counted: anyone who can comment on an issue can
write `bzzz-done: X Y success`, and a marker copied from another issue does not verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from bzzz.lru import Lru
from bzzz.tasks.github import Comment, GitHub
from bzzz.tasks.model import Outcome, Task

log = structlog.get_logger(__name__)

TAKES_OVER = "takes-over:"
ROUND = "round:"
SIGNATURE = "sig:"
_MARK = re.compile(r"^bzzz-(claim|release|done):[ \t]+([^\n]*)")

Signer = Callable[[bytes], bytes]
Verifier = Callable[[str, bytes, bytes], bool]  # (peer id, data, signature) -> valid


@dataclass(frozen=True)
class Marker:
    """The first line of a marker comment: `bzzz-<kind>: <peer> <nonce> [<outcome>]
    [takes-over:<nonce>,...] sig:<signature>`."""

    kind: str  # claim, release, done
    peer: str
    nonce: str
    outcome: str = ""
    takes_over: tuple[str, ...] = ()
    round: str = ""  # "" for the task itself; a review's key for a round it asked for
    signature: bytes = field(default=b"", compare=False)

    def payload(self, repository: str, number: int) -> bytes:
        """What the signature covers: the marker, and the issue it is about."""
        parts = ["bzzz-marker/1", repository.lower(), str(number), self.kind, self.peer]
        parts += [self.nonce, self.outcome, ",".join(self.takes_over), self.round]
        return "|".join(parts).encode()

    def signed(self, task: Task, sign: Signer) -> Marker:
        signature = sign(self.payload(task.repository, task.number))
        return Marker(
            self.kind, self.peer, self.nonce, self.outcome, self.takes_over, self.round, signature
        )

    def verifies(self, task: Task, verify: Verifier) -> bool:
        try:
            return verify(self.peer, self.payload(task.repository, task.number), self.signature)
        except Exception:  # a peer id that is no key: not ours to trust
            return False

    def line(self) -> str:
        parts = [f"bzzz-{self.kind}:", self.peer, self.nonce]
        if self.outcome:
            parts.append(self.outcome)
        if self.takes_over:
            parts.append(TAKES_OVER + ",".join(self.takes_over))
        if self.round:
            parts.append(ROUND + self.round)
        parts.append(SIGNATURE + base64.urlsafe_b64encode(self.signature).decode().rstrip("="))
        return " ".join(parts)


def parse_marker(body: str) -> Marker | None:
    match = _MARK.match(body)
    if match is None:
        return None
    tokens = match.group(2).split()
    if len(tokens) < 2:
        return None
    outcome, signature, round_ = "", b"", ""
    takes_over: tuple[str, ...] = ()
    for token in tokens[2:]:
        if token.startswith(SIGNATURE):
            encoded = token.removeprefix(SIGNATURE)
            try:
                signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError):
                signature = b""
        elif token.startswith(TAKES_OVER):
            takes_over = tuple(n for n in token.removeprefix(TAKES_OVER).split(",") if n)
        elif token.startswith(ROUND):
            round_ = token.removeprefix(ROUND)
        elif not outcome:
            outcome = token
    return Marker(match.group(1), tokens[0], tokens[1], outcome, takes_over, round_, signature)


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
    forged: tuple[Comment, ...] = ()  # markers whose signature is missing or wrong: ignored


def read_claims(
    comments: list[Comment],
    now: datetime,
    lease: timedelta,
    task: Task,
    verify: Verifier,
    round: str = "",
) -> ClaimState:
    """Who holds the task (or the review `round` of it): only that round's markers count."""
    claims: list[Claim] = []
    ended: set[str] = set()
    marked: set[str] = set()
    forged: list[Comment] = []
    failures = 0
    succeeded = False
    for comment in comments:
        marker = parse_marker(comment.body)
        if marker is None:
            continue
        if not marker.verifies(task, verify):
            forged.append(comment)
            continue
        if marker.round != round:
            continue
        if marker.kind == "claim":
            claims.append(Claim(marker.peer, marker.nonce, comment.id, comment.updated_at))
            ended.update(marker.takes_over)
            continue
        ended.add(marker.nonce)
        marked.add(marker.nonce)
        if marker.kind == "done" and marker.outcome == Outcome.FAILURE:
            failures += 1
        succeeded = succeeded or (marker.kind == "done" and marker.outcome == Outcome.SUCCESS)
    open_claims = [c for c in claims if c.nonce not in ended]
    live = [c for c in open_claims if now - c.renewed_at < lease]
    lapsed = tuple(c for c in open_claims if c not in live)
    standing = min(live, key=lambda c: c.comment_id) if live else None
    return ClaimState(
        standing, lapsed, failures, succeeded, frozenset(ended), frozenset(marked), tuple(forged)
    )


class Claimer:
    """The GitHub side of a claim's life: claim, renew, end; every marker signed."""

    def __init__(
        self,
        github: GitHub,
        peer_id: str,
        agent_id: str,
        lease: float,
        sign: Signer,
        verify: Verifier,
    ) -> None:
        self._github = github
        self._peer = peer_id
        self._agent = agent_id
        self.lease = timedelta(seconds=lease)
        self._sign = sign
        self.verify = verify
        self._forged_seen: Lru[int, bool] = Lru(4096)
        self.forged = 0  # forged markers seen (each comment once)

    def _marker(
        self,
        task: Task,
        kind: str,
        nonce: str,
        outcome: str = "",
        over: Iterable[str] = (),
        round: str = "",
    ) -> str:
        marker = Marker(kind, self._peer, nonce, outcome, tuple(over), round)
        return marker.signed(task, self._sign).line()

    async def state(self, task: Task, round: str = "") -> ClaimState:
        comments = await self._github.comments(task.repository, task.number)
        state = read_claims(comments, self._github.now(), self.lease, task, self.verify, round)
        for comment in state.forged:
            if comment.id not in self._forged_seen:
                self._forged_seen.touch(comment.id, lambda: True)
                self.forged += 1
                log.warning(
                    "github_forged_marker",
                    task=task.key,
                    comment=comment.id,
                    author=comment.user,
                    line=comment.body.splitlines()[0][:120],
                )
        return state

    async def claim(
        self, task: Task, nonce: str, takes_over: tuple[Claim, ...] = (), round: str = ""
    ) -> Claim | None:
        """Comment our claim and keep it only if it is the standing one; return it if we hold
        the task. Lapsed claims are named, so that their holders cannot come back."""
        previous = ", ".join(f"`{c.peer[-6:]}`" for c in takes_over)
        note = f"Taking over from {previous}, whose lease lapsed." if takes_over else "Claimed."
        line = self._marker(task, "claim", nonce, over=(c.nonce for c in takes_over), round=round)
        body = (
            f"{line}\n\n{note} Agent `{self._agent}` works on this task; the claim stands while "
            f"the agent renews it (lease {int(self.lease.total_seconds())} s)."
        )
        mine = await self._github.comment(task.repository, task.number, body)
        state = await self.state(task, round)
        # Finished meanwhile (its holder's result landed between our reads): nothing to hold.
        if not state.succeeded and state.standing is not None and state.standing.nonce == nonce:
            return state.standing
        await self._github.delete_comment(task.repository, mine.id)
        return None

    async def renew(
        self, task: Task, claim: Claim, takes_over: tuple[str, ...] = (), round: str = ""
    ) -> Claim:
        """Edit our claim; GitHub stamps the time of the renewal (returned)."""
        line = self._marker(task, "claim", claim.nonce, over=takes_over, round=round)
        body = (
            f"{line}\n\nAgent `{self._agent}` is working on this task "
            f"(renewed {self._github.now().isoformat(timespec='seconds')})."
        )
        edited = await self._github.edit_comment(task.repository, claim.comment_id, body)
        return Claim(claim.peer, claim.nonce, claim.comment_id, edited.updated_at)

    async def stands(self, task: Task, nonce: str, round: str = "") -> bool:
        """Our claim is the standing one, and no other attempt has succeeded."""
        state = await self.state(task, round)
        return not state.succeeded and state.standing is not None and state.standing.nonce == nonce

    async def end(
        self, task: Task, nonce: str, outcome: Outcome, text: str, round: str = ""
    ) -> None:
        """End our attempt with its marker (released, or done with its outcome), unless it
        already has one (a restart, or a lost answer)."""
        if nonce in (await self.state(task, round)).marked:
            return
        if outcome is Outcome.RELEASED:
            line = self._marker(task, "release", nonce, round=round)
        else:
            line = self._marker(task, "done", nonce, outcome.value, round=round)
        await self._github.comment(task.repository, task.number, f"{line}\n\n{text}")
