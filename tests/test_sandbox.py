"""The sandbox, with the real bubblewrap: what a command inside can see, write and reach."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest

from bzzz.sandbox import Limits, Sandbox, output_of
from bzzz.tasks.executor import run_command

# The system's Python, not the virtualenv's: a checkout under /tmp (as CI may clone it) is out
# of the sandbox's sight, which has a private /tmp.
PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "python3"


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Path]:
    """A node's files: its state dir (key, other tasks' trees, this task's tree inside), a
    config dir with a token file, a token file elsewhere."""
    state = tmp_path / "state"
    work = state / "work" / "task-1"
    other = state / "work" / "task-2"
    for directory in (work, other, tmp_path / "etc"):
        directory.mkdir(parents=True)
    (state / "node.key").write_text("KEY")
    (other / "theirs.txt").write_text("THEIRS")
    (tmp_path / "etc" / "config.toml").write_text("token = 'CONFIG'")
    (tmp_path / "token").write_text("TOKEN")
    return {"state": state, "work": work, "etc": tmp_path / "etc", "token": tmp_path / "token"}


def sandbox(node: dict[str, Path], **options: object) -> Sandbox:
    hidden = [node["state"], node["etc"], node["token"]]
    return Sandbox("bubblewrap", hidden, **options)  # type: ignore[arg-type]


async def sh(box: Sandbox, work: Path, script: str) -> tuple[int | None, str]:
    run = await run_command(["sh", "-c", script], None, work, {"PATH": "/usr/bin:/bin"}, 30, box)
    return run.exit_code, run.output


async def test_the_work_tree_is_the_only_writable_place_and_the_node_is_hidden(node):
    box = sandbox(node)
    work, state = node["work"], node["state"]
    code, output = await sh(
        box,
        work,
        f"echo made > made.txt && echo tmp > /tmp/t && cat /tmp/t; "
        f"cat {state}/node.key {state}/work/task-2/theirs.txt {node['etc']}/config.toml "
        f"{node['token']}; ls -A {state}; echo x > {state}/planted; echo x > /usr/planted; "
        f"echo x > {work.parent}/planted; echo end",
    )
    assert code == 0 and output.endswith("end\n")
    assert "tmp" in output
    for secret in ("KEY", "THEIRS", "CONFIG", "TOKEN"):
        assert secret not in output
    assert output.count("Read-only file system") == 3, "the state dir, /usr, the tree's parent"
    assert on_disk(
        work / "made.txt", state / "planted", work.parent / "planted", "/usr/planted"
    ) == [
        "made\n",
        None,
        None,
        None,
    ]


def on_disk(*paths: Path | str) -> list[str | None]:
    return [Path(p).read_text() if Path(p).exists() else None for p in paths]


async def test_the_network_is_off_unless_allowed(node):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    probe = (
        f"{PYTHON} -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2)"
        "; print('connected')\""
    )
    try:
        code, output = await sh(sandbox(node), node["work"], probe)
        assert code != 0 and "connected" not in output
        code, output = await sh(sandbox(node, network=True), node["work"], probe)
        assert code == 0 and "connected" in output
    finally:
        listener.close()


async def test_limits_hold_inside(node):
    box = sandbox(node, limits=Limits(memory_mb=256, processes=0, cpu_s=1))
    code, output = await sh(box, node["work"], f"{PYTHON} -c 'bytearray(512 * 1024 * 1024)'")
    assert code != 0 and "MemoryError" in output
    code, _ = await sh(box, node["work"], "while :; do :; done")
    assert code is not None and code != 0, "killed at the CPU-time limit (SIGXCPU)"


async def test_a_missing_bubblewrap_is_a_reason_not_to_work(node, tmp_path, monkeypatch):
    assert await sandbox(node).problem(tmp_path / "probe") is None
    monkeypatch.setenv("PATH", str(tmp_path))
    assert await sandbox(node).problem(tmp_path / "probe") == (
        "bwrap is not installed (apt-get install bubblewrap)"
    )
    assert await Sandbox("none", []).problem(tmp_path / "probe") is None


async def test_with_the_services_proc_other_processes_stay_out_of_reach(node, tmp_path):
    """Where the kernel refuses a private /proc (the shipped unit, a container), the sandbox
    sees the service's: the daemon's environment and another task's tree must stay out of
    reach (a sandbox is a user namespace of its own)."""
    daemon = await asyncio.create_subprocess_exec(
        "sleep", "60", env={**os.environ, "SECRET_TOKEN": "s3cret"}
    )
    other = tmp_path / "state" / "work" / "task-2"
    busy = asyncio.create_task(sh(sandbox(node), other, "echo started > mark; sleep 60"))
    try:
        await asyncio.to_thread(wait_for, lambda: (other / "mark").exists())
        box = sandbox(node)
        box.private_proc = False
        code, output = await sh(
            box,
            node["work"],
            f"cat /proc/{daemon.pid}/environ; "
            "for p in /proc/[0-9]*; do cat $p/cwd/theirs.txt $p/root/etc/hostname; done "
            "2>/dev/null; echo spied",
        )
        assert code == 0 and output.rstrip().endswith("spied")
        assert "s3cret" not in output and "THEIRS" not in output
        assert f"/proc/{daemon.pid}/environ: Permission denied" in output
    finally:
        busy.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await busy  # its sandbox is stopped and reaped before the loop closes
        daemon.kill()
        await daemon.wait()


def wait_for(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


async def test_a_process_whose_reader_is_cancelled_is_killed_and_reaped():
    process = await asyncio.create_subprocess_exec("sleep", "60", stdout=asyncio.subprocess.PIPE)
    reader = asyncio.create_task(output_of(process, 60))
    await asyncio.sleep(0)  # the reader is waiting on the process
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert process.returncode == -signal.SIGKILL
    timed_out = await asyncio.create_subprocess_exec("sleep", "60", stdout=asyncio.subprocess.PIPE)
    assert await output_of(timed_out, 0.1) is None
    assert timed_out.returncode == -signal.SIGKILL
