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
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from bzzz.bus import MessageBus
from bzzz.config import ExecutorConfig, GithubConfig
from bzzz.messages import TaskProgress
from bzzz.p2p import GuestStopped
from bzzz.tasks.board import TaskBoard
from bzzz.tasks.claims import Claimer
from bzzz.tasks.executor import CommandRun, fresh_workdir, git, run_command, task_env
from bzzz.tasks.github import GitHub, GitHubError, Gone, Moved
from bzzz.tasks.journal import Holding, Journal, Result
from bzzz.tasks.model import Outcome, Phase, Task
from bzzz.tasks.reporter import RESULT_TAIL, IssueGone, Reporter
from bzzz.tasks.trust import MAX_BODY_CHARS, NOTE, Trust, as_data, comments_as_data

log = structlog.get_logger(__name__)

Record = Callable[[str, dict[str, Any]], None]
PUSH_ATTEMPTS = 3


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
        executor_config: ExecutorConfig,
        env: Mapping[str, str],
        workdir: Path,
        agent_id: str,
        own_id: str,
        login: Callable[[], str],
        trust: Trust,
        deliberate: Callable[[Task], Awaitable[str]] | None = None,
    ) -> None:
        self.holding = holding
        self._trust = trust
        self._github = github
        self._claimer = claimer
        self._reporter = reporter
        self._journal = journal
        self._board = board
        self._bus = bus
        self._record = record
        self._cfg = github_config
        self._exe = executor_config
        self._env = env
        self._workdir_root = workdir
        self._agent = agent_id
        self._own = own_id
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
        if self._deliberate is not None:
            # With require_consensus: the cluster agrees on a plan (or humans decide) first.
            await self._progress("deliberating")
            await self._deliberate(task)
        await self._enter(Phase.RUNNING)
        workdir = fresh_workdir(self._workdir_root, task, self.holding.nonce)
        try:
            run = await self._execute(workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.holding.result = Result(
            success=run.success,
            summary=summary(run),
            output=self._github.redact(run.output[-RESULT_TAIL:]),
            exit_code=run.exit_code,
            seconds=round(run.duration_s, 1),
        )
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

    async def _execute(self, workdir: Path) -> CommandRun:
        task = self.holding.task
        if not self._exe.command:
            return CommandRun(None, "", 0.0, error="no executor.command configured")
        extra = {
            "BZZZ_TASK_WORKDIR": str(workdir),
            "BZZZ_TASK_NONCE": self.holding.nonce,  # marks the run's processes
            "BZZZ_AGENT_ID": self._agent,
            "BZZZ_PEER_ID": self._own,
        }
        if self._exe.clone:
            branch = f"bzzz/task-{task.number}-{self._agent}"
            self.holding.branch = branch
            self._journal.save(self.holding)
            problem = await self._checkout(task, branch, workdir)
            if problem:
                return CommandRun(None, "", 0.0, error=problem)
            extra["BZZZ_TASK_BRANCH"] = branch
        log.info("task_running", task=task.key, command=self._exe.command[0])
        run = await run_command(
            self._exe.command,
            await self._task_json(),
            workdir,
            task_env(self._env, task, extra),
            self._exe.timeout,
        )
        if run.success and self.holding.branch:
            problem = await self._push(workdir, self.holding.branch)
            if problem:
                return CommandRun(run.exit_code, run.output, run.duration_s, error=problem)
        log.info(
            "task_ran",
            task=task.key,
            exit_code=run.exit_code,
            timed_out=run.timed_out,
            seconds=round(run.duration_s, 1),
        )
        return run

    async def _task_json(self) -> dict[str, Any]:
        """What the command gets on stdin: the task, with the issue's text as data (see
        `trust`): who wrote each part, and whether the operators trust them."""
        task = self.holding.task
        try:
            comments = await self._github.comments(task.repository, task.number)
        except GitHubError as exc:
            log.warning("task_comments_unavailable", task=task.key, error=str(exc))
            comments = []
        return {
            **task.as_json(),
            "body": as_data(task.body, MAX_BODY_CHARS),
            "author": task.author,
            "author_association": task.association,
            "author_trusted": self._trust.of(task.author, task.association),
            "comments": comments_as_data(comments, self._trust),
            "note": NOTE,
        }

    async def _checkout(self, task: Task, branch: str, workdir: Path) -> str:
        """Create the task branch (if new) and clone it into `workdir`; say what went wrong.
        The token authenticates git through its environment, never the clone URL: the work
        tree (and its .git/config) belongs to the command."""
        info = await self._github.repo_info(task.repository)
        if await self._github.branch_sha(task.repository, branch) is None:
            base = await self._github.branch_sha(task.repository, info.default_branch)
            if base is None:
                return f"the default branch {info.default_branch} does not exist"
            await self._github.create_branch(task.repository, branch, base)
        code, output = await git(
            "clone",
            "--quiet",
            "--branch",
            branch,
            info.clone_url,
            str(workdir),
            env=self._github.git_env(info.clone_url),
        )
        return "" if code == 0 else self._github.redact(f"git clone failed: {output[-500:]}")

    async def _push(self, workdir: Path, branch: str) -> str:
        """Push the command's commits to the task branch (the daemon pushes: the command has no
        token); say what went wrong. Pushing what is already there changes nothing."""
        info = await self._github.repo_info(self.holding.task.repository)
        output = ""
        for attempt in range(PUSH_ATTEMPTS):
            code, output = await git(
                "push",
                "--quiet",
                "origin",
                f"HEAD:refs/heads/{branch}",
                cwd=workdir,
                env=self._github.git_env(info.clone_url),
            )
            if code == 0:
                return ""
            await asyncio.sleep(2**attempt)
        return self._github.redact(f"git push failed: {output[-500:]}")

    async def _report(self) -> None:
        await self._reporter.report(self.holding, lambda: self._journal.save(self.holding))
        assert self.holding.result is not None
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
            renewed = await self._claimer.renew(holding.task, holding.claim, holding.takes_over)
            if renewed.renewed_at - holding.claim.renewed_at >= self._lease:
                return Stop(Phase.LOST, "our renewal landed after the lease had lapsed")
            holding.claim = renewed
            self._journal.save(holding)
            if not await self._claimer.stands(holding.task, holding.nonce):
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
                holding.task, holding.claim, holding.takes_over
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
        task, holding.nonce, Outcome.RELEASED, f"The task is free to take. ({text})".strip()
    )
    if not reset:
        return
    state = await claimer.state(task)
    if state.standing is not None and state.standing.nonce != holding.nonce:
        return  # another agent holds it now: its labels, not ours to reset
    await github.remove_label(task.repository, task.number, config.in_progress_label)
    if login:
        await github.unassign(task.repository, task.number, login)


def summary(run: CommandRun) -> str:
    if run.error:
        return run.error
    if run.timed_out:
        return f"timed out after {run.duration_s:.0f} s"
    return f"exit status {run.exit_code} after {run.duration_s:.1f} s"
