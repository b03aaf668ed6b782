"""What a peer sends that breaks the rules is dropped and counted; the daemon keeps working."""

import json
from datetime import UTC, datetime, timedelta

from bzzz.messages import ANTENNAE_TOPIC, COORDINATION_TOPIC
from bzzz.p2p import Identity
from tests.integration.harness import Cluster, await_until
from tests.integration.testpeer import TestPeer


def envelope(sender: str, **overrides) -> bytes:
    body = {
        "type": "capability_broadcast",
        "from": sender,
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {"node_id": sender, "agent_id": "tester", "capabilities": ["probe"]},
    }
    body.update(overrides)
    return json.dumps(body).encode()


async def test_bad_messages_are_dropped_and_counted_by_reason(cluster: Cluster):
    (daemon,) = cluster.full_mesh(["a"])
    async with TestPeer() as peer:
        await peer.join(daemon.address)
        me = peer.peer_id
        victim = Identity.generate()
        old = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

        await peer.publish(COORDINATION_TOPIC, envelope(victim.peer_id))
        await peer.publish(COORDINATION_TOPIC, b"\x00 not json")
        await peer.publish(COORDINATION_TOPIC, envelope(me, padding="x" * 70_000))
        await peer.publish(COORDINATION_TOPIC, envelope(me, data={"agent_id": "no node id"}))
        await peer.publish(COORDINATION_TOPIC, envelope(me, timestamp=old))
        await peer.publish(COORDINATION_TOPIC, envelope(me, type="quantum_broadcast"))
        objection = {"conversation": "o/r#1", "reason": "loops"}
        await peer.publish(
            ANTENNAE_TOPIC, envelope(me, type="objection", data=objection, hop_count=4)
        )
        await peer.publish(COORDINATION_TOPIC, envelope(me, type="objection", data=objection))
        # Signed with someone else's key: py-libp2p would drop it without a trace.
        await peer.send_frame(peer.frame(COORDINATION_TOPIC, envelope(me), signer=victim))
        # The same message (same signer and seqno) twice: delivered once.
        valid = peer.frame(COORDINATION_TOPIC, envelope(me))
        await peer.send_frame(valid)
        await peer.send_frame(valid)
        marker = envelope(
            me, data={"node_id": me, "agent_id": "still-listening", "capabilities": ["probe"]}
        )
        await peer.publish(COORDINATION_TOPIC, marker)

        row = await await_until(
            lambda: (r := daemon.peer(me)) and r["agent_id"] == "still-listening" and r,
            10,
            "the daemon to accept the marker after the bad messages",
        )
        assert row["capabilities"] == ["probe"]
        messages = daemon.status()["messages"]
        refused = {reason: n for reason, n in messages["rejected"].items() if n}
        assert refused == {
            "sender_mismatch": 1,
            "not_json": 1,
            "oversized": 1,
            "bad_data": 1,
            "clock_skew": 1,
            "unknown_type": 1,
            "hop_limit": 1,
            "wrong_topic": 1,
            "bad_signature": 1,
        }
        coordination = messages["topics"][COORDINATION_TOPIC]
        assert coordination["accepted"] == 2, "the duplicate must not be delivered twice"
        assert coordination["ignored"] == 1
        assert coordination["rejected"] == 6
        assert messages["topics"][ANTENNAE_TOPIC]["rejected"] == 1
        assert daemon.process.poll() is None

    # The daemon also heard nothing it should not have forwarded: it is still serving.
    assert daemon.status()["peer_id"] == daemon.peer_id
