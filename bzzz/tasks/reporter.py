"""Reporting a finished run: the result on GitHub and on the mesh, exactly once.

Once the work has run, its result is reported, never released and never cancelled by the lease:
each remaining step is retried with backoff until it is done (or the issue is gone), and each
first checks whether it already happened (a comment carrying our nonce, a pull request for our
branch, a label present, the issue closed), so a lost answer or a restart never writes twice.
The steps done are journaled as they complete.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bzzz.bus import MessageBus
from bzzz.config import GithubConfig
from bzzz.messages import TaskComplete, clip
from bzzz.p2p import GuestStopped
from bzzz.tasks.claims import Claimer
from bzzz.tasks.github import GitHub, GitHubError, Gone, Moved, Refused
from bzzz.tasks.journal import Holding, Result
from bzzz.tasks.model import Outcome

log = structlog.get_logger(__name__)

Record = Callable[[str, dict[str, Any]], None]
MAX_STEP_PAUSE_S = 300.0


class IssueGone(Exception):
    """The issue was deleted or moved while we reported: there is nothing left to tell."""


class Reporter:
    def __init__(
        self,
        *,
        github: GitHub,
        claimer: Claimer,
        config: GithubConfig,
        bus: MessageBus,
        record: Record,
        agent_id: str,
        login: Callable[[], str],
        draft: bool = False,
    ) -> None:
        self._draft = draft
        self._github = github
        self._claimer = claimer
        self._cfg = config
        self._bus = bus
        self._record = record
        self._agent = agent_id
        self._login = login

    async def report(self, holding: Holding, save: Callable[[], None]) -> None:
        """Every step not done yet, in order, each until it is done; raises IssueGone."""
        assert holding.result is not None
        result = holding.result
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if result.success and holding.branch:
            steps.append(("pull_request", lambda: self._pull_request(holding)))
        steps.append(("result_comment", lambda: self._result_comment(holding)))
        steps.append(("labels", lambda: self._labels(holding)))
        if not result.success:
            steps.append(("unassign", lambda: self._unassign(holding)))
        if result.success:
            steps.append(("close", lambda: self._close(holding)))
        steps.append(("mesh", lambda: self._tell_the_mesh(holding)))
        for name, step in steps:
            if name in holding.reported:
                continue
            await self._until_done(holding, name, step)
            holding.reported.append(name)
            save()
        verdict = "task_completed" if result.success else "task_failed"
        (log.info if result.success else log.warning)(
            verdict, task=holding.key, summary=result.summary, pull_request=holding.pull_url or None
        )
        self._record(
            verdict,
            {
                "task": holding.key,
                "nonce": holding.nonce,
                "exit_code": result.exit_code,
                "summary": result.summary,
                "pull_request": holding.pull_url,
                "seconds": result.seconds,
            },
        )

    async def _until_done(
        self, holding: Holding, name: str, step: Callable[[], Awaitable[None]]
    ) -> None:
        pause = 1.0
        while True:
            try:
                await step()
                return
            except (Gone, Moved) as exc:
                raise IssueGone(str(exc)) from None
            except Refused as exc:
                # Asking again will not help (a locked issue, a label we may not create): the
                # other steps still tell what happened.
                log.error("task_report_step_refused", task=holding.key, step=name, error=str(exc))
                return
            except GitHubError as exc:
                log.warning(
                    "task_report_retry", task=holding.key, step=name, error=str(exc), in_s=pause
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_STEP_PAUSE_S)

    # ---- the steps -------------------------------------------------------------------------

    async def _pull_request(self, holding: Holding) -> None:
        task, branch = holding.task, holding.branch
        assert branch is not None
        info = await self._github.repo_info(task.repository)
        if not await self._github.ahead_by(task.repository, info.default_branch, branch):
            return  # nothing was committed: the issue is closed instead
        assert holding.result is not None
        result = holding.result
        parts = [f"Closes #{task.number}.", result.details or result.summary, result.warning]
        body = "\n\n".join(part for part in parts if part)
        holding.pull_url = await self._github.create_pull(
            task.repository, task.title, body, branch, info.default_branch, draft=self._draft
        )

    async def _result_comment(self, holding: Holding) -> None:
        assert holding.result is not None
        outcome = Outcome.SUCCESS if holding.result.success else Outcome.FAILURE
        await self._claimer.end(
            holding.task, holding.nonce, outcome, result_text(holding), holding.round
        )

    async def _labels(self, holding: Holding) -> None:
        task, cfg = holding.task, self._cfg
        assert holding.result is not None
        await self._github.remove_label(task.repository, task.number, cfg.in_progress_label)
        if holding.result.success:
            await self._github.add_labels(task.repository, task.number, cfg.completed_label)
        elif (await self._claimer.state(task, holding.round)).failures >= cfg.max_attempts:
            await self._github.add_labels(task.repository, task.number, cfg.failed_label)

    async def _unassign(self, holding: Holding) -> None:
        if self._login():
            await self._github.unassign(holding.task.repository, holding.task.number, self._login())

    async def _close(self, holding: Holding) -> None:
        if holding.pull_url or (holding.result and not holding.result.close_issue):
            return  # the pull request closes it when merged; an empty change is for humans
        await self._github.close_issue(holding.task.repository, holding.task.number)

    async def _tell_the_mesh(self, holding: Holding) -> None:
        task, result = holding.task, holding.result
        assert result is not None
        with contextlib.suppress(GuestStopped):  # stopping: peers read the result on GitHub
            await self._bus.publish(
                TaskComplete(
                    repository=task.repository,
                    task_id=task.number,
                    agent_id=self._agent,
                    success=result.success,
                    summary=clip(result.summary, 4096),
                    nonce=holding.nonce,
                    url=holding.pull_url or task.url,
                )
            )


RESULT_TAIL = 3000  # characters of output quoted in a result comment


def result_text(holding: Holding) -> str:
    result: Result | None = holding.result
    assert result is not None
    verdict = "done" if result.success else "failed"
    lines = [f"Task {verdict}: {result.summary}."]
    if holding.pull_url:
        lines.append(f"Pull request: {holding.pull_url}")
    if result.details and not holding.pull_url:  # else the pull request tells them
        lines += ["", result.details]
    if result.warning:
        lines += ["", result.warning]
    tail = result.output[-RESULT_TAIL:].rstrip()
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
