"""The daemon's records in a real journal (sdbox): one entry each, sent over journald's native
protocol, with fields an operator filters on (BZZZ_EVENT, PEER, PRIORITY, CODE_FILE)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd.sdbox import Box, unavailable
from tests.systemd.test_service import install, is_active, journal, main_pid, message_of, status

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]


@pytest.fixture(scope="module")
def box(staged: Path) -> Iterator[Box]:
    tag = os.getpid() % 10000 + 2
    machine = Box(f"bzjrn{tag}")
    machine.up()
    try:
        machine.cp(staged / "bzzz", "/srv/bzzz")
        machine.cp(staged / "wheels", "/srv/wheels")
        install(machine)
        yield machine
    finally:
        machine.down()


def entries(box: Box, *matches: str) -> list[dict]:
    out = box.exec("journalctl", "-u", "bzzz", "-o", "json", "--no-pager", *matches).stdout
    return [json.loads(line) for line in out.splitlines() if line]


def test_each_record_is_an_entry_with_its_fields(box: Box):
    assert is_active(box)
    pid = main_pid(box)
    ours = journal(box, pid)
    assert ours and all(e["_TRANSPORT"] == "journal" for e in ours), "nothing on stdout"
    by_event = {e["BZZZ_EVENT"]: e for e in ours}
    ready = by_event["node_ready"]
    assert ready["PRIORITY"] == "6" and ready["SYSLOG_IDENTIFIER"] == "bzzz"
    assert ready["CODE_FILE"].endswith("/bzzz/node.py"), "one CODE_FILE, the caller's"
    assert ready["CODE_FUNC"] == "_serve" and ready["CODE_LINE"].isdigit()
    assert message_of(ready).startswith("node_ready ") and "control=/run/bzzz" in message_of(ready)
    assert by_event["node_starting"]["STATE_DIR"] == "/var/lib/bzzz"


def test_journalctl_filters_on_event_peer_and_priority(box: Box):
    peer_id = status(box)["peer_id"]
    [ready] = entries(box, f"_PID={main_pid(box)}", "BZZZ_EVENT=node_ready")
    assert ready["BZZZ_EVENT"] == "node_ready"
    mine = entries(box, f"PEER={peer_id}")
    assert "node_starting" in {e["BZZZ_EVENT"] for e in mine}
    errors = box.exec("journalctl", "-u", "bzzz", "-p", "err", "--no-pager").stdout
    assert "node_ready" not in errors


def test_node_stopped_is_the_last_entry(box: Box):
    pid = main_pid(box)
    box.exec("systemctl", "stop", "bzzz", timeout=60)
    ours = journal(box, pid)
    assert ours[-1]["BZZZ_EVENT"] == "node_stopped"
    assert ours[-2]["BZZZ_EVENT"] != "node_stopped"
