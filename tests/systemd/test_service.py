"""The service under a real systemd (sdbox): install, run, crash, stall, stop, reinstall, remove.

The tests run in order on one box: each step starts from where the previous one left the box,
as an operator's host would be.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import wait_until
from tests.systemd.sdbox import Box, unavailable

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]


@pytest.fixture(scope="module")
def box(staged: Path) -> Iterator[Box]:
    tag = os.getpid() % 10000
    machine = Box(f"bzsvc{tag}", net=f"sdbz{tag}:10.77.{tag % 250}.2/24")
    machine.up()
    try:
        machine.cp(staged / "bzzz", "/srv/bzzz")
        machine.cp(staged / "wheels", "/srv/wheels")
        yield machine
    finally:
        machine.down()


def main_pid(box: Box) -> int:
    return int(box.exec("systemctl", "show", "-p", "MainPID", "--value", "bzzz").stdout)


def is_active(box: Box) -> bool:
    return box.exec("systemctl", "is-active", "bzzz", check=False).stdout.strip() == "active"


def status(box: Box) -> dict:
    return json.loads(box.exec("bzzz", "status", "--json").stdout)


def journal(box: Box, since_pid: int | None = None) -> list[dict]:
    args = ["journalctl", "-u", "bzzz", "-o", "json", "--no-pager"]
    if since_pid is not None:
        args.append(f"_PID={since_pid}")
    return [json.loads(line) for line in box.exec(*args).stdout.splitlines() if line]


def message_of(entry: dict) -> str:
    message = entry.get("MESSAGE", "")
    return bytes(message).decode() if isinstance(message, list) else str(message)


def install(box: Box) -> subprocess.CompletedProcess[str]:
    return box.exec("/srv/bzzz/install-service.sh", "--wheelhouse", "/srv/wheels", timeout=300)


def test_install_starts_the_service(box: Box):
    result = install(box)
    assert "bzzz 0.1.0 is running" in result.stdout
    assert "wrote /etc/bzzz/config.toml from the example" in result.stdout
    assert is_active(box)
    node = status(box)
    assert node["peer_id"].startswith("12D3KooW")
    assert node["state_dir"] == "/var/lib/bzzz"
    # The key belongs to the service user, readable by no one else.
    assert box.sh("stat -c '%U %a' /var/lib/bzzz/identity.key").split() == ["bzzz", "600"]
    assert box.sh("stat -c '%U %G %a' /run/bzzz/control.sock").split() == ["bzzz", "bzzz", "660"]


def test_start_events_reach_the_journal_with_priorities(box: Box):
    entries = {e["BZZZ_EVENT"]: e for e in journal(box, main_pid(box)) if "BZZZ_EVENT" in e}
    assert entries["node_ready"]["PRIORITY"] == "6"
    assert entries["node_starting"]["PRIORITY"] == "6"
    assert entries["node_ready"]["SYSLOG_IDENTIFIER"] == "bzzz"
    assert "node_ready" in box.exec("journalctl", "-u", "bzzz", "-p", "info", "--no-pager").stdout
    assert (
        "node_ready" not in box.exec("journalctl", "-u", "bzzz", "-p", "err", "--no-pager").stdout
    )


def test_security_exposure_is_at_most_2_5(box: Box):
    output = box.exec("systemd-analyze", "security", "bzzz", "--no-pager").stdout
    exposure = float(
        re.search(r"Overall exposure level for bzzz.service: ([\d.]+)", output).group(1)
    )  # type: ignore[union-attr]
    print(f"systemd-analyze security bzzz: exposure {exposure}")
    assert exposure <= 2.5


def test_kill_9_is_restarted_within_15_s_with_the_same_peer_id(box: Box):
    before = status(box)["peer_id"]
    pid = main_pid(box)
    box.exec("kill", "-9", str(pid))
    killed = time.monotonic()
    wait_until(lambda: main_pid(box) not in (0, pid) and is_active(box), 15, "a restart")
    print(f"restarted {time.monotonic() - killed:.1f} s after kill -9")
    assert status(box)["peer_id"] == before


def test_a_stalled_event_loop_is_killed_by_the_watchdog(box: Box):
    pid = main_pid(box)
    box.exec("kill", "-STOP", str(pid))  # the loop stops; so do its WATCHDOG=1 pings
    wait_until(lambda: main_pid(box) not in (0, pid) and is_active(box), 75, "watchdog restart")
    text = box.exec("journalctl", "-u", "bzzz", "--no-pager").stdout
    assert "Watchdog timeout" in text


def test_stop_is_clean(box: Box):
    pid = main_pid(box)
    box.exec("systemctl", "stop", "bzzz", timeout=60)
    assert not is_active(box)
    shown = box.exec("systemctl", "show", "-p", "Result", "-p", "ExecMainStatus", "bzzz").stdout
    assert "Result=success" in shown and "ExecMainStatus=0" in shown
    events = [message_of(e) for e in journal(box, pid)]
    assert any("node_stopping" in m and "signal=SIGTERM" in m for m in events)
    assert any("node_stopped" in m for m in events)


def test_reinstall_keeps_an_edited_config_and_restarts(box: Box):
    box.sh('sed -i \'s/^agent_id = ""/agent_id = "edited-by-operator"/\' /etc/bzzz/config.toml')
    edited = box.sh("sha256sum /etc/bzzz/config.toml")
    result = install(box)
    assert "keeping the existing /etc/bzzz/config.toml" in result.stdout
    assert box.sh("sha256sum /etc/bzzz/config.toml") == edited
    assert is_active(box)
    assert status(box)["agent_id"] == "edited-by-operator"


def test_reinstall_refuses_a_broken_config_and_leaves_the_service_running(box: Box):
    pid = main_pid(box)
    box.sh("cp /etc/bzzz/config.toml /root/good.toml")
    box.sh("echo 'bogus_key = 1' >> /etc/bzzz/config.toml")
    try:
        result = box.exec(
            "/srv/bzzz/install-service.sh", "--wheelhouse", "/srv/wheels", timeout=300, check=False
        )
        assert result.returncode != 0
        assert "control.bogus_key: unknown key" in result.stderr
        assert "does not validate" in result.stderr
        assert main_pid(box) == pid, "the running service was left alone"
    finally:
        box.sh("cp /root/good.toml /etc/bzzz/config.toml")


def test_uninstall_keeps_state_and_purge_removes_it(box: Box):
    peer_id = status(box)["peer_id"]
    result = box.exec("/srv/bzzz/uninstall-service.sh")
    assert "kept identity key and audit log in /var/lib/bzzz" in result.stdout
    assert "kept config and token in /etc/bzzz" in result.stdout
    assert box.exec("systemctl", "cat", "bzzz", check=False).returncode != 0
    assert box.exec("test", "-e", "/etc/systemd/system/bzzz.service", check=False).returncode
    assert box.exec("test", "-e", "/opt/bzzz", check=False).returncode
    assert box.exec("test", "-f", "/var/lib/bzzz/identity.key", check=False).returncode == 0

    # Installed again, it is the same node.
    install(box)
    assert status(box)["peer_id"] == peer_id

    result = box.exec("/srv/bzzz/uninstall-service.sh", "--purge")
    assert "purged" in result.stdout
    for path in ("/etc/bzzz", "/var/lib/bzzz", "/opt/bzzz", "/usr/local/bin/bzzz"):
        assert box.exec("test", "-e", path, check=False).returncode != 0, path
    assert box.exec("getent", "passwd", "bzzz", check=False).returncode != 0
