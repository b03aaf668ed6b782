"""Several `bzzz run` processes on 127.0.0.1 form a mesh and keep it up."""

import signal
import time

from tests.integration.harness import Cluster, wait_until


def sees_peers(daemon, others) -> bool:
    status = daemon.status()
    rows = {row["peer_id"]: row for row in status["peers"]}
    return all(
        other.peer_id in rows
        and rows[other.peer_id]["connected"]
        and rows[other.peer_id]["agent_id"] == f"agent-{other.name}"
        # The availability broadcast follows the capability broadcast: wait for both.
        and rows[other.peer_id]["status"] != "unknown"
        for other in others
    )


def test_three_nodes_form_a_full_mesh_and_see_each_others_capabilities(cluster: Cluster):
    daemons = cluster.full_mesh(["a", "b", "c"])
    for daemon in daemons:
        others = [d for d in daemons if d is not daemon]
        wait_until(lambda d=daemon, o=others: sees_peers(d, o), 15, f"{daemon.name} sees others")

    for daemon in daemons:
        status = daemon.status()
        assert status["peer_id"] == daemon.peer_id
        assert status["agent_id"] == f"agent-{daemon.name}"
        assert sorted(status["connected"]) == sorted(d.peer_id for d in daemons if d is not daemon)
        for other in daemons:
            if other is daemon:
                continue
            row = daemon.peer(other.peer_id)
            assert row is not None
            assert row["capabilities"] == ["general", f"cap-{other.name}"]
            assert row["models"] == [f"model-{other.name}"]
            assert row["status"] == "ready"
            assert row["stale"] is False
        coordination = status["messages"]["topics"]["bzzz/coordination/v1"]
        assert coordination["accepted"] >= 4 and coordination["published"] >= 2
        assert sum(status["messages"]["rejected"].values()) == 0


def test_a_killed_node_turns_stale_and_rejoins_with_its_peer_id(cluster: Cluster):
    a, b, c = cluster.full_mesh(["a", "b", "c"])
    for daemon, others in ((a, [b, c]), (b, [a, c]), (c, [a, b])):
        wait_until(lambda d=daemon, o=others: sees_peers(d, o), 15, f"{daemon.name} meshed")

    c.signal(signal.SIGKILL)
    c.wait_exit(5)
    killed_at = time.monotonic()
    for survivor in (a, b):
        row = wait_until(
            lambda s=survivor: (r := s.peer(c.peer_id)) and r["stale"] and r,
            10,
            f"{survivor.name} marks c stale",
        )
        assert row["connected"] is False
    # Stale means three silent beats (1 s each here), not sooner.
    assert time.monotonic() - killed_at >= 2.5

    c.start()
    assert c.status()["peer_id"] == c.peer_id
    for daemon, others in ((a, [c]), (b, [c]), (c, [a, b])):
        wait_until(lambda d=daemon, o=others: sees_peers(d, o), 15, f"{daemon.name} rejoined")
    assert a.peer(c.peer_id)["stale"] is False


def test_sigterm_stops_cleanly_and_tells_systemd(cluster: Cluster):
    (a,) = cluster.full_mesh(["a"])
    assert any(n.startswith("READY=1") for n in a.notifications)
    started = time.monotonic()
    a.signal(signal.SIGTERM)
    a.wait_notified("STOPPING=1", timeout=5)
    assert a.wait_exit(5) == 0
    assert time.monotonic() - started < 5
    assert not a.socket_path.exists(), "the control socket is removed on the way out"
    log = a.log()
    assert "node_stopping" in log and "node_stopped" in log
