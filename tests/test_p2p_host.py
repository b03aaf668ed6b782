"""The libp2p host against a peer (one trio run per thread, so the peer has a thread of its
own): our own publishes are never dropped by a full send queue, what py-libp2p drops when we
forward is counted, and each message costs one signature check."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import libp2p.pubsub.pubsub
import pytest
import trio

import bzzz.p2p._host
from bzzz.bus import MessageBus
from bzzz.messages import COORDINATION_TOPIC, TOPICS
from bzzz.p2p import GossipSettings, Host, Identity
from bzzz.p2p._host import PublishStalled
from tests.integration.harness import await_until
from tests.integration.testpeer import PeerThread, TestPeer


@contextlib.asynccontextmanager
async def meshed(**settings: Any) -> AsyncIterator[tuple[Host, TestPeer]]:
    """A sender with these gossip settings, meshed with a receiving peer."""
    sender = Host(
        Identity.generate(),
        ["/ip4/127.0.0.1/tcp/0"],
        dict.fromkeys(TOPICS, lambda incoming: incoming),
        settings=GossipSettings(**settings),
    )
    receiver = TestPeer()
    thread = PeerThread()
    await sender.start()
    try:
        await asyncio.to_thread(thread.run, receiver.__aenter__())
        await sender.connect(receiver.host.listen_addrs()[0])
        async with asyncio.timeout(15):
            await sender.wait_for_mesh(receiver.peer_id, COORDINATION_TOPIC)
        yield sender, receiver
    finally:
        await sender.stop()
        await asyncio.to_thread(thread.run, receiver.__aexit__(None, None, None))
        thread.close()


async def stall_writes(host: Host) -> None:
    """From now on the host's writer to each peer hangs on its first RPC, as on a peer that
    stopped reading: its send queue fills and stays full."""

    async def hang(stream: Any, rpc: Any) -> bool:
        await trio.sleep_forever()
        return False

    assert host._pubsub is not None
    host._pubsub.write_msg = hang


async def test_a_burst_through_a_small_send_queue_arrives_whole():
    async with meshed(outbound_queue=8) as (sender, receiver):
        for n in range(500):
            await sender.publish(COORDINATION_TOPIC, f"burst {n}".encode())
        await await_until(lambda: len(receiver.received) >= 500, 20, "all 500")
        assert [m.data for m in receiver.received] == [f"burst {n}".encode() for n in range(500)]
        assert sender.counters()["outbound_dropped"] == 0
        assert sender.counters()["publish_stalled"] == 0


async def test_a_publish_that_finds_no_room_fails_loudly_and_is_counted():
    async with meshed(outbound_queue=8, publish_wait=0.5) as (sender, _):
        bus = MessageBus(sender.peer_id, max_skew=60)
        bus.attach(sender)
        await sender._guest.call(stall_writes, sender)
        started = asyncio.get_running_loop().time()
        with pytest.raises(PublishStalled, match="send queue full"):
            for n in range(20):  # the writer holds one, the queue eight: the tenth at the latest
                await sender.publish(COORDINATION_TOPIC, f"stuck {n}".encode())
        assert 0.5 <= asyncio.get_running_loop().time() - started < 5
        assert sender.counters()["publish_stalled"] == 1
        assert sender.counters()["outbound_dropped"] == 0, "ours wait, they are never dropped"
        assert bus.stats()["dropped_by"]["publish"] == 1
        assert bus.stats()["dropped"] == 1

        # One stuck peer must not hold every publish: the next passes it over, counted.
        started = asyncio.get_running_loop().time()
        await sender.publish(COORDINATION_TOPIC, b"after the stall")
        assert asyncio.get_running_loop().time() - started < 0.5
        assert sender.counters()["outbound_dropped"] == 1


async def test_what_a_full_send_queue_drops_when_forwarding_is_counted():
    author = TestPeer()  # a third node, whose messages the sender forwards

    async with meshed(outbound_queue=8) as (sender, _):

        async def forward(count: int) -> None:
            assert sender._pubsub is not None
            for n in range(count):
                frame = author.frame(COORDINATION_TOPIC, f"relayed {n}".encode())
                await sender._pubsub.router.publish(sender._pubsub.my_id, frame)

        await sender._guest.call(stall_writes, sender)
        await sender._guest.call(forward, 50)
        dropped = sender.counters()["outbound_dropped"]
        assert 50 - 9 <= dropped <= 50, "one being written, eight queued, the rest counted"


async def test_each_message_has_its_signature_checked_once_and_no_sender_record(monkeypatch):
    ours, theirs, records = [], [], []
    check = bzzz.p2p._host.signature_validator
    consume = libp2p.pubsub.pubsub.maybe_consume_signed_record

    def counting_consume(rpc: Any, host: Any, peer: Any) -> bool:
        if rpc.publish and rpc.HasField("senderRecord"):
            records.append(1)
        return bool(consume(rpc, host, peer))

    monkeypatch.setattr(bzzz.p2p._host, "signature_validator", lambda m: ours.append(1) or check(m))
    monkeypatch.setattr(
        libp2p.pubsub.pubsub, "signature_validator", lambda m: theirs.append(1) or check(m)
    )
    monkeypatch.setattr(libp2p.pubsub.pubsub, "maybe_consume_signed_record", counting_consume)
    async with meshed() as (sender, receiver):
        for n in range(20):
            await sender.publish(COORDINATION_TOPIC, f"signed {n}".encode())
        await await_until(lambda: len(receiver.received) >= 20, 10, "all 20")
        assert receiver.host.counters()["bad_signature"] == 0, "what we publish is signed"
    assert (len(ours), len(theirs), len(records)) == (20, 0, 0)


async def test_a_duplicate_copy_spawns_no_task(monkeypatch):
    """A copy of a message already seen is turned away by the read loop itself: py-libp2p would
    spawn a tracked task per copy only to find the duplicate inside it."""
    author = TestPeer()
    pushed: list[bytes] = []
    push = bzzz.p2p._host._Pubsub.push_msg

    async def counting_push(self: Any, forwarder: Any, msg: Any) -> None:
        if forwarder != self.my_id:
            pushed.append(msg.data)
        await push(self, forwarder, msg)

    monkeypatch.setattr(bzzz.p2p._host._Pubsub, "push_msg", counting_push)
    async with meshed() as (sender, receiver):
        first = author.frame(COORDINATION_TOPIC, b"once")
        last = author.frame(COORDINATION_TOPIC, b"after the copies")

        async def forward() -> None:
            assert sender._pubsub is not None
            for frame in (first, first, first, last):
                await sender._pubsub.router.publish(sender._pubsub.my_id, frame)

        await sender._guest.call(forward)
        await await_until(lambda: len(receiver.received) >= 2, 10, "both messages")
        # The copies came on the same stream before `last`, so were read before it.
        assert pushed.count(b"once") == 1
        assert [m.data for m in receiver.received] == [b"once", b"after the copies"]


def test_the_validation_cache_keeps_the_most_recently_used_within_its_size():
    cache = bzzz.p2p._host._ValidationCache(ttl=300, max_size=3)
    valid = libp2p.pubsub.pubsub.ValidationResult(is_valid=True, timestamp=time.time())
    for key in (b"a", b"b", b"c"):
        cache.put(key, valid)
    assert cache.get(b"a") is valid  # used: now the most recent
    cache.put(b"d", valid)
    assert [k for k in (b"a", b"b", b"c", b"d") if cache.get(k)] == [b"a", b"c", b"d"]
    old = libp2p.pubsub.pubsub.ValidationResult(is_valid=False, timestamp=time.time() - 301)
    cache.put(b"e", old)
    assert cache.get(b"e") is None, "expired"
    cache.clear_expired()
    assert len(cache.cache) <= 3


async def test_the_host_validates_through_the_constant_time_cache():
    async with meshed() as (sender, _):
        assert isinstance(sender._pubsub.validation_cache, bzzz.p2p._host._ValidationCache)
