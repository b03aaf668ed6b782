"""A hostile peer against running daemons: every message, stream and crowd that once crashed,
hung or bloated a node, as a regression test. The node lives, counts, and keeps serving."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from bzzz import control
from bzzz.messages import ANTENNAE_TOPIC, COORDINATION_TOPIC
from bzzz.p2p import Identity
from tests.integration.harness import Cluster, Daemon, await_until
from tests.integration.testpeer import LogAuthor, TestPeer

MESHSUB = "/meshsub/1.1.0"


def envelope(sender: str, type_: str, data: dict, hop_count: int = 0) -> bytes:
    return json.dumps(
        {
            "type": type_,
            "from": sender,
            "timestamp": datetime.now(UTC).isoformat(),
            "data": data,
            "hop_count": hop_count,
        }
    ).encode()


def refused(daemon: Daemon) -> dict[str, int]:
    return {k: v for k, v in daemon.status()["messages"]["rejected"].items() if v}


def process(pid: int) -> tuple[int, int]:
    """Threads and resident memory (KiB) of a process, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0])


def log_verify(daemon: Daemon) -> int:
    return subprocess.run(
        [sys.executable, "-m", "bzzz", "--config", str(daemon.config_path), "log", "verify"],
        capture_output=True,
        timeout=30,
    ).returncode


async def test_one_oversized_message_no_longer_takes_the_cluster_down(cluster: Cluster):
    """An objection over 16 KiB once passed the door, was forwarded, and killed every node that
    recorded it. Now the door refuses it (and its kin) before forwarding, and what it admits at
    the bounds is recorded cut to fit."""
    a, b = cluster.full_mesh(["a", "b"])
    await await_until(lambda: a.peer(b.peer_id) and b.peer(a.peer_id), 10, "a and b meshed")
    async with TestPeer() as attacker:
        await attacker.join(a.address)
        me = attacker.peer_id
        hostile = [
            (ANTENNAE_TOPIC, "objection", {"conversation": "o/r#1", "reason": "x" * 20_000}),
            (
                ANTENNAE_TOPIC,
                "plan_proposal",
                {"conversation": "o/r#1", "needed_capabilities": ["x"] * 10_000},
            ),
            (
                COORDINATION_TOPIC,
                "capability_broadcast",
                {"node_id": me, "capabilities": ["c" * 60_000]},
            ),
            (
                ANTENNAE_TOPIC,
                "collaboration",
                {"conversation": "o/r#1", "kind": "subtask", "to": a.peer_id, "text": "t" * 17_000},
            ),
        ]
        for topic, type_, data in hostile:
            await attacker.publish(topic, envelope(me, type_, data))
        # At the bounds, and admitted: both daemons review it and record their objection.
        biggest = {
            "conversation": "o/r#1",
            "message_id": "p" * 64,
            "plan": "p" * 4096,
            "steps": ["s" * 512] * 50,
            "expected_changes": ["f" * 256] * 40,
            "needed_capabilities": [f"{n:02d}" + "n" * 62 for n in range(32)],
        }
        await attacker.publish(ANTENNAE_TOPIC, envelope(me, "plan_proposal", biggest))

        for daemon in (a, b):
            await await_until(
                lambda d=daemon: d.status()["antennae"].get("applied", 0) >= 3,
                15,
                f"{daemon.name} reviewed the proposal and heard both objections",
            )
        assert refused(a) == {"too_large": 4}
        assert refused(b) == {}, "b never saw what a refused: it was not forwarded"
        for daemon in (a, b):
            assert daemon.process.poll() is None
            (conversation,) = daemon.cli("discuss", "o/r#1", "--json")
            assert {o["by"] for o in conversation["open_objections"]} == {a.peer_id, b.peer_id}
    for daemon in (a, b):
        assert daemon.process.poll() is None
        assert log_verify(daemon) == 0


