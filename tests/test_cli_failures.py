"""Every CLI failure is one line on stderr and the documented exit code, never a traceback.

Real `bzzz` processes against real sockets and files. The permission cases run the CLI as
`nobody` (root passes every permission check), so they need root and `setpriv`.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bzzz import __version__
from bzzz.auditlog.log import AuditLog, ChainWriter
from bzzz.auditlog.segments import ChainStore
from bzzz.p2p import Identity

AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
needs_nobody = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run the CLI as an unprivileged user",
)


class Node:
    """A config, a state dir and a runtime dir, with no daemon: what each test sets up there
    is the failure."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.run = root / "run"
        self.socket = self.run / "control.sock"
        self.config = root / "config.toml"
        self.config.write_text(
            f'[node]\nstate_dir = "{self.state}"\nruntime_dir = "{self.run}"\n'
            "[mdns]\nenabled = false\n"
        )

    def bzzz(
        self, *args: str, nobody: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "bzzz", "--config", str(self.config), *args]
        return subprocess.run(
            [*AS_NOBODY, *command] if nobody else command,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **(env or {})},
            cwd=self.root,
        )


@pytest.fixture
def node() -> Iterator[Node]:
    # A short path: unix socket paths must stay under 108 bytes. Open to all, for `nobody`.
    root = Path(tempfile.mkdtemp(prefix="bzzz-cli-"))
    root.chmod(0o755)
    try:
        yield Node(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def listening_socket(path: Path) -> socket.socket:
    """A socket that the kernel accepts connections on for us, and nobody answers."""
    path.parent.mkdir(mode=0o755, exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    return server


def answering_socket(path: Path, answer: bytes) -> socket.socket:
    """A socket that gives every request the same answer line."""
    server = listening_socket(path)

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed by the test
            with client:
                client.recv(65536)
                client.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return server


# ---- the control socket ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_daemon_that_does_not_answer_is_exit_3_within_the_timeout(node: Node, where: str):
    with listening_socket(node.socket):
        started = time.monotonic()
        if where == "before":
            result = node.bzzz("--timeout", "1", "status")
        else:
            result = node.bzzz("status", "--timeout", "1")
        took = time.monotonic() - started
    assert result.returncode == 3
    assert one_line(result) == f"bzzz: no answer from the daemon on {node.socket} within 1 s"
    assert took < 3, f"took {took:.1f} s"


def test_no_daemon_is_exit_3(node: Node):
    result = node.bzzz("peers")
    assert result.returncode == 3
    assert one_line(result).startswith(f"bzzz: no bzzz daemon answers on {node.socket}")


def test_a_bad_timeout_is_a_usage_error(node: Node):
    result = node.bzzz("status", "--timeout", "0")
    assert result.returncode == 2
    assert "not a positive number of seconds" in result.stderr


@needs_nobody
def test_a_socket_we_may_not_use_names_the_path_and_the_group_to_join(node: Node):
    group = grp.getgrnam("daemon")  # a group nobody is not in
    with listening_socket(node.socket):
        os.chown(node.socket, 0, group.gr_gid)
        node.socket.chmod(0o660)
        result = node.bzzz("status", nobody=True)
    assert result.returncode == 1
    assert one_line(result) == (
        f"bzzz: permission denied: {node.socket} (join the group that owns it: "
        "`sudo usermod -aG daemon $USER` and log in again, or run with sudo)"
    )


@needs_nobody
def test_a_config_we_may_not_read_names_the_group_to_join(node: Node):
    # /etc/bzzz/config.toml is root:bzzz 0640: an operator not yet in the group meets this.
    os.chown(node.config, 0, grp.getgrnam("daemon").gr_gid)
    node.config.chmod(0o640)
    result = node.bzzz("status", nobody=True)
    assert result.returncode == 1
    assert one_line(result) == (
        f"bzzz: permission denied: {node.config} (join the group that owns it: "
        "`sudo usermod -aG daemon $USER` and log in again, or run with sudo)"
    )


@needs_nobody
def test_a_socket_only_root_may_use_says_sudo(node: Node):
    with listening_socket(node.socket):
        node.socket.chmod(0o000)
        result = node.bzzz("status", nobody=True)
    assert result.returncode == 1
    assert one_line(result) == f"bzzz: permission denied: {node.socket} (run with sudo)"


def test_an_unexpected_failure_is_one_line_unless_bzzz_debug(node: Node):
    # A "daemon" whose answer the command cannot use: a bug's shape, not an operator's fault.
    with answering_socket(node.socket, b'{"ok": true, "result": 5}\n'):
        result = node.bzzz("discuss")
        debug = node.bzzz("discuss", env={"BZZZ_DEBUG": "1"})
    assert result.returncode == 1
    assert one_line(result).startswith("bzzz: discuss: TypeError: ")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr


def test_something_else_on_the_socket_is_a_runtime_failure(node: Node):
    with answering_socket(node.socket, b"SSH-2.0-OpenSSH_9.6\r\n"):
        result = node.bzzz("status")
    assert result.returncode == 1
    assert one_line(result) == (
        f"bzzz: what answers on {node.socket} does not speak bzzz's control protocol"
    )


# ---- the audit log on disk ------------------------------------------------------------------


def write_log(root: Path, identity: Identity, entries: list[tuple[str, dict]]) -> None:
    async def write() -> None:
        author = identity.peer_id
        log = AuditLog(
            ChainWriter(ChainStore(root / author, author), "always"), author, identity.sign
        )
        await log.start()
        for type, data in entries:
            await log.append(type, data)
        await log.stop()

    asyncio.run(write())


@pytest.mark.parametrize("command", ["show", "verify", "follow"])
@pytest.mark.parametrize("state", ["missing", "empty"])
def test_log_commands_without_a_log_exit_2(node: Node, command: str, state: str):
    if state == "empty":
        (node.state / "auditlog").mkdir(parents=True)
    result = node.bzzz("log", command)
    assert result.returncode == 2
    assert one_line(result) == (
        f"bzzz: no audit log in {node.state} (is the state dir right? see --config)"
    )


@needs_nobody
@pytest.mark.parametrize("command", ["show", "verify", "follow"])
def test_a_state_dir_we_may_not_read_names_the_path(node: Node, command: str):
    write_log(node.state / "auditlog", Identity.generate(), [("node_started", {})])
    os.chown(node.state, 0, grp.getgrnam("daemon").gr_gid)
    node.state.chmod(0o750)
    result = node.bzzz("log", command, nobody=True)
    assert result.returncode == 1
    assert one_line(result) == (
        f"bzzz: permission denied: {node.state / 'auditlog'} (join the group that owns "
        f"{node.state}: `sudo usermod -aG daemon $USER` and log in again, or run with sudo)"
    )
    node.state.chmod(0o700)
    os.chown(node.state, 0, 0)
    result = node.bzzz("log", command, nobody=True)
    assert one_line(result).endswith("(run with sudo)")


@pytest.fixture
def peers(node: Node) -> dict[str, Identity]:
    """Logs by four peers: a and b name themselves; a heard of e's agent id; c and d share
    one agent id."""
    ids = {name: Identity.generate() for name in "abcde"}
    root = node.state / "auditlog"
    write_log(
        root,
        ids["a"],
        [
            ("node_started", {"version": "0.1.0", "agent_id": "agent-a"}),
            ("capability_changed", {"peer": ids["e"].peer_id, "agent_id": "agent-e"}),
        ],
    )
    write_log(root, ids["b"], [("node_started", {"version": "0.1.0", "agent_id": "agent-b"})])
    write_log(root, ids["c"], [("node_started", {"agent_id": "twin"})])
    write_log(root, ids["d"], [("node_started", {"agent_id": "twin"})])
    write_log(root, ids["e"], [("tick", {})])
    return ids


def authors_shown(node: Node, author: str) -> set[str]:
    result = node.bzzz("log", "show", "--json", "--author", author)
    assert result.returncode == 0, result.stderr
    return {json.loads(line)["author"] for line in result.stdout.splitlines()}


def test_author_by_peer_id_its_ending_or_agent_id(node: Node, peers: dict[str, Identity]):
    b = peers["b"].peer_id
    for form in (b, b[-6:], b[-10:], f"{b[:6]}…{b[-6:]}", "agent-b"):
        assert authors_shown(node, form) == {b}, form
    # An agent id known only from what another node heard.
    assert authors_shown(node, "agent-e") == {peers["e"].peer_id}


def test_an_unknown_or_ambiguous_author_is_a_usage_error(node: Node, peers: dict[str, Identity]):
    unknown = node.bzzz("log", "show", "--author", "agent-z")
    assert unknown.returncode == 2
    assert one_line(unknown) == (
        f"bzzz: --author agent-z: no log in {node.state / 'auditlog'} by that peer id, "
        "peer id ending or agent id"
    )
    short = node.bzzz("log", "show", "--author", peers["a"].peer_id[-5:])
    assert short.returncode == 2, "five characters are too few to name a peer"
    twins = node.bzzz("log", "show", "--author", "twin")
    assert twins.returncode == 2
    line = one_line(twins)
    assert line.startswith("bzzz: --author twin names 2 logs: ")
    assert peers["c"].peer_id in line and peers["d"].peer_id in line


# ---- the version ----------------------------------------------------------------------------


def test_version_json_and_dash_dash_version(node: Node):
    result = node.bzzz("version", "--json")
    assert result.returncode == 0
    version = json.loads(result.stdout)
    assert version["version"] == __version__
    assert version["python"] == ".".join(map(str, sys.version_info[:3]))
    assert version["libp2p"].count(".") >= 1
    plain = subprocess.run(
        [sys.executable, "-m", "bzzz", "--version"], capture_output=True, text=True, timeout=30
    )
    assert plain.returncode == 0
    assert plain.stdout.strip() == f"bzzz {__version__}"
