"""The web view's parts: the event hub, the guards, escaping, fragments, the API, the readers."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bzzz.auditlog.log import AuditLog, ChainWriter
from bzzz.auditlog.segments import ChainStore
from bzzz.bus import MessageBus
from bzzz.p2p import Identity, verify
from bzzz.tasks.board import TIMELINE, Known, TaskBoard
from bzzz.tasks.model import Phase, Task
from bzzz.web import pages, sources
from bzzz.web.events import RESYNC, Busy, EventHub
from bzzz.web.server import SECURITY_HEADERS, View, local_host
from bzzz.web.sources import Cache, Sources

HOSTILE = "<script>alert(1)</script>"
PEER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
OTHER = '12D3KooW"><img src=x onerror=alert(2)>'
TOKEN = "s3cret-token"


def status() -> dict[str, Any]:
    """A status snapshot as Node.status() makes it, with hostile values where peers speak."""
    return {
        "peer_id": PEER,
        "agent_id": "agent-a",
        "version": "1.0",
        "network_id": "bzzz",
        "started_at": "2030-01-01T00:00:00+00:00",
        "uptime_s": 12.5,
        "listen": [f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}"],
        "capabilities": ["general"],
        "cluster": [
            {
                "peer_id": PEER,
                "agent_id": "agent-a",
                "here": True,
                "state": "ready",
                "works": True,
                "connected_peers": 1,
                "tasks": [0, 3],
                "models": [],
                "version": "1.0",
                "heard_s": 0.0,
            },
            {
                "peer_id": OTHER,
                "agent_id": HOSTILE,
                "here": False,
                "state": "ready",
                "works": False,
                "connected_peers": 1,
                "tasks": [1, 3],
                "models": [HOSTILE],
                "version": HOSTILE,
                "heard_s": 1.5,
            },
        ],
        "peers": [
            {
                "peer_id": OTHER,
                "agent_id": HOSTILE,
                "capabilities": [HOSTILE],
                "models": [],
                "status": "ready",
                "works": True,
                "state": "connected",
                "connected_peers": 1,
                "last_seen_s": 0.4,
                "received": 5,
                "missed": 0,
            }
        ],
        "peer_counts": {"connected": 1, "stale": 0, "known": 1, "evicted": 0},
        "connected": [OTHER],
        "messages": {
            "topics": {"bzzz/coordination/v1": {"accepted": 5, "rejected": 0}},
            "rejected": {"bad_data": 0},
            "dropped_by": {"inbound": 0},
            "peers_refused": 0,
            "stream_errors": 0,
            "delay_ms": {"p50": 1.0, "p99": 2.0},
        },
        "broadcasts_sent": 3,
        "auditlog": {"head": {"seq": 4}, "refused": {}, "forks": []},
        "antennae": {"throttled": 0},
        "tasks": {
            "held": 0,
            "max": 3,
            "poller": False,
            "poller_id": OTHER,
            "github": {
                "login": HOSTILE,
                "login_error": None,
                "remaining": 4990,
                "limit": 5000,
                "reset": 1_900_000_000,
                "paused_s": 0.0,
                "requests": 10,
            },
        },
    }


TASK_ROW = {
    "task": "acme/widgets#7",
    "title": HOSTILE,
    "phase": "running",
    "holder": OTHER,
    "holder_agent": HOSTILE,
    "held_here": False,
    "heard_s": 0.5,
    "lease_s": 30,
    "url": "javascript:alert(3)",
    "result_url": "https://github.example/acme/widgets/pull/8",
    "timeline": [
        {"phase": "announced", "stage": "announced", "at": 1.0, "holder": ""},
        {"phase": "running", "stage": "running", "at": 2.0, "holder": OTHER},
    ],
}

CONVERSATION = {
    "task": "acme/widgets#7",
    "state": "open",
    "proposer": OTHER,
    "rounds": 1,
    "plan": HOSTILE,
    "open_objections": [{"by": PEER, "reason": HOSTILE}],
    "accepted_by": [],
    "helpers": {},
    "decision": "",
    "messages": 2,
    "waiting": 0,
    "done": False,
    "history": [
        {
            "id": "p1",
            "from": OTHER,
            "type": "plan_proposal",
            "change": "proposal",
            "at": "2030-01-01T00:00:01+00:00",
            "text": HOSTILE,
            "in_reply_to": "",
        },
        {
            "id": "o1",
            "from": PEER,
            "type": "objection",
            "change": "objection",
            "at": "2030-01-01T00:00:02+00:00",
            "text": "touches the same files",
            "in_reply_to": "p1",
        },
    ],
}


def fake_sources(tmp_path: Path, calls: list[str] | None = None) -> Sources:
    def command(name: str, result: Callable[[dict[str, Any]], Any]) -> Any:
        def run(args: dict[str, Any]) -> Any:
            if calls is not None:
                calls.append(name)
            return result(args)

        return run

    return Sources(
        commands={
            "status": command("status", lambda args: status()),
            "peers": command("peers", lambda args: status()["peers"]),
            "tasks": command("tasks", lambda args: [TASK_ROW]),
            "discuss": command(
                "discuss",
                lambda args: (
                    [{k: v for k, v in CONVERSATION.items() if k != "history"}]
                    if not args.get("task")
                    else [CONVERSATION]
                    if args["task"] == CONVERSATION["task"]
                    else []
                ),
            ),
        },
        github=lambda: status()["tasks"]["github"],
        hops=lambda message_id: {"p1": 0, "o1": 1}.get(message_id),
        state_dir=tmp_path,
        verify=verify,
        agent_id="agent-a",
    )


@pytest.fixture
def hub() -> EventHub:
    return EventHub(queue=8, max_subscribers=2)


@pytest.fixture
async def client(tmp_path: Path, hub: EventHub) -> AsyncIterator[TestClient]:
    view = View(fake_sources(tmp_path), hub, token=None)
    async with TestClient(TestServer(view.app())) as test_client:
        yield test_client


@pytest.fixture
async def locked(tmp_path: Path, hub: EventHub) -> AsyncIterator[TestClient]:
    view = View(fake_sources(tmp_path), hub, token=TOKEN)
    async with TestClient(TestServer(view.app())) as test_client:
        yield test_client


LOCAL = {"Host": "127.0.0.1:9465"}


# ---- the event hub --------------------------------------------------------------------------


async def test_a_subscriber_that_falls_behind_gets_one_resync_and_stays_bounded():
    hub = EventHub(queue=4)
    with hub.subscribe() as slow, hub.subscribe() as quick:
        for n in range(10):
            hub.publish("message", {"n": n})
            quick_event = await quick.get()
            assert quick_event is not None and quick_event.data == {"n": n}
        assert slow.pending() <= 4
        events = [await slow.get() for _ in range(slow.pending())]
        kinds = [e.kind for e in events if e is not None]
        assert kinds.count(RESYNC) == 1
        assert kinds[-1] == "message" and events[-1] is not None
        assert events[-1].data == {"n": 9}, "what came after the resync is delivered"
        ids = [e.id for e in events if e is not None]
        assert ids == sorted(ids)
    assert hub.subscribers == 0


async def test_publishing_with_nobody_listening_keeps_nothing_and_never_raises():
    hub = EventHub()
    assert not hub.listening
    for n in range(1000):
        hub.publish("audit", {"n": n})
    hub.publish("audit", {"unencodable": object()})  # encoded only when sent
    with hub.subscribe() as late:
        assert late.pending() == 0
        hub.publish("peer", {"peer": PEER})
        event = await late.get()
        assert event is not None and event.id == 1002 and event.at > 0


async def test_subscribers_are_limited_and_a_closed_one_ends():
    hub = EventHub(max_subscribers=1)
    first = hub.subscribe()
    with pytest.raises(Busy):
        hub.subscribe()
    waiting = asyncio.ensure_future(first.get())
    await asyncio.sleep(0)
    first.close()
    assert await waiting is None
    hub.subscribe().close()  # the slot is free again


def test_events_are_server_sent_event_lines():
    hub = EventHub()
    with hub.subscribe() as subscription:
        hub.publish("task", {"task": "a/b#1", "title": "two\nlines"})
        [event] = subscription.take_all()
    text = event.sse.decode()
    assert text.endswith("\n\n")
    lines = text.strip("\n").split("\n")
    assert lines[0] == f"id: {event.id}" and lines[1] == "event: task"
    assert (
        len(lines) == 3 and json.loads(lines[2].removeprefix("data: "))["data"]["task"] == "a/b#1"
    )


# ---- the board's timeline -------------------------------------------------------------------


def test_the_board_keeps_a_bounded_timeline_and_tells_each_phase_change():
    bus = MessageBus(PEER, 120)
    board = TaskBoard(bus, PEER, ["acme/widgets"], 30, in_use=lambda key: False)
    told: list[tuple[str, str, str]] = []
    board.on_phase(lambda known: told.append((known.task.key, known.phase.value, known.holder)))
    task = Task("acme/widgets", 7, "t", "", (), "open", (), "https://x/7", "")
    for phase in (Phase.CLAIMED, Phase.CLAIMED, Phase.PREPARED, Phase.RUNNING, Phase.REPORTING):
        board.mine(task, phase)
    board.mine(task, Phase.DONE)
    assert told == [
        ("acme/widgets#7", "announced", ""),
        ("acme/widgets#7", "claimed", PEER),
        ("acme/widgets#7", "prepared", PEER),
        ("acme/widgets#7", "running", PEER),
        ("acme/widgets#7", "reporting", PEER),
        ("acme/widgets#7", "completed", PEER),
    ], "the same phase twice is one entry; the holder is set before the phase"
    [row] = board.status(lambda peer: "me")
    assert [e["stage"] for e in row["timeline"]] == [
        "announced",
        "claimed",
        "claimed",
        "running",
        "reporting",
        "done",
    ]
    known = board.known["acme/widgets#7"]
    for n in range(100):
        known.phase = Phase.RUNNING if n % 2 else Phase.HELD
    assert len(known.timeline) == TIMELINE
    assert isinstance(known, Known)


# ---- guards -----------------------------------------------------------------------------------


def test_host_names_of_this_machine_only():
    for host in ("localhost", "localhost:9465", "127.0.0.1", "127.3.4.5:80", "[::1]", "[::1]:9"):
        assert local_host(host), host
    for host in (
        "",
        "evil.example",
        "evil.example:9465",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "10.0.0.1:9465",
        "[::1]x",
        "::1",
        "localhost:abc",
    ):
        assert not local_host(host), host


async def test_a_foreign_host_header_is_refused(client: TestClient):
    refused = await client.get("/", headers={"Host": "attacker.example:9465"})
    assert refused.status == 421
    assert (await client.get("/", headers={"Host": "localhost:9465"})).status == 200
    assert (await client.get("/api/status", headers={"Host": "[::1]:9465"})).status == 200


async def test_only_get_and_head_are_answered(client: TestClient):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        answer = await client.request(method, "/api/status", headers=LOCAL)
        assert answer.status == 405, method
        assert answer.headers["Allow"] == "GET, HEAD"
    head = await client.head("/tasks", headers=LOCAL)
    assert head.status == 200


async def test_every_answer_carries_the_security_headers(client: TestClient):
    for path, method in (("/", "GET"), ("/nope", "GET"), ("/", "POST"), ("/static/app.js", "GET")):
        answer = await client.request(method, path, headers=LOCAL)
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (path, name)
    refused = await client.get("/", headers={"Host": "evil.example"})
    assert refused.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]


async def test_with_a_token_nothing_is_shown_without_it(locked: TestClient):
    for path in ("/", "/api/status", "/api/events", "/metrics", "/static/style.css"):
        answer = await locked.get(path)
        assert answer.status == 401, path
        assert "Bearer" in answer.headers["WWW-Authenticate"]
    assert (
        await locked.get("/api/status", headers={"Authorization": "Bearer wrong"})
    ).status == 401
    bearer = await locked.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status == 200
    assert (await locked.get("/tasks?token=wrong")).status == 401


async def test_a_token_in_the_address_becomes_a_cookie_and_leaves_the_address(locked: TestClient):
    answer = await locked.get(f"/audit?type=x&token={TOKEN}", allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/audit?type=x"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie, "the cookie holds a derived value, not the token"
    again = await locked.get("/tasks")  # the client keeps the cookie
    assert again.status == 200
    # A path that a browser would read as another site must not become the redirect.
    for path in ("//evil.example/", "/\\evil.example/"):
        answer_text = await raw(locked, f"GET {path}?token={TOKEN} HTTP/1.1")
        location = re.search(r"(?im)^location: (.*)$", answer_text)
        assert location is not None and location.group(1).strip() == "/", answer_text


async def raw(client: TestClient, request_line: str) -> str:
    """One request as written, for paths an HTTP client library would not send."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(f"{request_line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    return answer.decode(errors="replace")


# ---- pages ------------------------------------------------------------------------------------


async def test_hostile_values_are_escaped_everywhere(client: TestClient):
    for path in (
        "/",
        "/tasks",
        "/tasks/acme/widgets/7",
        "/antennae",
        "/antennae/acme/widgets/7",
        "/github",
        "/audit",
    ):
        answer = await client.get(path, headers=LOCAL)
        text = await answer.text()
        assert answer.status == 200, path
        assert "<script>alert" not in text and "<img src=x" not in text, path
        assert "javascript:" not in text, path
        # No inline script or style: the Content-Security-Policy would block them anyway.
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert " style=" not in text and "<style" not in text, path
    tasks_page = await (await client.get("/tasks", headers=LOCAL)).text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in tasks_page
    assert 'data-task="acme/widgets#7"' in tasks_page and 'data-phase="running"' in tasks_page
    assert '<a href="https://github.example/acme/widgets/pull/8"' in tasks_page
    cluster_page = await (await client.get("/", headers=LOCAL)).text()
    assert 'data-peer="12D3KooW&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"' in cluster_page


def test_a_title_is_escaped_in_the_tasks_table():
    html = pages.tasks([TASK_ROW]).main
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and HOSTILE not in html
    assert "javascript:" not in html, "a link that is not http(s) stays text"


async def test_pages_render_without_javascript_and_fragments_are_main_only(client: TestClient):
    whole = await (await client.get("/tasks", headers=LOCAL)).text()
    assert whole.startswith("<!doctype html>")
    assert '<a class="skip" href="#live">' in whole and '<main id="live"' in whole
    assert 'data-live="task"' in whole and "<table" in whole
    assert re.search(r'<script src="/static/app.js\?v=[0-9a-f]{12}" defer>', whole)
    answer = await client.get("/tasks", headers={**LOCAL, "X-Bzzz-Fragment": "1"})
    fragment = await answer.text()
    assert "X-Bzzz-Fragment" in answer.headers["Vary"]
    assert (
        not fragment.startswith("<!doctype") and "<main" not in fragment and "<nav" not in fragment
    )
    assert fragment.startswith("<h1>Tasks</h1>") and 'data-task="acme/widgets#7"' in fragment


async def test_task_and_conversation_pages_show_timeline_and_thread(client: TestClient):
    task_page = await (await client.get("/tasks/acme/widgets/7", headers=LOCAL)).text()
    timeline = re.findall(r'<li data-phase="(\w+)"', task_page)
    assert timeline == ["announced", "running"]
    thread = await (await client.get("/antennae/acme/widgets/7", headers=LOCAL)).text()
    assert re.findall(r'data-kind="(\w+)"', thread) == ["proposal", "objection"]
    assert "0 hops" in thread and "1 hop " in thread
    unknown = await client.get("/tasks/acme/widgets/99", headers=LOCAL)
    assert unknown.status == 404
    assert (await client.get("/tasks/..%2f/x/1", headers=LOCAL)).status == 404


async def test_static_assets_are_served_with_a_version(client: TestClient):
    page = await (await client.get("/", headers=LOCAL)).text()
    version = re.search(r"/static/style.css\?v=([0-9a-f]+)", page)
    assert version is not None
    answer = await client.get(f"/static/style.css?v={version.group(1)}", headers=LOCAL)
    assert answer.status == 200 and "immutable" in answer.headers["Cache-Control"]
    assert answer.headers["Content-Type"].startswith("text/css")
    assert "@media" in await answer.text()
    script = await client.get("/static/app.js", headers=LOCAL)
    assert "EventSource" in await script.text() and script.headers["Cache-Control"] == "no-cache"
    assert (await client.get("/static/../config.py", headers=LOCAL)).status == 404


# ---- the API ----------------------------------------------------------------------------------


async def test_the_api_returns_what_the_control_commands_return(client: TestClient, tmp_path):
    expected = fake_sources(tmp_path)
    for name in ("status", "peers", "tasks"):
        answer = await client.get(f"/api/{name}", headers=LOCAL)
        assert await answer.json() == json.loads(json.dumps(expected.commands[name]({}))), name
    discuss = await client.get("/api/discuss?task=acme/widgets%237", headers=LOCAL)
    assert await discuss.json() == [CONVERSATION]
    task = await (await client.get("/api/task?key=acme/widgets%237", headers=LOCAL)).json()
    assert task["task"] == TASK_ROW and task["transcript"] is None
    assert (await client.get("/api/task?key=../../etc", headers=LOCAL)).status == 400
    assert (await client.get("/api/audit?limit=501", headers=LOCAL)).status == 400
    github = await client.get("/api/github", headers=LOCAL)
    assert (await github.json())["login"] == HOSTILE


async def test_metrics_are_served_on_the_view_too(client: TestClient):
    answer = await client.get("/metrics", headers=LOCAL)
    text = await answer.text()
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
    assert 'bzzz_peers{state="connected"} 1.0' in text
    assert "bzzz_auditlog_head 4.0" in text


async def test_server_sent_events_reach_the_client_and_the_crowd_is_limited(
    client: TestClient, hub: EventHub
):
    stream = await client.get("/api/events", headers=LOCAL)
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert await stream.content.readline() == b"retry: 2000\n"
    await stream.content.readline()
    second = await client.get("/api/events", headers=LOCAL)
    assert hub.subscribers == 2
    third = await client.get("/api/events", headers=LOCAL)
    assert third.status == 503
    hub.publish("message", {"type": "task_claim", "from": HOSTILE})
    lines = [await stream.content.readline() for _ in range(3)]
    assert lines[0].startswith(b"id: ") and lines[1] == b"event: message\n"
    event = json.loads(lines[2].removeprefix(b"data: "))
    assert event["kind"] == "message" and event["data"]["from"] == HOSTILE and event["at"] > 0
    stream.close()
    second.close()


async def test_a_returning_client_is_told_to_resync(client: TestClient):
    stream = await client.get("/api/events", headers={**LOCAL, "Last-Event-ID": "41"})
    await stream.content.readline()
    await stream.content.readline()
    assert await stream.content.readline() == b"event: resync\n"
    stream.close()


# ---- reading the node's files ----------------------------------------------------------------


async def write_log(root: Path, identity: Identity, entries: list[tuple[str, dict]]) -> None:
    author = identity.peer_id
    log = AuditLog(ChainWriter(ChainStore(root / author, author), "batch"), author, identity.sign)
    await log.start()
    for type_, data in entries:
        log.append_nowait(type_, data)
    await log.append("last", {})
    await log.stop()


async def test_the_audit_tail_is_newest_first_filtered_and_bounded(tmp_path):
    root = tmp_path / "auditlog"
    a, b = Identity.generate(), Identity.generate()
    await write_log(
        root, a, [("task_phase" if n % 2 else "peer_joined", {"n": n}) for n in range(300)]
    )
    await write_log(root, b, [("task_phase", {"n": n}) for n in range(5)])
    rows = sources.audit_tail(root, "", "", 10)
    assert len(rows) == 10
    stamps = [(r["timestamp"], r["seq"]) for r in rows]
    assert stamps == sorted(stamps, reverse=True)
    mine = sources.audit_tail(root, a.peer_id[-8:], "task_phase", 20)
    assert {r["author"] for r in mine} == {a.peer_id} and {r["type"] for r in mine} == {
        "task_phase"
    }
    assert [r["data"]["n"] for r in mine] == list(range(299, 259, -2))
    # Only the end of a log is read: a small budget still yields the newest entries.
    tail = sources._newest(root / a.peer_id, "", 500, budget=4096)
    assert 0 < len(tail) < 100 and tail[0]["type"] == "last"
    assert sources.audit_tail(root, "nobody", "", 10) == []


async def test_verification_runs_once_for_many_pages(tmp_path):
    root = tmp_path / "auditlog"
    await write_log(root, Identity.generate(), [("x", {})])
    cache = Cache(ttl=10)
    results = await asyncio.gather(
        *(
            cache.get("v", lambda: asyncio.to_thread(sources.verification, root, verify))
            for _ in range(20)
        )
    )
    assert cache.computed == 1
    assert all(r["ok"] for r in results) and results[0]["forks"] == []


def test_the_newest_transcript_is_read_from_its_end(tmp_path):
    directory = tmp_path / "transcripts"
    directory.mkdir()
    old = directory / "acme__widgets#7-aaaa.jsonl"
    old.write_text(json.dumps({"kind": "user", "content": "old"}) + "\n")
    big = directory / "acme__widgets#7-bbbb.jsonl"
    line = json.dumps({"kind": "tool", "name": "run", "output": "x" * 1000})
    big.write_text(
        "\n".join([line] * 2000) + "\n" + json.dumps({"kind": "tests", "exit": 0}) + "\n"
    )
    os.utime(old, (1, 1))
    found = sources.transcript(directory, "acme/widgets#7")
    assert found is not None and found["file"] == big.name and found["truncated"]
    assert len(found["entries"]) <= sources.TRANSCRIPT_ENTRIES
    assert found["entries"][-1] == {"kind": "tests", "exit": 0}
    assert sources.transcript(directory, "acme/widgets#70") is None
    html = pages.transcript_html(found)
    assert 'data-kind="tests"' in html and 'data-kind="tool"' in html


def test_fork_evidence_is_shown_escaped():
    signed = {
        "hash": "ab" * 32,
        "entry": {"type": HOSTILE, "timestamp": "x", "data": {"k": HOSTILE}},
    }
    verify_result = {
        "ok": False,
        "heads": {OTHER: 3},
        "problems": [{"author": OTHER, "seq": 2, "reason": f"fork: also signed {HOSTILE}"}],
        "problems_total": 1,
        "forks": [{"author": OTHER, "seq": 2, "peer": PEER, "ours": signed, "theirs": "junk"}],
        "checked_at": "2030-01-01T00:00:00+00:00",
        "took_s": 0.1,
    }
    html = pages.audit([], verify_result, {"author": HOSTILE, "type": ""}, {}).main
    assert 'data-ok="false"' in html and 'class="fork"' in html and "ab" * 32 in html
    assert HOSTILE not in html and "<img" not in html
    assert 'value="&lt;script&gt;' in html, "the filter keeps what was asked, escaped"
