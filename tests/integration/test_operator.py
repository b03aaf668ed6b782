"""The operator's view of a 3-node cluster: the status table, clean stops, a quiet journal."""

import json
import subprocess
import sys
import time

import pytest

from tests.integration.harness import Cluster, Daemon, wait_until


def status_text(daemon: Daemon) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bzzz", "--config", str(daemon.config_path), "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def table_rows(text: str) -> list[list[str]]:
    """The cluster table's rows (after its NODE header, until the blank line)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("NODE "))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def full_view(daemons: list[Daemon]) -> bool:
    """Every node lists every node, each with 2 connected peers as that node reports them."""
    for daemon in daemons:
        cluster = daemon.status()["cluster"]
        if len(cluster) != 3 or any(row["connected_peers"] != 2 for row in cluster):
            return False
    return True


def test_status_is_the_cluster_table_within_100_columns(cluster: Cluster):
    daemons = cluster.full_mesh(["a", "b", "c"])
    wait_until(lambda: full_view(daemons), 30, "every node sees 3 nodes with 2 peers each")
    for daemon in daemons:
        text = status_text(daemon)
        assert max(len(line) for line in text.splitlines()) <= 100, text
        rows = table_rows(text)
        assert sorted(row[0] for row in rows) == ["agent-a", "agent-b", "agent-c"], text
        own = next(row for row in rows if row[0] == f"agent-{daemon.name}")
        assert own[1] == "*"  # this node's row is marked
        assert [row[row.index("ready") + 1] for row in rows] == ["2", "2", "2"], text
        for line in ("audit log:", "github:", "antennae:", "messages:"):
            assert line in text
        assert f"/ip4/127.0.0.1/tcp/{daemon.port}/p2p/{daemon.peer_id}" in text


def test_a_clean_stop_is_a_peer_that_left_not_a_stale_one(cluster: Cluster):
    a, b = cluster.full_mesh(["a", "b"])
    wait_until(lambda: (r := a.peer(b.peer_id)) and r["agent_id"], 20, "a knows b")
    b.stop()
    wait_until(lambda: (r := a.peer(b.peer_id)) and r["state"] == "left", 10, "b left")
    assert "peer_left" in a.log()
    row = a.peer(b.peer_id)
    assert row is not None and row["stale"] is False
    [b_row] = [r for r in a.status()["cluster"] if r["peer_id"] == b.peer_id]
    assert b_row["state"] == "left"


def warnings(daemon: Daemon, since: int) -> list[dict]:
    """The warning (and worse) lines of a JSON log, from byte `since` on."""
    lines = daemon.log_path.read_bytes()[since:].decode(errors="replace").splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    return [e for e in events if e.get("level") in ("warning", "error", "critical")]


def lines_after_stop(daemon: Daemon) -> list[str]:
    lines = daemon.log().splitlines()
    stops = [i for i, line in enumerate(lines) if '"node_stopped"' in line]
    assert stops, "the daemon said node_stopped"
    return lines[stops[-1] + 1 :]


@pytest.mark.timeout(300)
def test_a_peer_down_two_minutes_and_a_restart_cost_at_most_5_warnings(cluster: Cluster):
    a, b, c = cluster.full_mesh(["a", "b", "c"], log_format="json")
    wait_until(lambda: full_view([a, b, c]), 30, "the mesh is full")
    marks = {d.name: d.log_path.stat().st_size for d in (a, b)}
    c.stop()
    down_since = time.monotonic()
    b.stop()
    b.start()
    wait_until(lambda: (r := a.peer(b.peer_id)) and r["state"] == "connected", 20, "b back")
    # c stays down for two minutes: a and b keep dialling it (it is their bootstrap peer).
    time.sleep(max(0.0, 120 - (time.monotonic() - down_since)))
    c.start()
    wait_until(lambda: full_view([a, b, c]), 60, "the mesh is full again")
    found = warnings(a, marks["a"]) + warnings(b, marks["b"])
    assert len(found) <= 5, [(w["event"], w.get("peer")) for w in found]
    assert {w["event"] for w in found} <= {"peer_unreachable"}, found
    for daemon in (a, b, c):
        daemon.stop()
        assert lines_after_stop(daemon) == [], daemon.name
