"""One poller per cluster: the live peer with the lowest id among those that can poll GitHub.

It polls every `poll_interval` (each page a conditional request: an unchanged list costs only
free 304s), announces claimable tasks with `task_announcement` (and starts our own claim round
for them), and sends an availability broadcast marked `poller` after each poll as its
heartbeat. The others poll themselves when no announcement or heartbeat came for 2 intervals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bzzz.bus import MessageBus
from bzzz.config import GithubConfig
from bzzz.messages import (
    MAX_LABELS,
    AvailabilityBroadcast,
    Message,
    TaskAnnouncement,
    line,
)
from bzzz.peers import PeerTable
from bzzz.tasks.board import TaskBoard
from bzzz.tasks.claims import Claimer
from bzzz.tasks.github import GitHub, GitHubError
from bzzz.tasks.model import Phase, Task
from bzzz.tasks.review import pending_review
from bzzz.tasks.rounds import ClaimRounds
from bzzz.tasks.trust import Trust

log = structlog.get_logger(__name__)

Record = Callable[[str, dict[str, Any]], None]
MAX_BACKOFF_INTERVALS = 8


class Poller:
    def __init__(
        self,
        *,
        github: GitHub,
        board: TaskBoard,
        rounds: ClaimRounds,
        claimer: Claimer,
        bus: MessageBus,
        peers: PeerTable,
        config: GithubConfig,
        own_id: str,
        record: Record,
        heartbeat: Callable[[], Awaitable[None]],
        trust: Trust,
        review_trigger: str = "",
    ) -> None:
        self._github = github
        self._trust = trust
        self._review_trigger = review_trigger  # "": no review rounds (a command executor)
        self._board = board
        self._rounds = rounds
        self._claimer = claimer
        self._bus = bus
        self._peers = peers
        self._cfg = config
        self._own = own_id
        self._record = record
        self._heartbeat = heartbeat
        self._heard = time.monotonic()  # the poller's last sign of life
        self._cache: dict[str, list[Task]] = {}
        self._locked_logged: set[str] = set()
        bus.on(AvailabilityBroadcast, self._on_availability)
        bus.on(TaskAnnouncement, self._on_announcement)

    def is_poller(self) -> bool:
        return self.poller_id() == self._own

    def poller_id(self) -> str:
        """The cluster's poller as this node sees it: the lowest id of those that may poll."""
        candidates = [self._own] + [
            r.peer_id
            for r in self._peers.records()
            if r.connected and not r.stale and r.polls_github
        ]
        return min(candidates)

    def _poller_silent(self) -> bool:
        return time.monotonic() - self._heard > 2 * self._cfg.poll_interval

    def _on_availability(self, msg: Message[AvailabilityBroadcast]) -> None:
        if msg.data.poller:
            self._heard = time.monotonic()

    def _on_announcement(self, msg: Message[TaskAnnouncement]) -> None:
        if self._board.serves(msg.data.repository):
            self._heard = time.monotonic()

    async def run(self) -> None:
        failures = 0
        while True:
            if self._github.can_poll() and (self.is_poller() or self._poller_silent()):
                try:
                    for repository in self._cfg.repositories:
                        await self._poll(repository)
                    failures = 0
                    await self._heartbeat()
                except GitHubError as exc:
                    failures += 1
                    log.warning("github_poll_failed", error=str(exc), failures=failures)
            # After failures, back off: up to 8 intervals between attempts.
            backoff = min(2 ** max(failures - 1, 0), MAX_BACKOFF_INTERVALS)
            await asyncio.sleep(self._cfg.poll_interval * backoff)

    async def _poll(self, repository: str) -> None:
        found = await self._github.poll(repository, self._cfg.task_label)
        if found is not None:
            self._cache[repository] = found
        for task in sorted(self._cache.get(repository, []), key=lambda t: (-t.priority, t.number)):
            await self._consider(task)

    async def _consider(self, task: Task) -> None:
        """A task seen on GitHub: announce it if it is there for the taking."""
        known = self._board.entry(task)
        if known is None:
            return
        known.task = task
        labels = set(task.labels)
        if labels & {self._cfg.completed_label, self._cfg.failed_label}:
            known.phase = Phase.COMPLETED if self._cfg.completed_label in labels else Phase.FAILED
            if self._review_trigger and known.phase is Phase.COMPLETED and not task.locked:
                await self._consider_review(task)
            return
        if known.phase is Phase.COMPLETED:
            known.phase = Phase.ANNOUNCED  # reopened: open again, its result label gone
        if task.locked:
            if task.key not in self._locked_logged:
                self._locked_logged.add(task.key)
                log.info("task_locked", task=task.key, reason="the issue is locked: skipped")
            return
        if task.key in self._board.held_here() or task.key in self._rounds.running:
            return
        if not await self._trust.task(self._github, task, self._cfg.task_label):
            return  # an outsider's issue that no trusted user made a task
        takeover = False
        if self._cfg.in_progress_label in labels:
            if self._board.holder_of(task.key):
                return  # its holder is alive on the mesh
            state = await self._claimer.state(task)
            if state.standing is not None:
                known.holder, known.phase = state.standing.peer, Phase.HELD
                return
            if state.succeeded:
                return  # reported; its labels will follow
            takeover = True
        await self._announce(task, takeover)

    async def _consider_review(self, task: Task) -> None:
        """A task whose work ended in a pull request: did a trusted reviewer ask for more?"""
        if task.key in self._board.held_here() or task.key in self._rounds.running:
            return
        review = await pending_review(
            self._github, task, self._trust, self._review_trigger, self._claimer.verify
        )
        if review is None:
            return
        state = await self._claimer.state(task, review.key)
        if state.standing is not None or state.succeeded:
            return  # that round is held, or done
        if state.failures >= self._cfg.max_attempts:
            return
        await self._announce(task, bool(state.lapsed), review.key)

    async def _announce(self, task: Task, takeover: bool, review: str = "") -> None:
        await self._bus.publish(
            TaskAnnouncement(
                repository=task.repository,
                task_id=task.number,
                title=line(task.title, 512),
                labels=[line(label, 100) for label in task.labels[:MAX_LABELS]],
                priority=task.priority,
                task_type=line(task.type, 100),
                url=task.url if len(task.url) <= 2048 else "",
                takeover=takeover,
                review=review,
            )
        )
        self._record(
            "task_announced",
            {"task": task.key, "title": task.title, "takeover": takeover, "review": review},
        )
        self._rounds.start(task, takeover, review)
