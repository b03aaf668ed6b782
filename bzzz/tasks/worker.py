"""A held task's life, from its claim to its report, under its lease.

claimed -> prepared (assigned, labelled) -> running -> reporting -> done (or failed); each phase
is journaled before what depends on it, recorded in the audit log, and told to the mesh in the
progress messages that renew the lease there. Beside the life runs its lease keeper: it renews
the claim comment every third of the lease and watches three things while the work can still be
stopped (claimed, prepared, running):

- the lease, on GitHub's clock: a holder that sees its own lease lapse stops for good, and a
  renewal that GitHub stamped a whole lease after the one before is a lapse too (fencing: a
  late edit that went through does not bring a lapsed claim back);
- the claim: another standing claim, or another attempt's success, means it is lost;
- the rate-limit gate: a pause longer than what is left of the lease hands the task back now,
  rather than holding a lease that will lapse while we wait.

Reporting is never stopped by the keeper: the work ran; its result is told (see `reporter`).
Any failure of the life itself (a bug, a broken work directory) gives the task back.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from bzzz.bus import MessageBus
from bzzz.config import GithubConfig
from bzzz.messages import TaskProgress
from bzzz.p2p import GuestStopped
from bzzz.tasks.board import TaskBoard
from bzzz.tasks.claims import Claimer
from bzzz.tasks.execution import Execution
from bzzz.tasks.executor import fresh_workdir
from bzzz.tasks.github import GitHub, GitHubError, Gone, Moved
from bzzz.tasks.journal import Holding, Journal
from bzzz.tasks.model import Guidance, Outcome, Phase, Task
from bzzz.tasks.reporter import IssueGone, Reporter

log = structlog.get_logger(__name__)

Record = Callable[[str, dict[str, Any]], None]


class Stop(Exception):
    """Why the work stops: `phase` is how the task ends (lost or released); `cool_down` when
    this node should not claim it again soon (it could not prepare it)."""

    def __init__(self, phase: Phase, reason: str, cool_down: bool = False) -> None:
        super().__init__(reason)
        self.phase = phase
        self.cool_down = cool_down


class Worker:
    def __init__(
        self,
        holding: Holding,
        *,
        github: GitHub,
        claimer: Claimer,
        reporter: Reporter,
        journal: Journal,
        board: TaskBoard,
        bus: MessageBus,
        record: Record,
        github_config: GithubConfig,
        execution: Execution,
        workdir: Path,
        agent_id: str,
        login: Callable[[], str],
        deliberate: Callable[[Task], Awaitable[Guidance]] | None = None,
    ) -> None:
        self.holding = holding
        self._execution = execution
        self._github = github
        self._claimer = claimer
        self._reporter = reporter
        self._journal = journal
        self._board = board
        self._bus = bus
        self._record = record
        self._cfg = github_config
        self._workdir_root = workdir
        self._agent = agent_id
        self._login = login
        self._deliberate = deliberate
        self._stop: Stop | None = None
        self._lease = timedelta(seconds=github_config.lease_timeout)
        self.cool_down = False  # ended in a way that claiming it again soon would repeat

    @property
    def phase(self) -> Phase:
        return self.holding.phase

    async def run(self) -> None:
        """The whole life; returns when the task has ended one way or another."""
        async with asyncio.TaskGroup() as group:
            life = group.create_task(self._life())
            group.create_task(self._keep_lease(life))

    # ---- the life --------------------------------------------------------------------------

    async def _life(self) -> None:
        try:
            if self.phase is not Phase.REPORTING:
                await self._work()
            await self._report()
        except asyncio.CancelledError:
            stop = self._stop
            current = asyncio.current_task()
            if stop is None or current is None or current.cancelling() > 1:
                raise  # the node is stopping: release_all gives the task back
            current.uncancel()
            await self._end(stop.phase, str(stop))
        except Stop as stop:
            self.cool_down = stop.cool_down
            await self._end(stop.phase, str(stop))
        except IssueGone as gone:
            await self._end(Phase.LOST, f"the issue is gone: {gone}", tell_github=False)
        except Exception as exc:
            # One task's failure (a bug, a broken work directory) must not outlive it: its
            # claim goes back now, not when its lease lapses.
            log.exception("task_work_crashed", task=self.holding.key)
            self.cool_down = True
            await self._end(Phase.RELEASED, f"{type(exc).__name__}: {exc}")

    async def _work(self) -> None:
        task = self.holding.task
        if self.phase is Phase.CLAIMED:
            await self._prepare()
        guidance = Guidance()
        if self._deliberate is not None:
            # With require_consensus: the cluster agrees on a plan (or humans decide) first;
            # the plan and the humans' answers go to the work.
            await self._progress("deliberating")
            guidance = await self._deliberate(task)
        await self._enter(Phase.RUNNING)
        workdir = fresh_workdir(self._workdir_root, task, self.holding.nonce)
        try:
            self.holding.result = await self._execution.run(
                self.holding, workdir, guidance, lambda: self._journal.save(self.holding)
            )
        finally:
            shutil.rmtree(workdir.parent, ignore_errors=True)  # the tree and its git dir
        # On disk before the first write that reports it: a restart reports, never reruns.
        await self._enter(Phase.REPORTING)

    async def _prepare(self) -> None:
        """Assigned and labelled in progress; a task we cannot prepare is given back at once
        (held without running, it would be renewed forever)."""
        task = self.holding.task
        try:
            login = self._login()
            if login:
                await self._github.assign(task.repository, task.number, login)
            await self._github.add_labels(task.repository, task.number, self._cfg.in_progress_label)
        except (Gone, Moved) as exc:
            raise IssueGone(str(exc)) from None
        except GitHubError as exc:
            raise Stop(Phase.RELEASED, f"cannot prepare the task: {exc}", cool_down=True) from None
        await self._enter(Phase.PREPARED)

    async def _report(self) -> None:
        await self._reporter.report(self.holding, lambda: self._journal.save(self.holding))
        assert self.holding.result is not None
        self._board.reported(self.holding.key, self.holding.pull_url)
        await self._enter(Phase.DONE if self.holding.result.success else Phase.FAILED)
        self._journal.forget(self.holding.key)

    # ---- the ends --------------------------------------------------------------------------

    async def _end(self, phase: Phase, reason: str, tell_github: bool = True) -> None:
        """The task ends here without a result: lost (another holds it now: only our own claim
        is ended) or released (given back: claim ended, labels reset, unassigned)."""
        task = self.holding.task
        await self._enter(phase)
        (log.warning if phase is Phase.LOST else log.info)(
            f"task_{phase.value}", task=task.key, reason=reason
        )
        if tell_github:
            try:
                await release(
                    self._github,
                    self._claimer,
                    self._cfg,
                    self.holding,
                    self._login(),
                    reset=phase is Phase.RELEASED,
                    text=reason,
                )
            except GitHubError as exc:
                log.warning("task_release_failed", task=task.key, error=str(exc))
        self._journal.forget(task.key)

    async def _enter(self, phase: Phase) -> None:
        """A new phase: journaled (while the task is ours), recorded, shown, told."""
        self.holding.phase = phase
        if phase.held:
            self._journal.save(self.holding)
        self._board.mine(self.holding.task, phase)
        self._record(
            "task_phase",
            {"task": self.holding.key, "phase": phase.value, "nonce": self.holding.nonce},
        )
        await self._progress(phase.value)

    async def _progress(self, status: str) -> None:
        task = self.holding.task
        with contextlib.suppress(GuestStopped):
            await self._bus.publish(
                TaskProgress(
                    repository=task.repository,
                    task_id=task.number,
                    agent_id=self._agent,
                    status=status,
                    nonce=self.holding.nonce,
                )
            )

    # ---- the lease -------------------------------------------------------------------------

    async def _keep_lease(self, life: asyncio.Task[None]) -> None:
        renew_every = self._lease / 3
        tick = min(self._cfg.progress_interval, renew_every.total_seconds())
        while True:
            done, _ = await asyncio.wait({life}, timeout=tick)
            if done:
                return
            try:
                await self._tend(life, renew_every)
            except Exception:  # the keeper's own bug must not take the work down with it
                log.exception("task_lease_keeper_failed", task=self.holding.key)

    async def _tend(self, life: asyncio.Task[None], renew_every: timedelta) -> None:
        await self._progress(self.phase.value)
        if self.phase.working:
            problem = await self._check_lease(renew_every)
            # Checked again after the wait: reporting is never stopped.
            if problem is not None and self.phase.working and not life.done():
                self._stop = problem
                life.cancel()
        elif self.phase is Phase.REPORTING and "result_comment" not in self.holding.reported:
            # Until the result ends our claim, keep it: nobody should take the task over while
            # we are telling GitHub how it went.
            await self._renew_quietly(renew_every)

    async def _check_lease(self, renew_every: timedelta) -> Stop | None:
        holding = self.holding
        now = self._github.now()
        left = (holding.claim.renewed_at + self._lease - now).total_seconds()
        if left <= 0:
            return Stop(Phase.LOST, "our lease lapsed")
        paused = self._github.paused_for()
        if paused >= left:
            return Stop(
                Phase.RELEASED,
                f"GitHub asks us to wait {round(paused)} s, longer than the {round(left)} s "
                "left of our lease",
            )
        if now - holding.claim.renewed_at < renew_every:
            return None
        try:
            renewed = await self._claimer.renew(
                holding.task, holding.claim, holding.takes_over, holding.round
            )
            if renewed.renewed_at - holding.claim.renewed_at >= self._lease:
                return Stop(Phase.LOST, "our renewal landed after the lease had lapsed")
            holding.claim = renewed
            self._journal.save(holding)
            if not await self._claimer.stands(holding.task, holding.nonce, holding.round):
                return Stop(Phase.LOST, "another claim stands, or another attempt succeeded")
        except (Gone, Moved) as exc:
            return Stop(Phase.LOST, f"the issue is gone: {exc}")
        except GitHubError as exc:
            log.warning("task_renew_failed", task=holding.key, error=str(exc))
            return None
        self._record(
            "task_renewed",
            {
                "task": holding.key,
                "nonce": holding.nonce,
                "renewed_at": holding.claim.renewed_at.isoformat(),
            },
        )
        return None

    async def _renew_quietly(self, renew_every: timedelta) -> None:
        holding = self.holding
        if self._github.now() - holding.claim.renewed_at < renew_every:
            return
        try:
            holding.claim = await self._claimer.renew(
                holding.task, holding.claim, holding.takes_over, holding.round
            )
        except GitHubError as exc:
            log.debug("task_renew_failed", task=holding.key, error=str(exc))


async def release(
    github: GitHub,
    claimer: Claimer,
    config: GithubConfig,
    holding: Holding,
    login: str,
    *,
    reset: bool = True,
    text: str = "",
) -> None:
    """End our claim with a release marker; with `reset`, also give the issue back (labels and
    assignee), unless another agent holds it by now."""
    task = holding.task
    await claimer.end(
        task,
        holding.nonce,
        Outcome.RELEASED,
        f"The task is free to take. ({text})".strip(),
        holding.round,
    )
    if not reset:
        return
    state = await claimer.state(task, holding.round)
    if state.standing is not None and state.standing.nonce != holding.nonce:
        return  # another agent holds it now: its labels, not ours to reset
    await github.remove_label(task.repository, task.number, config.in_progress_label)
    if login:
        await github.unassign(task.repository, task.number, login)
