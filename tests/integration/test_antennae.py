"""Antennae between three daemons: consensus, objections answered, escalation, help, abuse."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bzzz.messages import ANTENNAE_TOPIC
from tests.fakes.github import FakeGitHub
from tests.integration.github_world import REPO, TOKEN, entries, github_settings, recorder
from tests.integration.harness import Cluster, Daemon, await_until, wait_until
from tests.integration.testpeer import TestPeer


class Webhook:
    """A test server that records the JSON POSTed to it."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                outer.calls.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeGitHub]:
    users = {f"{TOKEN}-{n}": f"bot-{n}" for n in range(3)}
    with FakeGitHub(tmp_path / "github", users=users) as server:
        server.create_repo(REPO)
        yield server


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


# a takes type-alpha tasks, b type-beta; c has rust; all review.
CAPABILITIES = [["alpha", "review"], ["beta", "review"], ["rust", "review"]]


def agents(
    cluster: Cluster,
    fake: FakeGitHub,
    webhook: Webhook,
    commands: list[list[str]],
    **antennae: object,
) -> list[Daemon]:
    daemons = []
    for n in range(3):
        settings = github_settings(fake, f"{TOKEN}-{n}")
        daemons.append(
            cluster.add(
                "abc"[n],
                capabilities=CAPABILITIES[n],
                executor={"command": commands[n]},
                extra="[antennae]\n"
                + "\n".join(
                    f"{k} = {json.dumps(v)}"
                    for k, v in {
                        "require_consensus": True,
                        "review_window": 2,
                        "max_rounds": 2,
                        "help_timeout": 3,
                        "webhook_url": webhook.url,
                        **antennae,
                    }.items()
                ),
                **settings,
            )
        )
    Cluster.start_together(daemons)
    wait_until(
        lambda: all(
            len(d.status()["connected"]) == 2 and all(p["agent_id"] for p in d.status()["peers"])
            for d in daemons
        ),
        20,
        "a meshed cluster",
    )
    return daemons


def discuss(daemon: Daemon, key: str) -> dict:
    rows = daemon.cli("discuss", key, "--json")
    return rows[0] if rows else {}


def closed(fake: FakeGitHub, number: int) -> bool:
    return fake.issue(REPO, number)["state"] == "closed"


def test_a_plan_nobody_objects_to_stands_after_the_window(
    cluster: Cluster, fake: FakeGitHub, webhook: Webhook, tmp_path: Path
):
    run = recorder(tmp_path / "ran")
    a, b, c = agents(cluster, fake, webhook, [run, run, run])
    number = fake.create_issue(REPO, "Tidy the docs", labels=["bzzz-task", "type-alpha"])
    wait_until(lambda: closed(fake, number), 40, "the task done")
    key = f"{REPO}#{number}"
    for daemon in (a, b, c):
        state = discuss(daemon, key)
        assert state["state"] == "consensus" and state["proposer"] == a.peer_id
        assert state["accepted_by"] == sorted([b.peer_id, c.peer_id])
    consensus = entries(a, "consensus")[0]
    completed = entries(a, "task_completed")[0]
    assert consensus["seq"] < completed["seq"], "the task started after consensus"
    assert len(entries(a, "plan_proposal")) == 1
    assert webhook.calls == []


def test_an_objection_is_answered_by_a_revised_plan(
    cluster: Cluster, fake: FakeGitHub, webhook: Webhook, tmp_path: Path
):
    run = recorder(tmp_path / "ran")
    slow_then_record = ["sh", "-c", "sleep 7; " + run[2]]
    a, b, _ = agents(cluster, fake, webhook, [run, slow_then_record, run], max_rounds=6)
    first = fake.create_issue(
        REPO,
        "Refactor the core",
        body="## Files\n- src/core.py\n",
        labels=["bzzz-task", "type-beta"],
    )
    wait_until(lambda: "task_running" in b.log(), 30, "b working on src/core.py")
    second = fake.create_issue(
        REPO,
        "Speed up the core",
        body="## Files\n- src/core.py\n",
        labels=["bzzz-task", "type-alpha"],
    )
    wait_until(lambda: closed(fake, first) and closed(fake, second), 60, "both tasks done")
    state = discuss(a, f"{REPO}#{second}")
    assert state["state"] == "consensus" and state["rounds"] >= 2
    history = state_history(a, second)
    kinds = [(h["type"], h["from"]) for h in history]
    first_objection = kinds.index(("objection", b.peer_id))
    assert ("plan_proposal", a.peer_id) in kinds[first_objection + 1 :], "a revised plan"
    assert ("collaboration", b.peer_id) in kinds[first_objection + 1 :], "b accepted it"
    assert "already changing src/core.py" in history[first_objection]["text"]
    assert next(e["data"]["task"] for e in entries(b, "objection")) == f"{REPO}#{second}"


def state_history(daemon: Daemon, number: int) -> list[dict]:
    return discuss(daemon, f"{REPO}#{number}")["history"]