async def test_garbage_on_a_gossipsub_stream_resets_that_stream_only(cluster: Cluster):
    (daemon,) = cluster.full_mesh(["a"])
    async with TestPeer() as attacker:
        await attacker.join(daemon.address)
        garbage = [
            b"\xff\xff\xff\xff\xff",  # not a protobuf at all
            b"\x12\x64abc",  # a publish field that claims 100 bytes and has 3
            b"\x12\x02\x0d\x00",  # a field of the wrong wire type, cut short
        ]
        for raw in garbage:
            stream = await attacker.host.open_stream(daemon.peer_id, MESHSUB)
            await stream.write(bytes([len(raw)]) + raw)
            await stream.close()
        await await_until(
            lambda: daemon.status()["messages"]["stream_errors"] >= 3, 10, "three streams reset"
        )
        # The attacker's own gossip stream is untouched, and the node still listens.
        marker = {"node_id": attacker.peer_id, "agent_id": "still-here"}
        await attacker.publish(
            COORDINATION_TOPIC, envelope(attacker.peer_id, "capability_broadcast", marker)
        )
        await await_until(
            lambda: (daemon.peer(attacker.peer_id) or {}).get("agent_id") == "still-here",
            10,
            "the daemon to hear the marker",
        )
    assert daemon.process.poll() is None


async def test_a_hostile_log_server_is_refused_and_counted(cluster: Cluster):
    (daemon,) = cluster.full_mesh(["a"])
    author = LogAuthor()
    async with author.peer:
        await author.peer.join(daemon.address)
        for n in range(3):
            author.append("tick", {"n": n})
        record = author.entries[0].to_record()
        answers = [
            [b"[" * 8000 + b"]" * 8000],  # nested too deep
            [record.replace(b'"seq":1', b'"seq":Infinity')],
            [record.replace(b'"seq":1', b'"seq":1e999')],
            [b'{"end": true, "head": Infinity}'],
            [record[:-1] + b', "pad": "' + b"x" * 70_000 + b'"}'],  # a line over the limit
            [b'{"end": true, "head": ' + b"9" * 5000 + b"}"],
        ]

        def status() -> dict:
            return daemon.status()["auditlog"]

        for n, lines in enumerate(answers):
            asked = author.asked
            author.answer = lines
            # A head the daemon does not hold, so that it asks again.
            await author.announce_until(lambda a=asked: author.asked > a, 10, "a pull", 10 + n)
        await await_until(lambda: status()["refused"].get("malformed", 0) >= 4, 10, "refusals")
        # The honest history is still taken in afterwards.
        author.answer = None
        await author.announce_until(
            lambda: (status()["replicas"].get(author.peer.peer_id) or {}).get("seq") == 3,
            15,
            "the honest entries",
        )
        assert status()["errors"].get("pull", 0) == 0, "every failure was a refusal, not a crash"
    assert daemon.process.poll() is None
    assert log_verify(daemon) == 0


