"""Doing a held task's work in its work tree: the configured command, or the agent in the box.

Both run in the sandbox (`bzzz.sandbox`). The command gets the task as JSON on stdin. The agent
(`executor.kind = "llm"`) gets the issue as data, the plan the cluster agreed on, the humans'
answers and the repository's instructions, works with its tools, and is judged by
`executor.test_command`. Either way the daemon, outside the sandbox and with the token the work
never sees, commits what the agent changed (author: the agent) and pushes the task branch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:  # the agent and its model client are imported only where they work
    from bzzz.agent.loop import AgentResult
    from bzzz.llm import Llm

from bzzz.config import ExecutorConfig, LlmConfig
from bzzz.sandbox import Sandbox
from bzzz.tasks.executor import CommandRun, ended_run, git, git_dir, run_command, task_env
from bzzz.tasks.github import GitHub, GitHubError
from bzzz.tasks.journal import Holding, Result
from bzzz.tasks.model import Guidance, Task
from bzzz.tasks.trust import MAX_BODY_CHARS, NOTE, Trust, as_data, comments_as_data

log = structlog.get_logger(__name__)

Record = Callable[[str, dict[str, Any]], None]
RESULT_TAIL = 3000  # characters of output kept for the result comment
PUSH_ATTEMPTS = 3


class Execution:
    def __init__(
        self,
        *,
        github: GitHub,
        config: ExecutorConfig,
        llm_config: LlmConfig,
        llm: Llm | None,
        sandbox: Sandbox,
        env: Mapping[str, str],
        agent_id: str,
        own_id: str,
        transcripts: Path,
        trust: Trust,
        record: Record,
    ) -> None:
        self._github = github
        self._cfg = config
        self._llm_cfg = llm_config
        self._llm = llm
        self.sandbox = sandbox
        self._env = env
        self._agent = agent_id
        self._own = own_id
        self._transcripts = transcripts
        self._trust = trust
        self._record = record
        self.model = llm_config.model  # resolved by the readiness check when empty
        self.served: list[str] = []  # the models the endpoint serves (announced)

    @property
    def review_trigger(self) -> str:
        """What starts a trusted comment that asks for another round ("": no review rounds)."""
        return self._cfg.review_trigger

    @property
    def works_reviews(self) -> bool:
        """Only the agent reads a reviewer's request; a command would repeat itself."""
        return self._cfg.kind == "llm"

    @property
    def draft_pull_requests(self) -> bool:
        return self._cfg.draft_pr

    @property
    def kind(self) -> str:
        return self._cfg.kind

    @property
    def uses_a_branch(self) -> bool:
        return self._cfg.kind == "llm" or self._cfg.clone

    async def run(
        self, holding: Holding, workdir: Path, guidance: Guidance, save: Callable[[], None]
    ) -> Result:
        task = holding.task
        if self.uses_a_branch:
            # A review round works on its pull request's branch; a first round on its own.
            holding.branch = holding.branch or f"bzzz/task-{task.number}-{self._agent}"
            save()
            problem = await self._checkout(task, holding.branch, workdir)
            if problem:
                return self._failure(problem)
        task_json = await self._task_json(task, guidance)
        if holding.request:
            task_json["review"] = holding.request
        if self._cfg.kind == "llm":
            return await self._work_as_agent(holding, workdir, task_json, guidance)
        return await self._run_the_command(holding, workdir, task_json)

    # ---- the command -----------------------------------------------------------------------

    async def _run_the_command(
        self, holding: Holding, workdir: Path, task_json: dict[str, Any]
    ) -> Result:
        task = holding.task
        if not self._cfg.command:
            return self._failure("no executor.command configured")
        log.info("task_running", task=task.key, command=self._cfg.command[0])
        run = await run_command(
            self._cfg.command,
            task_json,
            workdir,
            self._env_for(holding, workdir),
            self._cfg.timeout,
            self.sandbox,
            record_exit=True,
        )
        log.info(
            "task_ran",
            task=task.key,
            exit_code=run.exit_code,
            timed_out=run.timed_out,
            seconds=round(run.duration_s, 1),
        )
        return await self._command_result(holding, workdir, run, summary(run))

    async def ended_unseen(self, holding: Holding, workdir: Path) -> Result | None:
        """The result of a task command that ended while its daemon was down (or dying), from
        the exit status its run left beside `workdir`; None if it was cut short."""
        code = ended_run(workdir) if self._cfg.kind == "command" else None
        if code is None:
            return None
        log.info("task_ran_unseen", task=holding.key, exit_code=code)
        run = CommandRun(code, "", 0.0)
        return await self._command_result(
            holding, workdir, run, f"exit status {code} (its output was lost in a restart)"
        )

    async def _command_result(
        self, holding: Holding, workdir: Path, run: CommandRun, told: str
    ) -> Result:
        if run.success and holding.branch:
            await self._commit(workdir, holding.task, "")  # what the command left uncommitted
            problem = await self._push(holding.task, workdir, holding.branch)
            if problem:
                run = CommandRun(run.exit_code, run.output, run.duration_s, error=problem)
                told = problem
        return Result(
            success=run.success,
            summary=told,
            output=self._github.redact(run.output[-RESULT_TAIL:]),
            exit_code=run.exit_code,
            seconds=round(run.duration_s, 1),
            warning=self._sandbox_note(),
        )

    # ---- the agent -------------------------------------------------------------------------

    async def _work_as_agent(
        self, holding: Holding, workdir: Path, task_json: dict[str, Any], guidance: Guidance
    ) -> Result:
        from bzzz.agent.loop import Agent, Transcript, system_prompt, task_prompt
        from bzzz.agent.tools import ToolBox

        task = holding.task
        if self._llm is None or not self.model:
            return self._failure("no model to work with (see [llm] and `bzzz status`)")
        # A task labelled model-<name> is worked by that model (it was routed here for it).
        model = task.model if task.model in self.served else self.model
        env = self._env_for(holding, workdir)

        async def in_sandbox(argv: list[str], limit: float) -> tuple[int | None, str]:
            run = await run_command(argv, None, workdir, env, limit, self.sandbox)
            return (None if run.timed_out else run.exit_code), run.error or run.output

        test_label = " ".join(self._cfg.test_command)
        transcript = Transcript(self._transcripts / f"{slug(task)}-{holding.nonce}.jsonl")
        agent = Agent(
            self._llm,
            model,
            ToolBox(workdir, lambda command, limit: in_sandbox(["sh", "-c", command], limit)),
            transcript,
            self._llm_cfg.max_turns,
            self._llm_cfg.max_tokens,
            (
                (lambda: in_sandbox(list(self._cfg.test_command), self._cfg.timeout))
                if self._cfg.test_command
                else None
            ),
            test_label,
        )
        log.info("task_agent_working", task=task.key, model=model)
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self._cfg.timeout):
                result = await agent.run(
                    system_prompt(self._agent, test_label),
                    task_prompt(task_json, guidance.plan, list(guidance.answers), workdir),
                )
        except TimeoutError:
            result = agent.stopped(f"the wall-clock limit ({self._cfg.timeout:.0f} s)")
        seconds = round(asyncio.get_running_loop().time() - started, 1)
        changed = result.finished and await self._commit(workdir, task, result.summary)
        if changed and holding.branch:
            problem = await self._push(task, workdir, holding.branch)
            if problem:
                result.finished, result.error = False, problem
        self._record(
            "task_agent",
            {
                "task": task.key,
                "nonce": holding.nonce,
                "model": model,
                "finished": result.finished,
                "turns": result.turns,
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "tests": result.tests,
                "error": result.error,
                "summary": result.summary,
                "transcript": transcript.path.name,
            },
        )
        verdict = (
            "the agent finished"
            + (", the tests pass" if result.tests == "passed" else "")
            + ("" if changed else ", with no change to the code")
            if result.finished
            else f"the agent did not finish: {result.error}"
        )
        return Result(
            success=result.finished,
            summary=verdict,
            output=self._github.redact(result.test_output[-RESULT_TAIL:]),
            exit_code=0 if result.finished else None,
            seconds=seconds,
            details=self._agent_details(result, model, guidance, await self._diffstat(workdir)),
            warning=self._sandbox_note(),
            close_issue=False,  # a pull request closes it; an empty change is for humans
        )

    def _agent_details(
        self, result: AgentResult, model: str, guidance: Guidance, diffstat: str
    ) -> str:
        lines = []
        if result.summary:
            lines += ["**What the agent did**", "", result.summary, ""]
        if guidance.plan:
            lines += ["**The plan the cluster agreed on**", "", guidance.plan, ""]
        if diffstat:
            lines += ["**Changes**", "", "```", diffstat, "```", ""]
        tests = " ".join(self._cfg.test_command) or "(no test_command configured)"
        lines += [f"**Tests**: `{tests}`: {result.tests}."]
        lines += [
            f"**Model**: {model}; {result.turns} turns, {result.prompt_tokens} prompt and "
            f"{result.completion_tokens} completion tokens."
        ]
        return "\n".join(lines)

    def _sandbox_note(self) -> str:
        if self.sandbox.enabled:
            return ""
        return "**Warning**: this node runs commands without a sandbox (`executor.sandbox = none`)."

    # ---- the work tree ---------------------------------------------------------------------

    def _env_for(self, holding: Holding, workdir: Path) -> dict[str, str]:
        extra = {
            "BZZZ_TASK_WORKDIR": str(workdir),
            "BZZZ_TASK_NONCE": holding.nonce,  # marks the run's processes
            "BZZZ_AGENT_ID": self._agent,
            "BZZZ_PEER_ID": self._own,
        }
        if holding.branch:
            extra["BZZZ_TASK_BRANCH"] = holding.branch
        if self.sandbox.enabled:
            extra["HOME"] = "/tmp"  # the sandbox's only writable place besides the work tree
        # No __pycache__ in the tree: it would be committed, and a .pyc from the same second as
        # an edit of the same size is taken for the edited source (CPython checks mtime, size).
        extra["PYTHONDONTWRITEBYTECODE"] = "1"
        return task_env(self._env, holding.task, extra)

    async def _task_json(self, task: Task, guidance: Guidance) -> dict[str, Any]:
        """The task as the work sees it: the issue's text as data (see `trust`), who wrote each
        part and whether the operators trust them, the plan and the humans' answers."""
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
            "plan": guidance.plan,
            "answers": list(guidance.answers),
            "note": NOTE,
        }

    async def _checkout(self, task: Task, branch: str, workdir: Path) -> str:
        """Create the task branch (if new) and clone it into `workdir`, its git dir beside it
        (the work reads it, never writes it); say what went wrong. The token authenticates
        git through its environment, never the clone URL."""
        info = await self._github.repo_info(task.repository)
        if await self._github.branch_sha(task.repository, branch) is None:
            base = await self._github.branch_sha(task.repository, info.default_branch)
            if base is None:
                return f"the default branch {info.default_branch} does not exist"
            await self._github.create_branch(task.repository, branch, base)
        code, output = await git(
            "clone",
            "--quiet",
            f"--separate-git-dir={git_dir(workdir)}",
            "--branch",
            branch,
            info.clone_url,
            str(workdir),
            env=self._github.git_env(info.clone_url),
        )
        return "" if code == 0 else self._github.redact(f"git clone failed: {output[-500:]}")

    async def _commit(self, workdir: Path, task: Task, summary: str) -> bool:
        """Commit what changed in the work tree, authored by the agent; False if nothing did."""
        await git("add", "--all", cwd=workdir)
        code, _ = await git("diff", "--cached", "--quiet", cwd=workdir)
        if code == 0:
            return False
        message = f"{task.title}\n\nFor #{task.number}.\n\n{summary}".strip()
        who = [
            "-c",
            f"user.name={self._agent}",
            "-c",
            f"user.email={self._agent}@bzzz.invalid",
        ]
        code, output = await git(*who, "commit", "--quiet", "-m", message, cwd=workdir)
        if code != 0:
            log.warning("task_commit_failed", task=task.key, output=output[-300:])
        return code == 0

    async def _diffstat(self, workdir: Path) -> str:
        code, output = await git("diff", "--stat", "HEAD@{u}", "HEAD", cwd=workdir)
        return output.strip()[-2000:] if code == 0 else ""

    async def _push(self, task: Task, workdir: Path, branch: str) -> str:
        """Push the work's commits to the task branch (the daemon pushes: the work has no
        token); say what went wrong. Pushing what is already there changes nothing."""
        info = await self._github.repo_info(task.repository)
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

    def _failure(self, why: str) -> Result:
        return Result(success=False, summary=why, output="", warning=self._sandbox_note())

    # ---- can this node work? ---------------------------------------------------------------

    async def problem(self, scratch: Path) -> str | None:
        """Why this node cannot do any task's work now, or None (and the model, resolved)."""
        if self._cfg.kind == "command" and not self._cfg.command:
            return "no executor.command configured"
        sandbox = await self.sandbox.problem(scratch)
        if sandbox:
            return sandbox
        if self._cfg.kind != "llm":
            return None
        from bzzz.llm import LlmError

        assert self._llm is not None
        try:
            served = await self._llm.models()
        except LlmError as exc:
            return f"the model endpoint does not answer: {exc}"
        wanted = self._llm_cfg.model
        if wanted and wanted not in served:
            return f"the endpoint does not serve the model {wanted!r} (it serves {served})"
        if not served:
            return "the endpoint serves no model"
        self.model = wanted or served[0]
        self.served = served
        return None


def slug(task: Task) -> str:
    return f"{task.repository.replace('/', '__')}#{task.number}"


def summary(run: CommandRun) -> str:
    if run.error:
        return run.error
    if run.timed_out:
        return f"timed out after {run.duration_s:.0f} s"
    return f"exit status {run.exit_code} after {run.duration_s:.1f} s"
