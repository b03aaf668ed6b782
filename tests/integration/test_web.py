"""The web view of real daemons: the API is the CLI's data, pages render without JavaScript,
events arrive within a second, tasks show their phases, and a token guards it beyond loopback."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.fakes.github import FakeGitHub
from tests.integration.github_world import REPO, github_settings, recorder
from tests.integration.harness import Cluster, Daemon, free_port, wait_until

AGES = {"uptime_s", "heard_s", "last_seen_s"}  # seconds since something: differ call to call


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def api(daemon: Daemon, path: str) -> Any:
    status, body = get(daemon.web_url + path)
    assert status == 200, body
    return json.loads(body)


def without_ages(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_ages(v) for k, v in value.items() if k not in AGES}
    if isinstance(value, list):
        return [without_ages(v) for v in value]
    return value


class Events:
    """A server-sent events client: `next()` blocks for the next event (id, kind, data)."""

    def __init__(self, daemon: Daemon) -> None:
        host, port = daemon.settings["http"].rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=10)
        self.connection.request("GET", "/api/events")
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("Content-Type", "").startswith("text/event-stream")

    def next(self) -> tuple[int, str, dict[str, Any]]:
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline().decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if not line:
                if "data" in fields:
                    event = json.loads(fields["data"])
                    return int(fields.get("id", 0)), fields["event"], event
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    def until(self, wanted: Any, timeout: float = 20) -> tuple[int, str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.next()
            if wanted(event):
                return event
        raise AssertionError("no such event")

    def close(self) -> None:
        self.connection.close()


def full_pair(daemons: list[Daemon]) -> bool:
    return all(
        len(rows := d.status()["cluster"]) == 2 and all(r["connected_peers"] == 1 for r in rows)
        for d in daemons
    )


def test_the_api_is_the_cli_and_the_pages_need_no_javascript(cluster: Cluster):
    # A long beat: nothing changes between the CLI's call and the API's but ages.
    a, b = cluster.full_mesh(["a", "b"], interval=30, http=True)
    a.wait_web()
    wait_until(lambda: full_pair([a, b]), 20, "both nodes see both")
    for command in ("status", "peers", "tasks"):
        for _attempt in range(5):
            cli = without_ages(a.cli(command, "--json"))
            if without_ages(api(a, f"/api/{command}")) == cli:
                break
        else:
            raise AssertionError(f"/api/{command} is not `bzzz {command} --json`")
    assert api(a, "/api/discuss?task=acme/widgets%231") == a.cli(
        "discuss", "acme/widgets#1", "--json"
    )

    status, page = get(a.web_url + "/")
    assert status == 200 and page.startswith("<!doctype html>")
    assert '<table id="cluster">' in page and f'data-peer="{b.peer_id}"' in page
    assert f'data-peer="{a.peer_id}"' in page and "<svg" in page and 'class="edge"' in page
    for path, marker in (
        ("/tasks", "no tasks known"),
        ("/antennae", "no conversations"),
        ("/audit", 'data-type="node_started"'),
        ("/github", "Not configured here"),
    ):
        status, page = get(a.web_url + path)
        assert status == 200 and '<main id="live"' in page and marker in page, path
    _, audit = get(a.web_url + "/audit")
    assert 'id="verify" data-ok="true"' in audit
    verify = api(a, "/api/audit/verify")
    assert verify["ok"] and set(verify["heads"]) >= {a.peer_id}
    newest = api(a, f"/api/audit?author={a.peer_id}&type=node_started&limit=5")
    assert [e["type"] for e in newest] == ["node_started"]
    status, metrics = get(a.web_url + "/metrics")
    assert status == 200 and 'bzzz_peers{state="connected"} 1.0' in metrics
    # A page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) reads nothing.
    port = a.settings["http"].rsplit(":", 1)[1]
    status, _ = get(a.web_url + "/api/status", {"Host": f"attacker.example:{port}"})
    assert status == 421


def test_a_peers_message_reaches_the_event_stream_within_a_second(cluster: Cluster):
    a, b = cluster.full_mesh(["a", "b"], http=True)
    a.wait_web()
    events = Events(a)
    try:
        ident, _, event = events.until(
            lambda e: e[1] == "message" and e[2]["data"]["from"] == b.peer_id
        )
        received = time.time()
        sent = datetime.fromisoformat(event["data"]["sent_at"]).timestamp()
        assert received - sent < 1.0, f"{received - sent:.3f} s from b's send to a's page"
        assert sent <= event["at"] <= received + 0.01
        assert event["id"] == ident and event["data"]["type"] in (
            "capability_broadcast",
            "availability_broadcast",
        )
        # The peer leaving is told too, and event ids only grow.
        b.stop()
        later, _, left = events.until(lambda e: e[1] == "peer" and e[2]["data"]["change"] == "left")
        assert later > ident and left["data"]["peer"] == b.peer_id
    finally:
        events.close()


def test_a_task_moves_through_its_phases_on_the_page(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    daemon = cluster.add(
        "a", http=True, executor={"command": recorder(tmp_path / "ran")}, **github_settings(fake)
    )
    daemon.start()
    daemon.wait_web()
    events = Events(daemon)
    try:
        number = fake.create_issue(REPO, "<b>Write</b> the widget", labels=["bzzz-task"])
        key = f"{REPO}#{number}"
        phases = []
        while not phases or phases[-1] != "completed":
            _, _, event = events.until(lambda e: e[1] == "task" and e[2]["data"]["task"] == key)
            phases.append(event["data"]["phase"])
    finally:
        events.close()
    assert phases == ["announced", "claimed", "prepared", "running", "reporting", "completed"]
    found = api(daemon, f"/api/task?key={REPO}%23{number}")
    assert [e["stage"] for e in found["task"]["timeline"]] == [
        "announced",
        "claimed",
        "claimed",
        "running",
        "reporting",
        "done",
    ]
    _, page = get(daemon.web_url + "/tasks")
    assert f'data-task="{key}" data-phase="completed" data-stage="done"' in page
    assert "&lt;b&gt;Write&lt;/b&gt; the widget" in page
    _, detail = get(daemon.web_url + f"/tasks/{REPO}/{number}")
    assert detail.count("<li data-phase=") == 6


def test_beyond_loopback_a_token_is_required(cluster: Cluster, tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(f'[control]\nhttp_listen = "0.0.0.0:{free_port()}"\n')
    for command in (["config", "check"], ["run"]):
        result = subprocess.run(
            [sys.executable, "-m", "bzzz", "--config", str(config), *command],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, command
        assert f"{config}: control.http_token_file: required when" in result.stderr
    # With a token file the view asks for it (here on loopback: tests do not listen beyond).
    token = tmp_path / "web-token"
    token.write_text("s3cret-web-token\n")
    daemon = cluster.add("a", http=True, http_token_file=str(token))
    daemon.start()
    daemon.wait_web()
    assert "token_required=True" in daemon.log()
    assert get(daemon.web_url + "/api/status")[0] == 401
    status, body = get(daemon.web_url + "/api/status", {"Authorization": "Bearer s3cret-web-token"})
    assert status == 200 and json.loads(body)["peer_id"] == daemon.peer_id
