"""A daemon's log as a log shipper reads it: with log_format = "json", every line one object."""

import json
import re
import signal

from tests.integration.harness import Cluster, Daemon, wait_until


def debug_logs(daemon: Daemon) -> None:
    text = daemon.config_path.read_text()
    daemon.config_path.write_text(text.replace("[node]\n", '[node]\nlog_level = "debug"\n', 1))


def test_every_line_of_a_json_log_is_an_event_and_node_stopped_is_the_last(cluster: Cluster):
    a, b = cluster.add("a", log_format="json"), cluster.add("b")
    a.settings["bootstrap"] = [b.address]
    a.write_config()
    debug_logs(a)
    a.start()  # b is not up yet: py-libp2p's failed dials are logged (at debug), then retried
    wait_until(lambda: "peer_dial_failed" in a.log(), 15, "a failed dial")
    b.start()
    wait_until(lambda: (r := a.peer(b.peer_id)) and r["connected"], 15, "a reaches b")
    a.signal(signal.SIGTERM)
    assert a.wait_exit(10) == 0

    records = [json.loads(line) for line in a.log().splitlines()]
    for record in records:
        assert record["timestamp"].endswith("Z") and record["level"], record
        assert re.fullmatch(r"[a-z][a-z0-9_]*", record["event"]), record
    events = [r["event"] for r in records]
    assert events[-1] == "node_stopped"
    assert any(r.get("detail") and r["event"].startswith("libp2p_") for r in records)
