"""A burst as fast as a publisher can send, through 3 daemons: nothing lost, nothing dropped.

The publisher is a peer using our `Host` (as `bench/pubsub.py` does), attached to daemon A
only; A relays to B and C. Before our publishes waited for room in py-libp2p's send queues, a
burst of 5,000 lost 1,869 at the publisher while `status` said dropped = 0.
"""

import json
from datetime import UTC, datetime

from bzzz.messages import COORDINATION_TOPIC
from tests.integration.harness import Daemon, await_until, wait_until
from tests.integration.testpeer import TestPeer

BURST = 2000


def heard(daemon: Daemon, sender: str) -> int:
    """Messages `daemon` admitted from `sender` (the nodes' own broadcasts are not counted)."""
    row = daemon.peer(sender)
    return int(row["received"]) if row else 0


def progress(sender: str, n: int) -> bytes:
    """A task_progress of about 300 bytes, as the benchmark sends."""
    body = {
        "type": "task_progress",
        "from": sender,
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {
            "repository": "bench/bench",
            "task_id": n + 1,  # task ids start at 1
            "status": "working",
            "message": "x" * 100,
        },
    }
    return json.dumps(body).encode()


async def test_a_burst_of_2000_reaches_every_daemon_whole(cluster):
    daemons = cluster.full_mesh(["a", "b", "c"], interval=30)
    for daemon in daemons:
        others = {d.peer_id for d in daemons} - {daemon.peer_id}
        wait_until(lambda d=daemon, o=others: set(d.status()["connected"]) >= o, 20, "a mesh")
    async with TestPeer() as peer:
        await peer.join(daemons[0].address)
        for n in range(BURST):
            await peer.publish(COORDINATION_TOPIC, progress(peer.peer_id, n))
        assert peer.host.counters()["publish_stalled"] == 0
        assert peer.host.counters()["outbound_dropped"] == 0

        def delivered() -> dict[str, int]:
            return {d.name: heard(d, peer.peer_id) for d in daemons}

        try:
            await await_until(lambda: min(delivered().values()) >= BURST, 40, "every message")
        finally:
            print("delivered", delivered())  # shown by pytest on a failure
        assert delivered() == dict.fromkeys("abc", BURST)
    for daemon in daemons:
        messages = daemon.status()["messages"]
        assert messages["dropped"] == 0, (daemon.name, messages["dropped_by"])
        assert messages["handler_errors"] == 0, daemon.name
