"""The sandbox every command an executor runs goes through: bubblewrap (Debian's `bubblewrap`).

Inside, the system is read-only; the work tree is the only writable place besides a private
`/tmp`; the run's git dir (beside the tree) is read-only; the node's own files are hidden (the
state dir with the key, the audit log and the other tasks' trees; the runtime dir with the
control socket; the config dir and the credentials, where the tokens are); user, mount, pid,
IPC and host-name namespaces are private, the network is off unless `executor.sandbox_network`;
the sandbox dies with the daemon. Limits (address space, processes, CPU time) are set with
`prlimit` (util-linux) and hold inside.

`/proc`: a private one where the kernel allows it. Where it does not (under the shipped unit,
whose `ProtectKernelTunables=` overmounts /proc, or on a host that is itself a container), the
service's /proc, read-only: other processes are visible by number and command line, but their
memory, environment, files and working directories are not, because a sandbox is a user
namespace of its own and the kernel lets no process trace one outside its namespace (Linux's
commoncap `cap_ptrace_access_check`): not the daemon, its git, or another task's sandbox.

`executor.sandbox = "none"` runs commands as they are: an explicit opt-out, flagged in
`bzzz status` and in every result comment.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


async def output_of(process: asyncio.subprocess.Process, time_limit: float) -> bytes | None:
    """What `process` printed, or None if it outlived `time_limit`. A process left behind (a
    timeout, a cancellation) is killed and reaped: one left to the garbage collector outlives
    its event loop and raises there."""
    try:
        async with asyncio.timeout(time_limit):
            output, _ = await process.communicate()
            return output
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        if isinstance(exc, TimeoutError):
            return None
        raise


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 8192  # address space; 0: none
    processes: int = 512  # 0: none
    cpu_s: int = 3600  # 0: none


class Sandbox:
    def __init__(
        self,
        kind: str,
        hidden: Iterable[Path],
        network: bool = False,
        limits: Limits | None = None,
    ) -> None:
        self.kind = kind
        self.network = network
        self.limits = limits or Limits()
        self._hidden = sorted({p.resolve() for p in hidden if str(p)})
        self.private_proc = True  # until the probe finds the kernel refuses one

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    def argv(
        self, command: Sequence[str], workdir: Path, readonly: Sequence[Path] = ()
    ) -> list[str]:
        """`command`, to be run in `workdir`, wrapped in the sandbox (as is with "none");
        `readonly`: paths the command may read even where they are hidden."""
        if not self.enabled:
            return list(command)
        work = workdir.resolve()
        wrapped = [*self._prlimit(), "bwrap", "--ro-bind", "/", "/", "--dev", "/dev"]
        if self.private_proc:
            wrapped += ["--proc", "/proc"]
        wrapped += ["--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
        hidden_dirs = [h for h in self._hidden if h.is_dir()]
        for hidden in self._hidden:
            if hidden.is_dir():
                wrapped += ["--tmpfs", str(hidden)]
            elif hidden.exists():
                wrapped += ["--ro-bind", "/dev/null", str(hidden)]
        # After the hiding mounts: a work tree inside the state dir is put back on top, and
        # what hides the rest is made read-only (empty, and nothing to write into).
        for path in readonly:
            if path.exists():
                wrapped += ["--ro-bind", str(path.resolve()), str(path.resolve())]
        wrapped += ["--bind", str(work), str(work), "--chdir", str(work)]
        for hidden in hidden_dirs:
            wrapped += ["--remount-ro", str(hidden)]
        wrapped += ["--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts"]
        if not self.network:
            wrapped += ["--unshare-net"]
        return [*wrapped, "--die-with-parent", "--new-session", "--", *command]

    def _prlimit(self) -> list[str]:
        limits = []
        if self.limits.memory_mb:
            limits.append(f"--as={self.limits.memory_mb * 1024 * 1024}")
        if self.limits.processes:
            limits.append(f"--nproc={self.limits.processes}")
        if self.limits.cpu_s:
            limits.append(f"--cpu={self.limits.cpu_s}")
        return ["prlimit", *limits, "--"] if limits else []

    async def problem(self, scratch: Path) -> str | None:
        """Why commands cannot run in this sandbox here, or None: a command is really run,
        with a private /proc if the kernel allows one, else with the service's."""
        if not self.enabled:
            return None
        for tool in ("bwrap", "prlimit"):
            if shutil.which(tool) is None:
                package = "bubblewrap" if tool == "bwrap" else "util-linux"
                return f"{tool} is not installed (apt-get install {package})"
        await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
        self.private_proc = True
        problem = await self._probe(scratch)
        if problem and "proc" in problem:
            self.private_proc = False
            problem = await self._probe(scratch)
        return f"bubblewrap cannot run here: {problem}" if problem else None

    async def _probe(self, scratch: Path) -> str:
        process = await asyncio.create_subprocess_exec(
            *self.argv(["sh", "-c", "echo ok > probe"], scratch),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output = await output_of(process, 30)
        if output is None:
            return "the probe timed out"
        probe = scratch / "probe"
        worked = process.returncode == 0 and await asyncio.to_thread(probe.exists)
        await asyncio.to_thread(probe.unlink, missing_ok=True)
        if worked:
            return ""
        text = output.decode(errors="replace").strip().splitlines()
        return text[-1] if text else f"exit status {process.returncode}"
