"""The daemon as an operator meets it: exit codes, clear errors, metrics, redialling."""

import json
import socket
import subprocess
import sys
import urllib.request

from tests.integration.harness import Cluster, free_port, wait_until


def bzzz(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bzzz", *args], capture_output=True, text=True, timeout=timeout
    )


def test_status_without_a_daemon_exits_3(cluster: Cluster):
    daemon = cluster.add("a")
    result = bzzz("--config", str(daemon.config_path), "status")
    assert result.returncode == 3
    assert f"no bzzz daemon answers on {daemon.socket_path}" in result.stderr


def test_run_with_a_broken_config_exits_2_naming_file_and_key(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[p2p]\ncapability_interval = -1\n[mdns]\nenabled = "yes"\n')
    result = bzzz("--config", str(path), "run")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"bzzz: {path}: p2p.capability_interval: Input should be greater than 0",
        f"bzzz: {path}: mdns.enabled: Input should be a valid boolean",
    ]


def test_a_second_daemon_on_the_same_socket_refuses_to_start(cluster: Cluster):
    (a,) = cluster.full_mesh(["a"])
    twin = cluster.add("twin")
    # Its own port and state dir, but the same control socket.
    twin.config_path.write_text(
        a.config_path.read_text()
        .replace(f"tcp/{a.port}", f"tcp/{twin.port}")
        .replace(str(a.dir / "state"), str(twin.dir / "state"))
    )
    result = bzzz("--config", str(twin.config_path), "run", timeout=30)
    assert result.returncode == 1
    assert f"another bzzz daemon answers on {a.socket_path}" in result.stdout
    assert a.status()["peer_id"] == a.peer_id, "the first daemon is untouched"


def test_a_taken_listen_port_is_a_clear_failure(cluster: Cluster):
    daemon = cluster.add("a")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", daemon.port))
        squatter.listen()
        result = bzzz("--config", str(daemon.config_path), "run", timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on /ip4/127.0.0.1/tcp/{daemon.port}" in result.stdout
    assert "[error" in result.stdout and "node_failed" in result.stdout


def test_metrics_are_served_on_loopback(cluster: Cluster):
    port = free_port()
    a, b = cluster.add("a", metrics=f"127.0.0.1:{port}"), cluster.add("b")
    b.settings["bootstrap"] = [a.address]
    b.write_config()
    a.start()
    b.start()
    wait_until(lambda: (r := a.peer(b.peer_id)) and r["connected"], 15, "a sees b")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'bzzz_peers{state="connected"} 1.0' in text
    assert 'bzzz_messages_total{topic="bzzz/coordination/v1",verdict="accepted"}' in text
    assert 'bzzz_messages_rejected_total{reason="bad_signature"} 0.0' in text
    assert "bzzz_uptime_seconds" in text
    assert "bzzz_auditlog_head " in text and "bzzz_tasks_held 0.0" in text
    assert 'bzzz_build_info{version="' in text


def test_a_bootstrap_peer_that_starts_late_is_dialled_with_backoff(cluster: Cluster):
    a = cluster.add("a")
    b = cluster.add("b")
    a.settings["bootstrap"] = [b.address]
    a.write_config()
    a.start()
    # Each failed dial is at debug; one warning says the peer is unreachable, with the retry.
    wait_until(lambda: "peer_unreachable" in a.log(), 15, "b reported unreachable")
    b.start()
    wait_until(lambda: (r := a.peer(b.peer_id)) and r["connected"], 15, "a reaches b")
    wait_until(lambda: "peer_redialled" in a.log(), 5, "the redial logged")
    log = a.log()
    assert log.count("peer_unreachable") == 1 and "next_retry_s" in log
    assert "peer_dial_failed" not in log  # debug: not at the default level


def test_init_prints_the_same_peer_id_every_time(cluster: Cluster):
    daemon = cluster.add("a")
    again = json.loads(bzzz("--config", str(daemon.config_path), "init", "--json").stdout)
    assert again == {
        "peer_id": daemon.peer_id,
        "path": str(daemon.dir / "state" / "identity.key"),
        "created": False,
        "addresses": [daemon.address],
    }


def test_a_second_daemon_on_the_same_port_refuses_to_start(cluster: Cluster):
    # py-libp2p listens with SO_REUSEPORT: without our own check, both would bind silently.
    (a,) = cluster.full_mesh(["a"])
    twin = cluster.add("twin")
    twin.config_path.write_text(
        twin.config_path.read_text().replace(f"tcp/{twin.port}", f"tcp/{a.port}")
    )
    result = bzzz("--config", str(twin.config_path), "run", timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on /ip4/127.0.0.1/tcp/{a.port}: Address already in use" in result.stdout
