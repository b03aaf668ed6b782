"""Real `bzzz run` processes on loopback, each with its own config, state dir and sockets.

Commands run without the sandbox unless a test asks for it (`executor={"sandbox":
"bubblewrap", ...}`): most task tests record what ran in files outside the work tree, which the
sandbox rightly forbids; the sandbox has tests of its own.

A daemon reports READY=1 on a notify socket that the harness owns (as systemd would), so tests
wait for the event rather than for time. Whatever is started is stopped at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from bzzz import control

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll a condition that has no event to await (another process's state)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def toml_table(values: dict[str, Any]) -> str:
    """Key = value lines; JSON spells strings, numbers, booleans and lists as TOML does."""
    return "\n".join(f"{key} = {json.dumps(value)}" for key, value in values.items())


class Daemon:
    def __init__(self, root: Path, name: str, **settings: Any) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config_path = self.dir / "config.toml"
        self.log_path = self.dir / "daemon.log"
        self.notify_path = self.dir / "notify.sock"
        self.socket_path = self.dir / "run" / "control.sock"
        self.settings = {
            "capabilities": ["general", f"cap-{name}"],
            "bootstrap": [],
            "interval": 1,
            "metrics": "",
            # The web view: off unless a test asks (True: 127.0.0.1 on a free port, or an
            # ADDRESS:PORT), as daemons of one machine cannot share its default port.
            "http": "",
            "http_token_file": "",
            "extra": "",
            "ip": "127.0.0.1",
            "mdns": False,  # mDNS only ever runs inside a test's own network namespace
            "network_id": "bzzz",
            "log_format": "console",
            # A command prefix, e.g. ["ip", "netns", "exec", "ns1"], to run the daemon elsewhere.
            "prefix": [],
            # Config sections as dicts (e.g. {"repositories": [...]}), and extra environment.
            "github": {},
            "executor": {},
            "env": {},
            **settings,
        }
        if self.settings["http"] is True:
            self.settings["http"] = f"127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_mark = 0  # the log's size when the daemon last started
        self._notify: socket.socket | None = None
        self.notifications: list[str] = []
        self.write_config()
        self.peer_id = self.cli("init", "--json")["peer_id"]

    @property
    def address(self) -> str:
        return f"/ip4/{self.settings['ip']}/tcp/{self.port}/p2p/{self.peer_id}"

    def write_config(self) -> None:
        s = self.settings
        self.config_path.write_text(
            f"""
[node]
agent_id = "agent-{self.name}"
capabilities = {toml_list(s["capabilities"])}
models = ["model-{self.name}"]
log_format = "{s["log_format"]}"
state_dir = "{self.dir / "state"}"
runtime_dir = "{self.dir / "run"}"

[p2p]
listen = ["/ip4/{s["ip"]}/tcp/{self.port}"]
bootstrap_peers = {toml_list(s["bootstrap"])}
capability_interval = {s["interval"]}
network_id = "{s["network_id"]}"

[mdns]
enabled = {"true" if s["mdns"] else "false"}

[control]
metrics_listen = "{s["metrics"]}"
http_listen = "{s["http"]}"
http_token_file = "{s["http_token_file"]}"

[github]
{toml_table(s["github"])}

[executor]
{toml_table({"sandbox": "none", **s["executor"]})}
{s["extra"]}
"""
        )

    def cli(self, *args: str) -> Any:
        result = subprocess.run(
            [sys.executable, "-m", "bzzz", "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, f"bzzz {' '.join(args)}: {result.stderr}"
        return json.loads(result.stdout) if "--json" in args else result.stdout

    def start(self, wait: bool = True) -> None:
        self.notify_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(self.notify_path))
        self.notifications = []
        self._log_mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify_path), **self.settings["env"]}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *self.settings["prefix"],
                    sys.executable,
                    "-m",
                    "bzzz",
                    "--config",
                    str(self.config_path),
                    "run",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if wait:
            self.wait_notified("READY=1", timeout=20)

    def wait_notified(self, field: str, timeout: float) -> None:
        """Block until the daemon sends `field` on its notify socket."""
        assert self._notify is not None
        deadline = time.monotonic() + timeout
        while not any(field in n.split("\n") for n in self.notifications):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {field} within {timeout} s\n{self.log()}")
            self._notify.settimeout(min(remaining, 0.5))
            try:
                self.notifications.append(self._notify.recv(4096).decode())
            except TimeoutError:
                if self.process is not None and self.process.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited with {self.process.returncode}\n{self.log()}"
                    ) from None

    @property
    def web_url(self) -> str:
        """The web view's root URL (the daemon was added with `http=True`)."""
        assert self.settings["http"], f"{self.name} serves no web view"
        return f"http://{self.settings['http']}"

    def wait_web(self, timeout: float = 20) -> str:
        """Block until the web view listens (it starts after READY); return its URL."""
        mark = self._log_mark
        wait_until(
            lambda: b"web_listening" in self.log_path.read_bytes()[mark:],
            timeout,
            f"{self.name}'s web view",
        )
        return self.web_url

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = control.request(self.socket_path, "status", timeout=5)
        return result

    def peer(self, peer_id: str) -> dict[str, Any] | None:
        for row in self.status()["peers"]:
            if row["peer_id"] == peer_id:
                return dict(row)
        return None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Stop the daemon if it runs (SIGTERM, then SIGKILL); close the notify socket."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Cluster:
    """Daemons created by one test; `close` stops every one of them."""

    @classmethod
    @contextlib.contextmanager
    def in_temporary_directory(cls) -> Iterator[Cluster]:
        """A cluster in a fresh short directory (unix socket paths must stay under 108
        bytes), stopped and removed on the way out, also on failure."""
        root = Path(tempfile.mkdtemp(prefix="bzzz-"))
        cluster = cls(root)
        try:
            yield cluster
        finally:
            cluster.close()
            shutil.rmtree(root, ignore_errors=True)

    def __init__(self, root: Path) -> None:
        self.root = root
        self.daemons: list[Daemon] = []

    def add(self, name: str, **settings: Any) -> Daemon:
        if settings.get("mdns") and not settings.get("prefix"):
            raise AssertionError("mDNS must only run inside a test's own network namespace")
        daemon = Daemon(self.root, name, **settings)
        self.daemons.append(daemon)
        return daemon

    def full_mesh(self, names: list[str], **settings: Any) -> list[Daemon]:
        """Daemons that all share one bootstrap list naming every one of them (as an operator
        would distribute it), started together."""
        daemons = [self.add(name, **settings) for name in names]
        return self.start_together(daemons, timeout=20)

    @staticmethod
    def start_together(
        daemons: list[Daemon], timeout: float = 30, meshed: bool = True
    ) -> list[Daemon]:
        """Start `daemons` at once (each one's bootstrap list naming them all, if `meshed`)
        and wait until every one has told READY."""
        if meshed:
            addresses = [d.address for d in daemons]
            for daemon in daemons:
                daemon.settings["bootstrap"] = addresses
                daemon.write_config()
        for daemon in daemons:
            daemon.start(wait=False)
        for daemon in daemons:
            daemon.wait_notified("READY=1", timeout=timeout)
        return daemons

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.stop()


async def await_until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """`wait_until` for async tests: the loop keeps running while we poll."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
