"""The task coordinator: poll (one node per cluster), claim exactly once, execute, report.

- **Polling**: the live peer with the lowest id among those that can poll GitHub is the poller;
  it polls every `poll_interval` (conditional requests), announces claimable tasks with
  `task_announcement`, and sends an availability broadcast marked `poller` after each poll as its
  heartbeat. The others poll themselves when no announcement or heartbeat came for 2 intervals.
- **Claiming**: see `claims`: P2P intents, then GitHub settles. The holder assigns the issue,
  labels it in progress and (with `clone = true`) creates the branch `bzzz/task-<n>-<agent>`.
- **Leases**: the holder sends `task_progress` every `progress_interval` and renews its claim
  comment every third of `lease_timeout`; a task labelled in progress whose holder is neither
  heard on the mesh nor renewing on GitHub is announced again (`takeover`).
- **Results**: success is a result comment, the `completed` label and the issue closed (or a
  pull request, when the command pushed commits to the task branch); failure is a failure
  comment and the labels reset, until `max_attempts` failures leave it to humans.
Every step is written to the audit log, from one place each.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bzzz.bus import MessageBus
from bzzz.config import ExecutorConfig, GithubConfig
from bzzz.lru import Lru
from bzzz.messages import (
    AvailabilityBroadcast,
    Message,
    MessageType,
    TaskAnnouncement,
    TaskClaim,
    TaskComplete,
    TaskProgress,
)
from bzzz.peers import PeerTable
from bzzz.tasks.claims import Claimer, intent_winner
from bzzz.tasks.executor import Outcome, fresh_workdir, git, run_command, task_env
from bzzz.tasks.github import GitHub, GitHubError
from bzzz.tasks.model import Task

log = structlog.get_logger(__name__)

Record = Callable[[str, dict[str, Any]], None]
RESULT_TAIL = 3000  # characters of output quoted in a result comment
RELEASE_TIMEOUT = 3.0
# Tasks remembered from GitHub and the mesh (any peer can name any task), and intents kept per
# task (any peer can send one under many identities).
MAX_KNOWN = 1000
MAX_INTENTS = 64


@dataclass
class Known:
    """What this node knows of a task (from GitHub or the mesh)."""

    task: Task
    phase: str = "announced"  # announced, claiming, held, running, completed, failed, released
    holder: str = ""
    heard: float = 0.0  # monotonic: the holder's last sign of life


@dataclass
class Holding:
    task: Task
    nonce: str
    comment_id: int
    branch: str | None = None
    started: float = field(default_factory=time.monotonic)
    renewed: float = field(default_factory=time.monotonic)
    work: asyncio.Task[None] | None = None


class TaskCoordinator:
    def __init__(
        self,
        *,
        github_config: GithubConfig,
        executor_config: ExecutorConfig,
        github: GitHub | None,
        bus: MessageBus,
        peers: PeerTable,
        record: Record,
        own_id: str,
        agent_id: str,
        capabilities: list[str],
        workdir: Path,
        env: Mapping[str, str],
        heartbeat: Callable[[], Awaitable[None]],
        deliberate: Callable[[Task], Awaitable[str]] | None = None,
        finished: Callable[[str], None] = lambda key: None,
    ) -> None:
        self._cfg = github_config
        self._exe = executor_config
        self._github = github
        self._bus = bus
        self._peers = peers
        self._record = record
        self._own = own_id
        self._agent = agent_id
        self._capabilities = capabilities
        self._workdir = workdir
        self._env = env
        self._heartbeat = heartbeat
        self._deliberate = deliberate
        self._finished = finished
        self._claimer = (
            Claimer(github, own_id, agent_id, github_config.lease_timeout) if github else None
        )
        self._held: dict[str, Holding] = {}
        self._rounds: set[str] = set()
        in_use = lambda key: key in self._held or key in self._rounds  # noqa: E731
        self.known: Lru[str, Known] = Lru(MAX_KNOWN, in_use)
        self._intents: Lru[str, dict[str, float]] = Lru(MAX_KNOWN, in_use)
        self._cache: dict[str, list[Task]] = {}
        self._poller_heard = time.monotonic()
        self._login = ""
        self._group: asyncio.TaskGroup | None = None
        self._to_release: list[Holding] = []
        bus.guard(MessageType.TASK_PROGRESS, self._may_report)
        bus.guard(MessageType.TASK_COMPLETE, self._may_report)
        bus.on(MessageType.TASK_ANNOUNCEMENT, self._on_announcement)
        bus.on(MessageType.TASK_CLAIM, self._on_intent)
        bus.on(MessageType.TASK_PROGRESS, self._on_progress)
        bus.on(MessageType.TASK_COMPLETE, self._on_complete)
        bus.on(MessageType.AVAILABILITY_BROADCAST, self._on_availability)

    @property
    def polls_github(self) -> bool:
        return self._github is not None and bool(self._cfg.repositories)

    def load(self) -> tuple[int, int]:
        return len(self._held), self._cfg.max_tasks

    # ---- life ------------------------------------------------------------------------------

    async def run(self) -> None:
        if self._github is None or not self._cfg.repositories:
            return  # P2P only: we still track what the mesh says about tasks
        self._login = await self._retry("github_login", self._github.login)
        log.info("github_ready", login=self._login, repositories=self._cfg.repositories)
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._poll_loop())
            group.create_task(self._lease_loop())

    async def release_all(self) -> None:
        """Give back what we hold (the node is stopping): work stopped, claims released."""
        holdings = self._to_release + list(self._held.values())
        self._to_release, self._held = [], {}
        if not holdings or self._claimer is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RELEASE_TIMEOUT):
                await asyncio.gather(*(self._release(h) for h in holdings), return_exceptions=True)

    async def _retry(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        delay = 1.0
        while True:
            try:
                return await call()
            except GitHubError as exc:
                log.warning(f"{what}_failed", error=str(exc), retry_in_s=round(delay))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 300.0)

    # ---- polling ---------------------------------------------------------------------------

    def is_poller(self) -> bool:
        candidates = [self._own] + [
            r.peer_id
            for r in self._peers.records()
            if r.connected and not r.stale and r.polls_github
        ]
        return min(candidates) == self._own

    def _poller_silent(self) -> bool:
        return time.monotonic() - self._poller_heard > 2 * self._cfg.poll_interval

    async def _poll_loop(self) -> None:
        assert self._github is not None
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
            await asyncio.sleep(self._cfg.poll_interval * min(2 ** max(failures - 1, 0), 8))

    async def _poll(self, repository: str) -> None:
        assert self._github is not None
        found = await self._github.poll(repository, self._cfg.task_label)
        if found is not None:
            self._cache[repository] = found
        for task in sorted(self._cache.get(repository, []), key=lambda t: (-t.priority, t.number)):
            await self._consider(task)

    async def _consider(self, task: Task) -> None:
        """A task seen on GitHub: announce it if it is there for the taking."""
        assert self._claimer is not None
        labels = set(task.labels)
        known = self.known.touch(task.key, lambda: Known(task))
        known.task = task
        if labels & {self._cfg.completed_label, self._cfg.failed_label}:
            known.phase = "completed" if self._cfg.completed_label in labels else "failed"
            return
        if task.key in self._held or task.key in self._rounds:
            return
        takeover = False
        if self._cfg.in_progress_label in labels:
            if time.monotonic() - known.heard < self._cfg.lease_timeout:
                return  # its holder is alive on the mesh
            standing = (await self._claimer.state(task)).standing
            if standing is not None:
                known.holder, known.phase = standing.peer, "held"
                return
            takeover = True
        await self._bus.publish(
            TaskAnnouncement(
                repository=task.repository,
                task_id=task.number,
                title=task.title,
                labels=list(task.labels),
                priority=task.priority,
                task_type=task.type,
                url=task.url,
                takeover=takeover,
            )
        )
        self._record(
            "task_announced", {"task": task.key, "title": task.title, "takeover": takeover}
        )
        self._start_round(task, takeover)

    # ---- claiming --------------------------------------------------------------------------

    def _eligible(self, task: Task, takeover: bool) -> bool:
        return (
            self._claimer is not None
            and self._group is not None
            and task.suits(self._capabilities)
            and len(self._held) + len(self._rounds) < self._cfg.max_tasks
            and task.key not in self._held
            and task.key not in self._rounds
            and (takeover or not self._held_elsewhere(task.key))
        )

    def _held_elsewhere(self, key: str) -> bool:
        """Another agent finished it, or holds it and was heard within the lease."""
        known = self.known.get(key)
        if known is None or known.holder in ("", self._own):
            return False
        if known.phase == "completed":
            return True
        return known.phase == "held" and time.monotonic() - known.heard < self._cfg.lease_timeout

    def _start_round(self, task: Task, takeover: bool = False) -> None:
        if self._eligible(task, takeover):
            assert self._group is not None
            self._rounds.add(task.key)
            self._group.create_task(self._round(task))

    async def _round(self, task: Task) -> None:
        try:
            if await self._won_intents(task):
                await self._claim(task)
        except GitHubError as exc:
            log.warning("task_claim_failed", task=task.key, error=str(exc))
        finally:
            self._rounds.discard(task.key)

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

    async def _claim(self, announced: Task) -> None:
        assert self._github is not None and self._claimer is not None
        task = await self._github.issue(announced.repository, announced.number)
        labels = set(task.labels)
        if task.state != "open" or labels & {self._cfg.completed_label, self._cfg.failed_label}:
            return
        state = await self._claimer.state(task)
        if state.succeeded or state.failures >= self._cfg.max_attempts:
            return
        if state.standing is not None:
            return  # someone holds it already
        takeover_of = (
            self.known[task.key].holder
            if self._cfg.in_progress_label in labels and task.key in self.known
            else None
        )
        nonce = secrets.token_hex(4)
        comment_id = await self._claimer.claim(task, nonce, takeover_of or None)
        if comment_id is None:
            log.info("task_claim_lost", task=task.key)
            return
        holding = Holding(task, nonce, comment_id)
        self._held[task.key] = holding
        self.known[task.key] = Known(task, "held", self._own, time.monotonic())
        if takeover_of:
            log.warning("task_taken_over", task=task.key, previous=takeover_of)
            self._record(
                "task_taken_over", {"task": task.key, "previous": takeover_of, "nonce": nonce}
            )
        log.info("task_claimed", task=task.key, title=task.title, nonce=nonce)
        self._record(
            "task_claimed",
            {"task": task.key, "title": task.title, "nonce": nonce, "claim_comment": comment_id},
        )
        await self._github.assign(task.repository, task.number, self._login)
        await self._github.add_labels(task.repository, task.number, self._cfg.in_progress_label)
        await self._progress(holding, "claimed")
        assert self._group is not None
        holding.work = self._group.create_task(self._work(holding))

    # ---- working ---------------------------------------------------------------------------

    async def _work(self, holding: Holding) -> None:
        assert self._github is not None and self._claimer is not None
        task = holding.task
        workdir = fresh_workdir(self._workdir, task, holding.nonce)
        finished = False
        try:
            if self._deliberate is not None:
                # With require_consensus: the cluster agrees on a plan (or humans decide) first.
                await self._progress(holding, "deliberating")
                await self._deliberate(task)
            outcome = await self._execute(holding, workdir)
            if not await self._claimer.stands(task, holding.nonce):
                # Our lease lapsed and another agent took over: its result counts, not ours.
                log.warning("task_claim_lost_while_working", task=task.key)
                self._record("task_lost", {"task": task.key, "nonce": holding.nonce})
            elif outcome.success:
                await self._succeed(holding, outcome)
            else:
                await self._fail(holding, outcome)
            finished = True
        except GitHubError as exc:
            log.error("task_work_failed", task=task.key, error=str(exc))
            with contextlib.suppress(GitHubError):  # give it back now, not at lease expiry
                await self._release(holding)
                finished = True
        finally:
            self._held.pop(task.key, None)
            self._finished(task.key)
            if not finished:
                self._to_release.append(holding)
            shutil.rmtree(workdir, ignore_errors=True)

    async def _execute(self, holding: Holding, workdir: Path) -> Outcome:
        assert self._github is not None
        task = holding.task
        if not self._exe.command:
            return Outcome(None, "", 0.0, error="no executor.command configured")
        extra = {
            "BZZZ_TASK_WORKDIR": str(workdir),
            "BZZZ_AGENT_ID": self._agent,
            "BZZZ_PEER_ID": self._own,
        }
        if self._exe.clone:
            holding.branch = f"bzzz/task-{task.number}-{self._agent}"
            problem = await self._checkout(task, holding.branch, workdir)
            if problem:
                return Outcome(None, "", 0.0, error=problem)
            extra["BZZZ_TASK_BRANCH"] = holding.branch
        log.info("task_running", task=task.key, command=self._exe.command[0])
        await self._progress(holding, "running")
        outcome = await run_command(
            self._exe.command, task, workdir, task_env(self._env, task, extra), self._exe.timeout
        )
        log.info(
            "task_ran",
            task=task.key,
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            seconds=round(outcome.duration_s, 1),
        )
        return outcome

    async def _checkout(self, task: Task, branch: str, workdir: Path) -> str:
        """Create the task branch (if new) and clone it into `workdir`; say what went wrong."""
        assert self._github is not None
        info = await self._github.repo_info(task.repository)
        if await self._github.branch_sha(task.repository, branch) is None:
            base = await self._github.branch_sha(task.repository, info.default_branch)
            if base is None:
                return f"the default branch {info.default_branch} does not exist"
            await self._github.create_branch(task.repository, branch, base)
        url = self._github.authenticated_clone_url(info.clone_url)
        code, output = await git("clone", "--quiet", "--branch", branch, url, str(workdir))
        return "" if code == 0 else self._github.redact(f"git clone failed: {output[-500:]}")

    async def _succeed(self, holding: Holding, outcome: Outcome) -> None:
        assert self._github is not None and self._claimer is not None
        task, cfg = holding.task, self._cfg
        pull_url = ""
        if holding.branch:
            info = await self._github.repo_info(task.repository)
            if await self._github.ahead_by(task.repository, info.default_branch, holding.branch):
                pull_url = await self._github.create_pull(
                    task.repository,
                    task.title,
                    f"Closes #{task.number}\n\n{_summary(outcome)}",
                    holding.branch,
                    info.default_branch,
                )
        text = _result_text(self._github, "done", outcome, pull_url)
        await self._claimer.end(task, holding.nonce, "success", text)
        await self._github.remove_label(task.repository, task.number, cfg.in_progress_label)
        await self._github.add_labels(task.repository, task.number, cfg.completed_label)
        if not pull_url:
            await self._github.close_issue(task.repository, task.number)
        await self._announce_result(holding, outcome, True, pull_url or task.url)
        log.info("task_completed", task=task.key, pull_request=pull_url or None)
        self._record(
            "task_completed",
            {
                "task": task.key,
                "nonce": holding.nonce,
                "exit_code": outcome.exit_code,
                "pull_request": pull_url,
                "seconds": round(outcome.duration_s, 1),
            },
        )

    async def _fail(self, holding: Holding, outcome: Outcome) -> None:
        assert self._github is not None and self._claimer is not None
        task, cfg = holding.task, self._cfg
        await self._claimer.end(
            task, holding.nonce, "failure", _result_text(self._github, "failed", outcome, "")
        )
        await self._github.remove_label(task.repository, task.number, cfg.in_progress_label)
        await self._github.unassign(task.repository, task.number, self._login)
        failures = (await self._claimer.state(task)).failures
        if failures >= cfg.max_attempts:
            await self._github.add_labels(task.repository, task.number, cfg.failed_label)
        await self._announce_result(holding, outcome, False, task.url)
        log.warning(
            "task_failed",
            task=task.key,
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            error=outcome.error or None,
            attempts=failures,
        )
        self._record(
            "task_failed",
            {
                "task": task.key,
                "nonce": holding.nonce,
                "exit_code": outcome.exit_code,
                "timed_out": outcome.timed_out,
                "error": outcome.error,
                "attempts": failures,
            },
        )

    async def _announce_result(
        self, holding: Holding, outcome: Outcome, success: bool, url: str
    ) -> None:
        task = holding.task
        self.known[task.key].phase = "completed" if success else "failed"
        await self._bus.publish(
            TaskComplete(
                repository=task.repository,
                task_id=task.number,
                agent_id=self._agent,
                success=success,
                summary=_summary(outcome),
                nonce=holding.nonce,
                url=url,
            )
        )

    async def _release(self, holding: Holding) -> None:
        assert self._github is not None and self._claimer is not None
        task = holding.task
        await self._claimer.end(
            task,
            holding.nonce,
            "released",
            f"Agent `{self._agent}` stopped; the task is free to take.",
        )
        await self._github.remove_label(task.repository, task.number, self._cfg.in_progress_label)
        await self._github.unassign(task.repository, task.number, self._login)
        log.info("task_released", task=task.key)
        self._record("task_released", {"task": task.key, "nonce": holding.nonce})

    # ---- leases ----------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Progress on the mesh every `progress_interval`; the claim comment renewed every
        third of the lease, and the work stopped if the claim no longer stands."""
        assert self._claimer is not None
        renew_every = self._cfg.lease_timeout / 3
        while True:
            await asyncio.sleep(min(self._cfg.progress_interval, renew_every))
            for holding in list(self._held.values()):
                await self._progress(holding, "running")
                if time.monotonic() - holding.renewed < renew_every:
                    continue
                try:
                    stands = await self._claimer.renew(
                        holding.task, holding.comment_id, holding.nonce
                    )
                except GitHubError as exc:
                    log.warning("task_renew_failed", task=holding.task.key, error=str(exc))
                    continue
                holding.renewed = time.monotonic()
                self._record(
                    "task_progress",
                    {
                        "task": holding.task.key,
                        "nonce": holding.nonce,
                        "running_s": round(time.monotonic() - holding.started),
                    },
                )
                if not stands and holding.work is not None:
                    log.warning("task_claim_lost_while_working", task=holding.task.key)
                    holding.work.cancel()

    async def _progress(self, holding: Holding, status: str) -> None:
        task = holding.task
        await self._bus.publish(
            TaskProgress(
                repository=task.repository,
                task_id=task.number,
                agent_id=self._agent,
                status=status,
                nonce=holding.nonce,
            )
        )

    # ---- what the mesh says ----------------------------------------------------------------

    def _known(self, repository: str, number: int, title: str = "") -> Known | None:
        """The entry for a task the mesh talks about; None for repositories we do not serve
        (a node without repositories follows every task, within MAX_KNOWN)."""
        if self._cfg.repositories and repository not in self._cfg.repositories:
            return None
        empty = Task(repository, number, title, "", (), "open", (), "", "")
        return self.known.touch(f"{repository}#{number}", lambda: Known(empty))

    def holder_of(self, key: str) -> str:
        """The agent holding `key` as far as this node knows (us, or one heard within the
        lease), or ""."""
        if key in self._held:
            return self._own
        known = self.known.get(key)
        if known is None or known.phase != "held" or not known.holder:
            return ""
        alive = time.monotonic() - known.heard < self._cfg.lease_timeout
        return known.holder if alive else ""

    def _may_report(self, msg: Message) -> str | None:
        """Authority: only a task's holder sends its progress and its completion. A peer whose
        holder went silent for a whole lease may report (a takeover)."""
        data = msg.data
        assert isinstance(data, TaskProgress | TaskComplete)
        key = f"{data.repository}#{data.task_id}"
        holder = self.holder_of(key)
        if holder and holder != msg.sender:
            return f"{key} is held by {holder}"
        return None

    def _on_announcement(self, msg: Message) -> None:
        data = msg.data
        assert isinstance(data, TaskAnnouncement)
        known = self._known(data.repository, data.task_id, data.title)
        if known is None:
            return
        self._poller_heard = time.monotonic()
        task = Task(
            data.repository,
            data.task_id,
            data.title,
            "",
            tuple(data.labels),
            "open",
            (),
            data.url,
            "",
        )
        known.task = task
        self._start_round(task, data.takeover)

    def _on_intent(self, msg: Message) -> None:
        data = msg.data
        assert isinstance(data, TaskClaim)
        if self._known(data.repository, data.task_id) is None:
            return
        intents = self._intents.touch(f"{data.repository}#{data.task_id}", dict)
        if len(intents) < MAX_INTENTS or msg.sender in intents:
            intents[msg.sender] = time.monotonic()

    def _on_progress(self, msg: Message) -> None:
        data = msg.data
        assert isinstance(data, TaskProgress)
        known = self._known(data.repository, data.task_id)
        if known is not None:
            known.holder, known.phase, known.heard = msg.sender, "held", time.monotonic()

    def _on_complete(self, msg: Message) -> None:
        data = msg.data
        assert isinstance(data, TaskComplete)
        known = self._known(data.repository, data.task_id)
        if known is not None:
            known.holder, known.phase = msg.sender, "completed" if data.success else "failed"

    def _on_availability(self, msg: Message) -> None:
        data = msg.data
        assert isinstance(data, AvailabilityBroadcast)
        if data.poller:
            self._poller_heard = time.monotonic()

    # ---- what the node tells ---------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        rows = []
        for key, known in sorted(self.known.items()):
            holding = self._held.get(key)
            holder = self._peers.get(known.holder) if known.holder else None
            rows.append(
                {
                    "task": key,
                    "title": known.task.title,
                    "phase": "running" if holding else known.phase,
                    "holder": known.holder,
                    "holder_agent": self._agent
                    if known.holder == self._own
                    else (holder.agent_id if holder else ""),
                    "held_here": holding is not None,
                    "heard_s": round(now - known.heard, 1) if known.heard else None,
                    "lease_s": self._cfg.lease_timeout,
                    "url": known.task.url,
                }
            )
        return rows


def _summary(outcome: Outcome) -> str:
    if outcome.error:
        return outcome.error
    if outcome.timed_out:
        return f"timed out after {outcome.duration_s:.0f} s"
    return f"exit status {outcome.exit_code} after {outcome.duration_s:.1f} s"


def _result_text(github: GitHub, verdict: str, outcome: Outcome, pull_url: str) -> str:
    tail = github.redact(outcome.output[-RESULT_TAIL:]).rstrip()
    lines = [f"Task {verdict}: {_summary(outcome)}."]
    if pull_url:
        lines.append(f"Pull request: {pull_url}")
    if tail:
        lines += [
            "",
            "<details><summary>Output (end)</summary>",
            "",
            "```",
            tail,
            "```",
            "</details>",
        ]
    return "\n".join(lines)
