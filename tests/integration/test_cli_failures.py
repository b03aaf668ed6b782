"""A real daemon that stops answering: the CLI says so in one line, exit 3, within --timeout."""

import signal
import subprocess
import sys
import time

from tests.integration.harness import Cluster


def test_a_stopped_daemon_is_exit_3_within_the_timeout(cluster: Cluster):
    (daemon,) = cluster.full_mesh(["a"])
    daemon.signal(signal.SIGSTOP)  # the socket still accepts; nothing reads or answers
    try:
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bzzz",
                "--config",
                str(daemon.config_path),
                "status",
                "--timeout",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        took = time.monotonic() - started
    finally:
        daemon.signal(signal.SIGCONT)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"bzzz: no answer from the daemon on {daemon.socket_path} within 1 s"
    ]
    assert took < 3, f"took {took:.1f} s"
    assert daemon.status()["peer_id"] == daemon.peer_id, "it answers again once continued"