async def test_who_may_say_what_is_checked_and_frames_are_delivered_once(cluster: Cluster):
    """Only a task's holder reports on it; only the holder proposes and decides its plan; a
    frame naming its topic 1,000 times is refused, not delivered 1,000 times."""
    (daemon,) = cluster.full_mesh(["a"])
    holder, intruder = Identity.generate(), Identity.generate()
    task = {"repository": "o/r", "task_id": 5}
    conversation = {"conversation": "o/r#5"}
    async with TestPeer() as relay:
        await relay.join(daemon.address)

        async def say(who: Identity, topic: str, type_: str, data: dict) -> None:
            await relay.send_frame(
                relay.frame(topic, envelope(who.peer_id, type_, data), author=who)
            )

        await say(holder, COORDINATION_TOPIC, "task_progress", {**task, "status": "claimed"})
        await await_until(
            lambda: any(r["holder"] == holder.peer_id for r in daemon.cli("tasks", "--json")),
            10,
            "the holder known",
        )
        await say(holder, ANTENNAE_TOPIC, "plan_proposal", {**conversation, "message_id": "p1"})
        await say(intruder, COORDINATION_TOPIC, "task_progress", {**task, "status": "running"})
        await say(intruder, COORDINATION_TOPIC, "task_complete", {**task, "success": True})
        await say(intruder, ANTENNAE_TOPIC, "plan_proposal", {**conversation, "message_id": "p2"})
        await say(intruder, ANTENNAE_TOPIC, "escalation", {**conversation, "reason": "mine"})
        await say(intruder, ANTENNAE_TOPIC, "consensus", {**conversation, "proposal_id": "p2"})
        looped = envelope(relay.peer_id, "capability_broadcast", {"node_id": relay.peer_id})
        await relay.send_frame(relay.frame([COORDINATION_TOPIC] * 1000, looped))
        await await_until(
            lambda: refused(daemon) == {"not_authorised": 5, "bad_frame": 1},
            10,
            "five refusals of authority and one bad frame",
        )
        (talk,) = daemon.cli("discuss", "o/r#5", "--json")
        assert talk["proposer"] == holder.peer_id and talk["state"] == "open"
        (row,) = [r for r in daemon.cli("tasks", "--json") if r["task"] == "o/r#5"]
        assert row["holder"] == holder.peer_id and row["phase"] == "claimed"
        assert daemon.status()["messages"]["topics"][COORDINATION_TOPIC]["accepted"] >= 1
    assert daemon.process.poll() is None


async def test_a_crowd_of_identities_is_bounded_and_status_stays_quick(cluster: Cluster):
    """Every signer once got a peer row, a replica, a writer thread and a place in `status`:
    400 identities killed a node under LimitNPROC. Now none of it grows with the crowd."""
    (daemon,) = cluster.full_mesh(["a"])
    crowd = [Identity.generate() for _ in range(400)]
    threads_before, rss_before = process(daemon.pid)
    async with TestPeer() as relay:
        await relay.join(daemon.address)
        for n, member in enumerate(crowd):
            head = {"seq": n + 1, "hash": f"{n:064x}", "sig": ""}
            data = {"node_id": member.peer_id, "agent_id": f"m{n}", "log_head": head}
            raw = envelope(member.peer_id, "capability_broadcast", data)
            await relay.send_frame(relay.frame(COORDINATION_TOPIC, raw, author=member))
        await await_until(
            lambda: daemon.status()["messages"]["topics"][COORDINATION_TOPIC]["accepted"] >= 400,
            20,
            "the crowd heard",
        )

        # Twenty clients asking at once, all the time: each answer within 2 s.
        slowest = [0.0]
        stop = threading.Event()

        def ask() -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    control.request(daemon.socket_path, "status", timeout=5)
                except control.ControlError as exc:
                    assert "busy" in str(exc)
                slowest[0] = max(slowest[0], time.monotonic() - started)

        askers = [threading.Thread(target=ask) for _ in range(20)]
        for thread in askers:
            thread.start()
        await asyncio.sleep(3)
        stop.set()
        for thread in askers:
            await asyncio.to_thread(thread.join)
        assert slowest[0] < 2.0

        status = daemon.status()
        threads_after, rss_after = process(daemon.pid)
        assert status["auditlog"]["replicas_total"] == 0, "none was connected: none replicated"
        assert status["peer_counts"]["known"] <= 256 and status["peer_counts"]["evicted"] >= 144
        assert len(json.dumps(status)) < 100_000
        assert threads_after < 20 and threads_after <= threads_before + 4
        assert rss_after - rss_before < 20 * 1024, f"RSS {rss_before} -> {rss_after} KiB"
    assert daemon.process.poll() is None
    logs = await asyncio.to_thread(lambda: list((daemon.dir / "state/auditlog").iterdir()))
    assert [p.name for p in logs] == [daemon.peer_id], "only our own log: no replica made"