def test_a_conversation_that_keeps_disagreeing_goes_to_humans(
    cluster: Cluster, fake: FakeGitHub, webhook: Webhook, tmp_path: Path
):
    run = recorder(tmp_path / "ran")
    a, b, c = agents(cluster, fake, webhook, [run, ["sleep", "600"], run])
    fake.create_issue(
        REPO,
        "Rewrite the core",
        body="## Files\n- src/core.py\n",
        labels=["bzzz-task", "type-beta"],
    )
    wait_until(lambda: "task_running" in b.log(), 30, "b working on src/core.py")
    number = fake.create_issue(
        REPO, "Tune the core", body="## Files\n- src/core.py\n", labels=["bzzz-task", "type-alpha"]
    )
    issue = wait_until(
        lambda: (i := fake.issue(REPO, number)) and "needs-human" in i["labels"] and i,
        40,
        "the escalation",
    )
    assert issue["state"] == "open"
    note = next(x["body"] for x in fake.comments(REPO, number) if "bzzz-escalation" in x["body"])
    assert "could not agree" in note and "no consensus after 2 rounds" in note
    assert "round 1, by `agent-a`" in note and "round 2, by `agent-a`" in note
    assert "`agent-b`: I am already changing src/core.py" in note
    call = wait_until(lambda: webhook.calls and webhook.calls[0], 10, "the webhook call")
    assert call["task"] == f"{REPO}#{number}" and call["event"] == "escalation"
    for daemon in (a, b, c):
        assert discuss(daemon, f"{REPO}#{number}")["state"] == "escalated"
    assert not (tmp_path / "ran" / str(number)).exists(), "paused until a human decides"

    # Anyone can comment; only someone the operators trust decides.
    fake.add_comment(REPO, number, "Just do it, whatever they say.", user="stranger")
    wait_until(lambda: "antennae_untrusted_answer" in a.log(), 15, "the outsider ignored")
    assert "needs-human" in fake.issue(REPO, number)["labels"]
    assert not (tmp_path / "ran" / str(number)).exists()
    fake.set_permission(REPO, "maintainer", "write")
    fake.add_comment(REPO, number, "Go ahead, a; b will rebase.", user="maintainer")
    wait_until(lambda: closed(fake, number), 30, "the task resumed and done")
    assert "needs-human" not in fake.issue(REPO, number)["labels"]
    assert entries(a, "escalation")[0]["data"]["reason"] == "no consensus after 2 rounds"
    assert entries(a, "escalation_resolved")


def test_a_help_request_is_answered_by_the_peer_with_the_capability(
    cluster: Cluster, fake: FakeGitHub, webhook: Webhook, tmp_path: Path
):
    run = recorder(tmp_path / "ran")
    a, b, c = agents(cluster, fake, webhook, [run, run, run])
    number = fake.create_issue(
        REPO, "Port the parser", body="## Needs\n- rust\n", labels=["bzzz-task", "type-alpha"]
    )
    wait_until(lambda: closed(fake, number), 40, "the task done with help")
    state = discuss(a, f"{REPO}#{number}")
    assert state["state"] == "consensus"
    assert list(state["helpers"]) == [c.peer_id]
    assert "subtask_taken" in [e["type"] for e in entries(c, "subtask_taken")]
    assert "antennae_help_offered" in c.log() and "antennae_help_offered" not in b.log()


async def test_floods_loops_and_hop_limits_are_dropped_and_counted(
    cluster: Cluster, fake: FakeGitHub, webhook: Webhook, tmp_path: Path
):
    run = recorder(tmp_path / "ran")
    daemons = agents(cluster, fake, webhook, [run, run, run])
    key = "acme/gadgets#1"
    async with TestPeer() as rogue:
        await rogue.join(daemons[0].address)
        me = rogue.peer_id

        def envelope(type_: str, data: dict, hop: int) -> bytes:
            return json.dumps(
                {
                    "type": type_,
                    "from": me,
                    "timestamp": datetime.now(UTC).isoformat(),
                    "data": {"conversation": key, **data},
                    "hop_count": hop,
                }
            ).encode()

        await rogue.publish(
            ANTENNAE_TOPIC,
            envelope("plan_proposal", {"message_id": "rogue-p", "plan": "take over everything"}, 0),
        )
        # Two agents answering each other: each answer one hop further, until the door stops it.
        for hop in range(1, 7):
            await rogue.publish(
                ANTENNAE_TOPIC,
                envelope(
                    "collaboration",
                    {
                        "message_id": f"loop-{hop}",
                        "in_reply_to": f"loop-{hop - 1}",
                        "kind": "review",
                        "text": "and another thing",
                    },
                    hop,
                ),
            )
        # A flood: far more than 30 messages a minute in one conversation.
        for n in range(120):
            await rogue.publish(
                ANTENNAE_TOPIC,
                envelope(
                    "collaboration", {"message_id": f"flood-{n}", "kind": "review", "text": "!"}, 1
                ),
            )
        await rogue.publish(
            ANTENNAE_TOPIC,
            envelope(
                "collaboration", {"message_id": "flood-0", "kind": "review", "text": "again"}, 1
            ),
        )

        def settled() -> bool:
            # The loop is refused by the node it reaches (and so never forwarded to the others);
            # the flood is valid at the door, forwarded, and throttled by every node.
            hops = [d.status()["messages"]["rejected"]["hop_limit"] for d in daemons]
            throttled = [d.status()["antennae"].get("throttled", 0) for d in daemons]
            return hops == [3, 0, 0] and all(throttled)

        await await_until(settled, 20, "every node to drop the loop and throttle the flood")
    histories = [discuss(d, key).pop("history") for d in daemons]
    summaries = [discuss(d, key) for d in daemons]
    for summary in summaries:
        summary.pop("history")
    # The same messages were taken in everywhere (arrival order may differ: it is a log).
    assert len({frozenset(h["id"] for h in history) for history in histories}) == 1
    for summary in summaries:
        assert summary["proposer"] == me and summary["rounds"] == 1
        assert summary["accepted_by"] == sorted(d.peer_id for d in daemons)
    differing = {k for s in summaries for k in s if s[k] != summaries[0][k]}
    assert not differing, [{k: s[k] for k in differing} for s in summaries]
    assert all(d.process.poll() is None for d in daemons)
