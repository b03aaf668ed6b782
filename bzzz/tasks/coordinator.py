"""The tasks of a node: GitHub issues claimed exactly once, worked, and reported.

One owner per concern, each in its own module:
- `board`: what the cluster knows of its tasks (who holds what, in which phase) and who may
  report on a task;
- `poller`: the cluster's one poller, its election, and the announcements;
- `rounds`: who claims an announced task (P2P intents, then GitHub's comment order);
- `worker`: a held task's life (prepare, run, report) under its lease;
- `reporter`: the result told to GitHub, idempotently, until it is told;
- `journal`: the held tasks on disk, so a restart resumes instead of repeating.

This module wires them for the node and owns what they start: every claim round and every
worker runs in one task group, contained, so that one task's exception is logged with its
traceback, its claim given back, and the node lives on.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog

from bzzz.bus import MessageBus
from bzzz.config import GithubConfig
from bzzz.peers import PeerTable
from bzzz.tasks.board import TaskBoard
from bzzz.tasks.claims import Claimer, Signer, Verifier
from bzzz.tasks.execution import Execution
from bzzz.tasks.executor import kill_leftovers, workdir_of
from bzzz.tasks.github import GitHub, GitHubError, Refused
from bzzz.tasks.journal import Holding, Journal
from bzzz.tasks.model import Guidance, Phase, Task
from bzzz.tasks.poller import Poller
from bzzz.tasks.reporter import Reporter
from bzzz.tasks.rounds import ClaimRounds
from bzzz.tasks.trust import Trust
from bzzz.tasks.worker import Worker, release

log = structlog.get_logger(__name__)

Record = Callable[[str, dict[str, Any]], None]
MAX_LOGIN_PAUSE_S = 300.0
# Polls before this node claims again a task it could not start (a forbidden label, a bug).
COOL_DOWN_POLLS = 10
# How often the executor's readiness is checked again: soon while it cannot work (the model
# server is starting, say), rarely while it can (the endpoint going away shows in the task).
EXECUTOR_RECHECK_S = (10.0, 60.0)


class TaskCoordinator:
    def __init__(
        self,
        *,
        github_config: GithubConfig,
        execution: Execution | None,
        github: GitHub | None,
        bus: MessageBus,
        peers: PeerTable,
        record: Record,
        own_id: str,
        agent_id: str,
        capabilities: list[str],
        state_dir: Path,
        heartbeat: Callable[[], Awaitable[None]],
        sign: Signer,
        verify: Verifier,
        trust: Trust,
        models: Sequence[str] = (),
        deliberate: Callable[[Task], Awaitable[Guidance]] | None = None,
        finished: Callable[[str], None] = lambda key: None,
    ) -> None:
        self._cfg = github_config
        self._execution = execution
        self._github = github
        self._bus = bus
        self._record = record
        self._own = own_id
        self._agent = agent_id
        self._workdir = state_dir / "work"
        self._deliberate = deliberate
        self._finished = finished
        self._peers = peers
        self._workers: dict[str, Worker] = {}
        self._group: asyncio.TaskGroup | None = None
        self._login = github_config.login
        self.login_error = ""
        self.executor_problem: str | None = "not checked yet"
        self._node_models = list(models)
        self.journal = Journal(state_dir / "tasks")
        self.rounds: ClaimRounds | None = None
        self.board = TaskBoard(
            bus,
            own_id,
            github_config.repositories,
            github_config.lease_timeout,
            in_use=lambda key: self.rounds is not None and key in self.rounds.running,
        )
        self._claimer = (
            Claimer(github, own_id, agent_id, github_config.lease_timeout, sign, verify)
            if github
            else None
        )
        self.trust = trust
        self._reporter: Reporter | None = None
        self.poller: Poller | None = None
        if github is not None and self._claimer is not None:
            self._reporter = Reporter(
                github=github,
                claimer=self._claimer,
                config=github_config,
                bus=bus,
                record=record,
                agent_id=agent_id,
                login=lambda: self._login,
                draft=execution is not None and execution.draft_pull_requests,
            )
            self.rounds = ClaimRounds(
                bus=bus,
                board=self.board,
                github=github,
                claimer=self._claimer,
                journal=self.journal,
                config=github_config,
                own_id=own_id,
                agent_id=agent_id,
                capabilities=capabilities,
                record=record,
                room=self._room,
                spawn=self._spawn,
                won=self._start_worker,
                trust=self.trust,
                can_work=lambda: self.executor_problem is None,
                models=self.models,
                review_trigger=execution.review_trigger if execution else "",
                works_reviews=execution.works_reviews if execution else False,
            )
            self.poller = Poller(
                github=github,
                board=self.board,
                rounds=self.rounds,
                claimer=self._claimer,
                bus=bus,
                peers=peers,
                config=github_config,
                own_id=own_id,
                record=record,
                heartbeat=heartbeat,
                trust=self.trust,
                review_trigger=execution.review_trigger if execution else "",
            )

    @property
    def polls_github(self) -> bool:
        return self._github is not None and bool(self._cfg.repositories)

    def load(self) -> tuple[int, int]:
        return len(self._workers), self._cfg.max_tasks

    def _room(self) -> int:
        running = len(self.rounds.running) if self.rounds else 0
        return self._cfg.max_tasks - len(self._workers) - running

    def holder_of(self, key: str) -> str:
        return self.board.holder_of(key)

    def is_poller(self) -> bool:
        return self.poller is not None and self.poller.is_poller()

    def poller_id(self) -> str | None:
        """Who polls GitHub for the cluster (None: this node does not take tasks from GitHub)."""
        return self.poller.poller_id() if self.poller is not None else None

    # ---- life ------------------------------------------------------------------------------

    async def run(self) -> None:
        if self.poller is None or self.rounds is None or not self._cfg.repositories:
            return  # P2P only: the board still follows what the mesh says about tasks
        await self._log_in()
        log.info("github_ready", login=self._login or None, repositories=self._cfg.repositories)
        async with asyncio.TaskGroup() as group:
            self._group = group
            await self._check_executor()
            self._resume()
            self.rounds.enabled = True
            group.create_task(self._watch_executor())
            await self.poller.run()

    async def _check_executor(self) -> None:
        """Can this node do a task's work (a command or a model, and the sandbox)? A node that
        cannot takes no task, says why in status and in its capability broadcasts, and logs it
        once, when it changes."""
        if self._execution is None:
            return
        try:
            problem = await self._execution.problem(self._workdir / ".probe")
        except Exception as exc:  # a check that breaks is a reason not to work, not to stop
            log.exception("executor_check_failed")
            problem = f"the check failed: {type(exc).__name__}: {exc}"
        if problem != self.executor_problem:
            if problem:
                log.warning("executor_unavailable", reason=problem, takes_tasks=False)
            else:
                log.info(
                    "executor_ready",
                    kind=self._execution.kind,
                    sandbox=self._execution.sandbox.kind,
                    private_proc=self._execution.sandbox.private_proc,
                    model=self._execution.model or None,
                )
        self.executor_problem = problem

    async def _watch_executor(self) -> None:
        while True:
            await asyncio.sleep(EXECUTOR_RECHECK_S[self.executor_problem is None])
            await self._check_executor()

    def models(self) -> list[str]:
        """The models this node works with: configured, and those its endpoint serves."""
        served = self._execution.served if self._execution is not None else []
        return sorted(set(self._node_models) | set(served))

    async def _log_in(self) -> None:
        """Learn our login (assignments need it), retrying with backoff; until then no task is
        taken, and `bzzz status` says why."""
        assert self._github is not None
        pause = 1.0
        while True:
            try:
                self._login = await self._github.login()
                self.login_error = ""
                return
            except GitHubError as exc:
                self.login_error = str(exc)
                hint = (
                    " (an App installation token cannot read GET /user: set github.login)"
                    if isinstance(exc, Refused)
                    else ""
                )
                log.warning("github_login_failed", error=str(exc) + hint, retry_in_s=round(pause))
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_LOGIN_PAUSE_S)

    def _resume(self) -> None:
        """What the journal holds from before a restart: a task in `reporting` is reported
        (its work ran; it is never run again); so is one whose command ended while the node
        was down; one earlier in its life is released."""
        for holding in self.journal.load():
            if holding.phase is Phase.REPORTING:
                log.info("task_resumed", task=holding.key, phase=holding.phase.value)
                self._start_worker(holding)
            elif holding.phase.working:
                killed = kill_leftovers(holding.nonce)  # the cut-short run must not go on
                self._spawn(self._pick_up(holding, killed), f"resume {holding.key}")
            else:
                self.journal.forget(holding.key)

    async def _pick_up(self, holding: Holding, killed: int) -> None:
        """A task that was working when the node stopped: reported if its run had ended,
        else given back. Its work directory goes either way."""
        assert self._execution is not None
        workdir = workdir_of(self._workdir, holding.task, holding.nonce)
        try:
            if holding.phase is Phase.RUNNING:
                holding.result = await self._execution.ended_unseen(holding, workdir)
        except Exception:  # its push, say: the task goes back rather than stay claimed
            log.exception("task_resume_failed", task=holding.key)
        finally:
            shutil.rmtree(workdir.parent, ignore_errors=True)
        if holding.result is not None:
            holding.phase = Phase.REPORTING  # on disk before the first write that reports it
            self.journal.save(holding)
            log.info("task_resumed", task=holding.key, phase=holding.phase.value)
            self._start_worker(holding)
            return
        log.info(
            "task_interrupted",
            task=holding.key,
            phase=holding.phase.value,
            processes_killed=killed,
        )
        await self._give_back(holding)

    def _spawn(self, job: Coroutine[Any, Any, None], what: str) -> None:
        if self._group is None:
            job.close()
            return
        self._group.create_task(self._contained(job, what))

    async def _contained(self, job: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await job
        except Exception:
            log.exception("task_job_failed", job=what)

    def _start_worker(self, holding: Holding) -> None:
        assert self._github is not None and self._claimer is not None
        assert self._reporter is not None and self._execution is not None
        worker = Worker(
            holding,
            github=self._github,
            claimer=self._claimer,
            reporter=self._reporter,
            journal=self.journal,
            board=self.board,
            bus=self._bus,
            record=self._record,
            github_config=self._cfg,
            execution=self._execution,
            workdir=self._workdir,
            agent_id=self._agent,
            login=lambda: self._login,
            deliberate=self._deliberate,
        )
        self._workers[holding.key] = worker
        self.board.mine(holding.task, holding.phase)
        self._spawn(self._work(worker), f"work {holding.key}")

    async def _work(self, worker: Worker) -> None:
        try:
            await worker.run()
        finally:
            if not worker.phase.held:  # ended; else the node is stopping (see release_all)
                self._workers.pop(worker.holding.key, None)
                self._finished(worker.holding.key)
                if worker.cool_down and self.rounds is not None:
                    self.rounds.cool_down(
                        worker.holding.key, COOL_DOWN_POLLS * self._cfg.poll_interval
                    )

    async def _give_back(self, holding: Holding) -> None:
        assert self._github is not None and self._claimer is not None
        self.board.mine(holding.task, Phase.RELEASED)
        try:
            await release(
                self._github,
                self._claimer,
                self._cfg,
                holding,
                self._login,
                text="its agent stopped before the work was done",
            )
        except GitHubError as exc:
            log.warning("task_release_failed", task=holding.key, error=str(exc))
            return  # kept in the journal: tried again at the next start
        self._record("task_released", {"task": holding.key, "nonce": holding.nonce})
        log.info("task_released", task=holding.key)
        self.journal.forget(holding.key)

    async def release_all(self, within: float) -> None:
        """The node is stopping (for any reason): every task not yet reported is given back,
        within `within` seconds. Tasks in `reporting` stay in the journal: the next start
        finishes reporting them."""
        if self._github is None:
            return
        holdings = [h for h in self.journal.load() if h.phase.working]
        if not holdings:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await asyncio.gather(*(self._give_back(h) for h in holdings))

    # ---- what the node tells ---------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        def agent_of(peer: str) -> str:
            if peer == self._own:
                return self._agent
            record = self._peers.get(peer)
            return record.agent_id if record else ""

        return self.board.status(agent_of)

    def executor_status(self) -> dict[str, Any] | None:
        if self._execution is None:
            return None
        return {
            "kind": self._execution.kind,
            "sandbox": self._execution.sandbox.kind,
            "sandbox_network": self._execution.sandbox.network,
            "sandbox_private_proc": self._execution.sandbox.private_proc,
            "model": self._execution.model or None,
            "models": self.models(),
            "problem": self.executor_problem,
        }

    def github_status(self) -> dict[str, Any] | None:
        if self._github is None:
            return None
        return {
            "login": self._login or None,
            "login_error": self.login_error or None,
            "forged_markers": self._claimer.forged if self._claimer else 0,
            "untrusted_skipped": self.trust.untrusted_skipped,
            **self._github.budget(),
        }
