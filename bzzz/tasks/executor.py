"""Running a task: the configured command, in a fresh work directory, with a time limit.

The command gets the task as JSON on stdin and `BZZZ_TASK_*` variables; with `clone = true`
the work directory is a `git clone` of the repository on the task branch, and commits the command
pushes there become a pull request. Output (stdout and stderr together) is kept up to
`OUTPUT_BYTES`, the end of it; the exit status decides success. On timeout or cancellation the
whole process group is stopped (SIGTERM, then SIGKILL).

A command must not outlive its daemon: a run whose daemon was killed would finish unseen while
the task is claimed again. The command dies with the daemon (`setpriv --pdeathsig KILL`, from
util-linux), and what is left of a run (its children) is killed when the daemon starts again:
every process of a run carries its nonce in `BZZZ_TASK_NONCE` (`kill_leftovers`). Under
systemd, `KillMode=mixed` does the same for the whole unit.

A run that ended just before its daemon died must not run again: the daemon would find it
`running` in its journal and give it back. So the task command's exit status is written, beside
its work tree, by a small shell that waits for it (`ended_run`), not by the daemon, whose own
record of the end comes later (after it has read the output); the next start reports that run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bzzz.sandbox import Sandbox, output_of
from bzzz.tasks.model import Task

log = structlog.get_logger(__name__)

OUTPUT_BYTES = 64 * 1024
KILL_GRACE_S = 5.0
# Runs the command with the parent-death signal set: it is killed when the daemon dies.
DIE_WITH_DAEMON = (
    ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") is not None else []
)
# Waits for the command and writes its exit status to $1, unless the daemon stopped the run
# (it wrote "stopped" there first). A SIGTERM is for the command (its process group gets it
# too): the shell waits for it, so the command keeps its grace.
RECORD_EXIT = (
    'trap : TERM; file=$1; shift; "$@"; code=$?; [ -e "$file" ] || echo "$code" > "$file"; '
    'exit "$code"'
)
# Not passed to the command: the daemon's own secrets.
WITHHELD_ENV = (
    "BZZZ_GITHUB_TOKEN",
    "BZZZ_LLM_API_KEY",
    "CREDENTIALS_DIRECTORY",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
)


@dataclass(frozen=True)
class CommandRun:
    exit_code: int | None  # None: it did not run, or was stopped
    output: str  # the tail
    duration_s: float
    timed_out: bool = False
    error: str = ""  # why it could not run

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.error


class OutputTail:
    """The last `limit` bytes of a stream, kept as it flows."""

    def __init__(self, limit: int = OUTPUT_BYTES) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        self.total += len(chunk)
        while self._size - len(self._chunks[0]) >= self._limit:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        data = b"".join(self._chunks)[-self._limit :]
        return data.decode(errors="replace")


async def run_command(
    argv: Sequence[str],
    task: Mapping[str, Any] | None,
    workdir: Path,
    env: Mapping[str, str],
    time_limit: float,
    sandbox: Sandbox | None = None,
    *,
    record_exit: bool = False,
) -> CommandRun:
    """Run `argv` in `workdir` (in `sandbox`, when given, with the run's git dir readable),
    `task` as JSON on its stdin; with `record_exit`, its exit status is kept (`ended_run`)."""
    if not _runnable(argv[0], workdir, env):
        return CommandRun(None, "", 0.0, error=f"cannot start {argv[0]}: not found")
    wrapped = sandbox.argv(argv, workdir, [git_dir(workdir)]) if sandbox else list(argv)
    exit_file = _exit_file(workdir) if record_exit else None
    if exit_file is not None:
        exit_file.unlink(missing_ok=True)
        wrapped = ["sh", "-c", RECORD_EXIT, "sh", str(exit_file), *DIE_WITH_DAEMON, *wrapped]
    return await _run(argv[0], wrapped, task, workdir, env, time_limit, exit_file)


async def _run(
    program: str,
    wrapped: list[str],
    task: Mapping[str, Any] | None,
    workdir: Path,
    env: Mapping[str, str],
    time_limit: float,
    exit_file: Path | None = None,
) -> CommandRun:
    started = time.monotonic()
    tail = OutputTail()
    try:
        process = await asyncio.create_subprocess_exec(
            *DIE_WITH_DAEMON,
            *wrapped,
            cwd=workdir,
            env=dict(env),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )
    except OSError as exc:
        return CommandRun(None, "", 0.0, error=f"cannot start {program}: {exc.strerror}")
    assert process.stdin is not None and process.stdout is not None
    stdout = process.stdout

    async def feed() -> None:
        with contextlib.suppress(ConnectionError):
            if task is not None:
                process.stdin.write(json.dumps(task).encode())  # type: ignore[union-attr]
                await process.stdin.drain()  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]

    async def collect() -> None:
        while chunk := await stdout.read(65536):
            tail.add(chunk)

    try:
        async with asyncio.timeout(time_limit):
            await asyncio.gather(feed(), collect())
            code = await process.wait()
    except TimeoutError:
        await _stop(process, exit_file)
        return CommandRun(None, tail.text(), time.monotonic() - started, timed_out=True)
    except asyncio.CancelledError:
        await _stop(process, exit_file)
        raise
    return CommandRun(code, tail.text(), time.monotonic() - started)


def _runnable(program: str, workdir: Path, env: Mapping[str, str]) -> bool:
    if "/" in program:
        return os.access(workdir / program, os.X_OK)  # an absolute path stays absolute
    return shutil.which(program, path=env.get("PATH", os.defpath)) is not None


async def _stop(process: asyncio.subprocess.Process, exit_file: Path | None = None) -> None:
    if exit_file is not None:
        _mark_stopped(exit_file)
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            async with asyncio.timeout(wait):
                await process.wait()
            return
        except TimeoutError:
            continue


def task_env(base: Mapping[str, str], task: Task, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in WITHHELD_ENV}
    env.update(
        {
            "BZZZ_TASK_REPOSITORY": task.repository,
            "BZZZ_TASK_NUMBER": str(task.number),
            "BZZZ_TASK_TITLE": task.title,
            "BZZZ_TASK_URL": task.url,
            "BZZZ_TASK_TYPE": task.type,
            "BZZZ_TASK_PRIORITY": str(task.priority),
            **extra,
        }
    )
    return env


async def git(
    *args: str,
    cwd: Path | None = None,
    time_limit: float = 300,
    env: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """Run git as the daemon (never as the command): `env` may carry its credentials. In a
    work tree, git is pointed at the run's own git dir and work tree: a `.git` the work
    planted there is never read, nor are hooks run (`core.hooksPath` is empty)."""
    where = ["--git-dir", str(git_dir(cwd)), "--work-tree", str(cwd)] if cwd else []
    process = await asyncio.create_subprocess_exec(
        "git",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "core.fsmonitor=false",
        *where,
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})},
    )
    output = await output_of(process, time_limit)
    if output is None:
        return 124, "git timed out"
    return process.returncode or 0, output.decode(errors="replace")


def kill_leftovers(nonce: str) -> int:
    """Kill what is left of the run of `nonce` (processes of ours whose environment carries
    BZZZ_TASK_NONCE=<nonce>); return how many."""
    killed = 0
    for pid in processes_with(f"BZZZ_TASK_NONCE={nonce}"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def processes_with(variable: str) -> list[int]:
    """The live processes (zombies have no environment) other than this one whose environment
    holds `variable` (`NAME=value`)."""
    marker = variable.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone, or not ours
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def fresh_workdir(root: Path, task: Task, nonce: str) -> Path:
    """An empty work tree for one run: `<root>/<run>/tree`, beside it the run's git dir
    (`git_dir`). The worker removes `<root>/<run>` afterwards."""
    tree = workdir_of(root, task, nonce)
    shutil.rmtree(tree.parent, ignore_errors=True)
    tree.mkdir(parents=True, mode=0o750)
    tree.parent.chmod(0o750)
    return tree


def workdir_of(root: Path, task: Task, nonce: str) -> Path:
    """Where the run of `nonce` has (or had) its work tree."""
    return root / f"{task.repository.replace('/', '_')}-{task.number}-{nonce}" / "tree"


def ended_run(workdir: Path) -> int | None:
    """The exit status of the task command that ran in `workdir`, if it ended (read after a
    restart: the run ended although its daemon did not see it)."""
    try:
        return int(_exit_file(workdir).read_text())
    except (OSError, ValueError):
        return None  # it did not end: it was cut short


def _mark_stopped(exit_file: Path) -> None:
    """Cut short by us: not a run that ended (its shell then leaves the file as it is)."""
    with contextlib.suppress(OSError):
        exit_file.write_text("stopped\n")


def _exit_file(workdir: Path) -> Path:
    return workdir.parent / "exit"  # outside the tree: the sandboxed work cannot write it


def git_dir(workdir: Path) -> Path:
    """The repository of a work tree, outside it: the work may read it, never change its
    config or hooks (the daemon runs git there, outside the sandbox)."""
    return workdir.parent / "git"
