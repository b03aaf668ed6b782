"""We speak libp2p, not a dialect: a js-libp2p node talks to our host and our daemon."""

import json
from datetime import UTC, datetime

from bzzz.messages import ANTENNAE_TOPIC, COORDINATION_TOPIC, TOPICS
from tests.integration.harness import Cluster, await_until
from tests.integration.testpeer import TestPeer
from tests.interop.jspeer import JsPeer


def envelope(sender: str, msg_type: str, data: dict, **extra) -> str:
    body = {
        "type": msg_type,
        "from": sender,
        "timestamp": datetime.now(UTC).isoformat(),
        "data": data,
        **extra,
    }
    return json.dumps(body)


async def test_both_topics_both_ways_with_strict_signing():
    async with TestPeer() as ours, JsPeer("/ip4/127.0.0.1/tcp/0") as theirs:
        await theirs.dial(ours.host.listen_addrs()[0])
        for topic in TOPICS:
            await ours.host.wait_for_mesh(theirs.peer_id, topic)

        for topic in TOPICS:
            await ours.publish(topic, f"from python on {topic}".encode())
            await theirs.publish(topic, f"from js on {topic}")

        for topic in TOPICS:
            got = await theirs.wait_for(
                lambda e, t=topic: e["event"] == "message" and e["topic"] == t, 10
            )
            assert got["data"] == f"from python on {topic}"
            assert got["from"] == ours.peer_id  # signed by us, verified by js
        await await_until(lambda: len(ours.received) >= 2, 10, "both js messages")
        assert sorted((m.topic, m.data, m.signer) for m in ours.received) == sorted(
            (topic, f"from js on {topic}".encode(), theirs.peer_id) for topic in TOPICS
        )


async def test_the_daemon_admits_js_envelopes_and_refuses_malformed_ones(cluster: Cluster):
    (daemon,) = cluster.full_mesh(["a"])
    async with JsPeer("/ip4/127.0.0.1/tcp/0") as js:
        await js.dial(daemon.address)
        me = js.peer_id
        # The daemon's own broadcast reaches js, signed by the daemon.
        broadcast = await js.wait_for(
            lambda e: e["event"] == "message" and e["from"] == daemon.peer_id, 15
        )
        assert json.loads(broadcast["data"])["type"] == "capability_broadcast"

        await js.publish(COORDINATION_TOPIC, "{not json")
        await js.publish(
            COORDINATION_TOPIC,
            envelope(daemon.peer_id, "capability_broadcast", {"node_id": daemon.peer_id}),
        )
        await js.publish(
            ANTENNAE_TOPIC, envelope(me, "plan_proposal", {"conversation": "o/r#1", "plan": "p"})
        )
        await js.publish(
            COORDINATION_TOPIC,
            envelope(
                me,
                "capability_broadcast",
                {"node_id": me, "agent_id": "js-agent", "capabilities": ["javascript"]},
            ),
        )

        row = await await_until(
            lambda: (r := daemon.peer(me)) and r["agent_id"] == "js-agent" and r,
            15,
            "the js peer's capabilities in the daemon's table",
        )
        assert row["capabilities"] == ["javascript"]
        messages = daemon.status()["messages"]
        assert messages["rejected"]["not_json"] == 1
        assert messages["rejected"]["sender_mismatch"] == 1
        assert messages["topics"][ANTENNAE_TOPIC]["accepted"] == 1
        assert messages["topics"][COORDINATION_TOPIC]["accepted"] == 1
