"""The libp2p host against a peer (one trio run per thread, so the peer has a thread of its
own): what py-libp2p drops is counted, never silent."""

import asyncio

from bzzz.messages import COORDINATION_TOPIC, TOPICS
from bzzz.p2p import GossipSettings, Host, Identity
from tests.integration.testpeer import PeerThread, TestPeer


async def test_what_a_full_send_queue_drops_is_counted_not_silent():
    sender = Host(
        Identity.generate(),
        ["/ip4/127.0.0.1/tcp/0"],
        dict.fromkeys(TOPICS, lambda incoming: incoming),
        settings=GossipSettings(outbound_queue=8),
    )
    receiver = TestPeer()
    thread = PeerThread()
    await sender.start()
    try:
        await asyncio.to_thread(thread.run, receiver.__aenter__())
        await sender.connect(receiver.host.listen_addrs()[0])
        async with asyncio.timeout(15):
            await sender.wait_for_mesh(receiver.peer_id, COORDINATION_TOPIC)
        for n in range(500):
            await sender.publish(COORDINATION_TOPIC, f"burst {n}".encode())
        dropped = 0
        for _ in range(50):  # until the receiver has all it will get
            await asyncio.sleep(0.1)
            dropped = sender.counters()["outbound_dropped"]
            if len(receiver.received) + dropped >= 500:
                break
        assert dropped > 0, "an 8-slot queue cannot hold a burst of 500"
        assert len(receiver.received) < 500
        assert len(receiver.received) + dropped >= 500, "each one arrived or was counted"
    finally:
        await sender.stop()
        await asyncio.to_thread(thread.run, receiver.__aexit__(None, None, None))
        thread.close()
