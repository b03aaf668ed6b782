"""Claim rounds: who of the cluster claims an announced task (see `claims` for the protocol).

A round publishes our intent, waits `claim_window` for competing ones, and if we are the
intents' winner, asks GitHub: a fresh read of the issue (open, not finished, not moved, not
locked), then our claim comment, kept only if it stands. A won claim becomes a `Holding`,
journaled before anything else happens, and is handed to a worker.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from bzzz.bus import MessageBus
from bzzz.config import GithubConfig
from bzzz.lru import Lru
from bzzz.messages import Message, TaskAnnouncement, TaskClaim
from bzzz.tasks.board import TaskBoard
from bzzz.tasks.claims import Claimer, intent_winner
from bzzz.tasks.github import GitHub, GitHubError, Gone, Moved
from bzzz.tasks.journal import Holding, Journal
from bzzz.tasks.model import Phase, Task
from bzzz.tasks.review import pending_review
from bzzz.tasks.trust import Trust

log = structlog.get_logger(__name__)

Record = Callable[[str, dict[str, Any]], None]
Spawn = Callable[[Coroutine[Any, Any, None], str], None]
MAX_INTENTS = 64  # intents kept per task: any peer can send one under many identities


class ClaimRounds:
    def __init__(
        self,
        *,
        bus: MessageBus,
        board: TaskBoard,
        github: GitHub,
        claimer: Claimer,
        journal: Journal,
        config: GithubConfig,
        own_id: str,
        agent_id: str,
        capabilities: list[str],
        record: Record,
        room: Callable[[], int],
        spawn: Spawn,
        won: Callable[[Holding], None],
        trust: Trust,
        can_work: Callable[[], bool] = lambda: True,
        models: Callable[[], list[str]] = list,
        review_trigger: str = "",
        works_reviews: bool = False,
    ) -> None:
        self._review_trigger = review_trigger
        self._works_reviews = works_reviews
        self._can_work = can_work
        self._models = models
        self._bus = bus
        self._trust = trust
        self._board = board
        self._github = github
        self._claimer = claimer
        self._journal = journal
        self._cfg = config
        self._own = own_id
        self._agent = agent_id
        self._capabilities = capabilities
        self._record = record
        self._room = room  # tasks we may still take on
        self._spawn = spawn
        self._won = won
        self.running: set[str] = set()
        self._intents: Lru[str, dict[str, float]] = Lru(1000, self.running.__contains__)
        self._cooling: Lru[str, float] = Lru(1000)  # task -> not claimed again before
        self.enabled = False  # once logged in to GitHub
        bus.on(TaskClaim, self._on_intent)
        bus.on(TaskAnnouncement, self._on_announcement)

    def _on_announcement(self, msg: Message[TaskAnnouncement]) -> None:
        task = self._board.on_announcement(msg)
        if task is not None:
            self.start(task, msg.data.takeover, msg.data.review)

    def _on_intent(self, msg: Message[TaskClaim]) -> None:
        key = f"{msg.data.repository}#{msg.data.task_id}"
        if not self._board.serves(msg.data.repository):
            return
        intents = self._intents.touch(key, dict)
        if len(intents) < MAX_INTENTS or msg.sender in intents:
            intents[msg.sender] = time.monotonic()

    def cool_down(self, key: str, seconds: float) -> None:
        """Do not claim `key` again for a while: our last attempt could not even start it."""
        self._cooling.touch(key, float)
        self._cooling[key] = time.monotonic() + seconds

    def eligible(self, task: Task, takeover: bool, review: str = "") -> bool:
        key = task.key
        return (
            self.enabled
            and self._can_work()
            and time.monotonic() >= self._cooling.get(key, 0.0)
            and task.suits(self._capabilities, self._models())
            and self._room() > 0
            and key not in self.running
            and key not in self._board.held_here()
            and (self._works_reviews if review else not self._board.finished_elsewhere(key))
            and (takeover or not self._board.holder_of(key))
        )

    def start(self, task: Task, takeover: bool = False, review: str = "") -> None:
        if self.eligible(task, takeover, review):
            self.running.add(task.key)
            self._spawn(self._round(task, review), f"claim round {task.key}")

    async def _round(self, task: Task, review: str) -> None:
        try:
            if await self._won_intents(task):
                await self._claim(task, review)
        except (Gone, Moved) as exc:
            log.info("task_dropped", task=task.key, reason=str(exc))
        except GitHubError as exc:
            log.warning("task_claim_failed", task=task.key, error=str(exc))
        finally:
            self.running.discard(task.key)

    async def _won_intents(self, task: Task) -> bool:
        started = time.monotonic()
        self._intents.touch(task.key, dict)[self._own] = started
        await self._bus.publish(
            TaskClaim(repository=task.repository, task_id=task.number, agent_id=self._agent)
        )
        await asyncio.sleep(self._cfg.claim_window)
        window = started - self._cfg.claim_window
        heard = [peer for peer, at in self._intents.pop(task.key, {}).items() if at >= window]
        winner = intent_winner(task.key, heard)
        if winner != self._own:
            log.debug("task_intent_lost", task=task.key, winner=winner, intents=len(heard))
        return winner == self._own

    async def _claim(self, announced: Task, review: str) -> None:
        task = await self._github.issue(announced.repository, announced.number)
        labels = set(task.labels)
        finished = labels & {self._cfg.completed_label, self._cfg.failed_label}
        if task.state != "open" or (finished and not review):
            return
        if task.locked:
            log.info("task_locked", task=task.key, reason="the issue is locked: not claimed")
            return
        if not await self._trust.task(self._github, task, self._cfg.task_label):
            return
        request = None
        if review:
            # Read afresh: the round must still be what a trusted reviewer asks for.
            request = await pending_review(
                self._github, task, self._trust, self._review_trigger, self._claimer.verify
            )
            if request is None or request.key != review:
                return
        state = await self._claimer.state(task, review)
        if state.succeeded or state.failures >= self._cfg.max_attempts:
            return
        if state.standing is not None:
            return  # someone holds it already
        nonce = secrets.token_hex(4)
        claim = await self._claimer.claim(task, nonce, state.lapsed, review)
        if claim is None:
            log.info("task_claim_lost", task=task.key)
            return
        holding = Holding(task, claim, Phase.CLAIMED, tuple(c.nonce for c in state.lapsed))
        if request is not None:
            holding.round, holding.request, holding.branch = review, request.text, request.branch
        self._journal.save(holding)
        if state.lapsed:
            previous = [c.peer for c in state.lapsed]
            log.warning("task_taken_over", task=task.key, previous=previous)
            self._record(
                "task_taken_over", {"task": task.key, "previous": previous, "nonce": nonce}
            )
        log.info("task_claimed", task=task.key, title=task.title, nonce=nonce, round=review or None)
        self._record(
            "task_claimed",
            {
                "task": task.key,
                "title": task.title,
                "nonce": nonce,
                "claim_comment": claim.comment_id,
                "round": review,
            },
        )
        self._won(holding)
