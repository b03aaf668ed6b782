"""A libp2p peer run by the test itself, to send a daemon what a well-behaved node never would.

It is a real `bzzz.p2p.Host` (real TCP, Noise, Yamux, gossipsub) whose topics admit everything.
Forged and duplicated messages need raw gossipsub frames; they are built from py-libp2p's own
protobuf types and handed straight to the router, skipping our publish path.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import PUBSUB_SIGNING_PREFIX

from bzzz.auditlog.entry import GENESIS, Entry, SignedEntry
from bzzz.messages import COORDINATION_TOPIC, TOPICS
from bzzz.p2p import Host, Identity, Incoming, Stream
from bzzz.p2p._stream import StreamHandler
from tests.integration.harness import await_until

T = TypeVar("T")


class PeerThread:
    """An event loop of its own in a thread, so that hypothesis (synchronous) drives a peer."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class TestPeer:
    __test__ = False  # not a test class, despite the name

    def __init__(self, streams: dict[str, StreamHandler] | None = None) -> None:
        self.identity = Identity.generate()
        self.peer_id = self.identity.peer_id
        self.received: list[Incoming] = []
        self.host = Host(
            self.identity,
            ["/ip4/127.0.0.1/tcp/0"],
            {topic: self._admit for topic in TOPICS},
        )
        for protocol, handler in (streams or {}).items():
            self.host.set_stream_handler(protocol, handler)
        self._seqno = 1 << 40

    def _admit(self, incoming: Incoming) -> Incoming:
        self.received.append(incoming)
        return incoming

    async def __aenter__(self) -> TestPeer:
        await self.host.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.host.stop()

    async def join(self, address: str) -> None:
        """Connect to a daemon and wait until it is in our mesh on both topics."""
        peer_id = await self.host.connect(address)
        async with asyncio.timeout(15):
            for topic in TOPICS:
                await self.host.wait_for_mesh(peer_id, topic)

    async def publish(self, topic: str, data: bytes) -> None:
        await self.host.publish(topic, data)

    def frame(
        self,
        topic: str | list[str],
        data: bytes,
        signer: Identity | None = None,
        author: Identity | None = None,
    ) -> Any:
        """A gossipsub message from `author` (default: us), signed by `signer` (default: the
        author; a forgery when they differ). A message by another author is one we forward,
        as gossip does: that is how a crowd of identities reaches a node through one peer."""
        self._seqno += 1
        author = author or self.identity
        msg = rpc_pb2.Message(
            data=data,
            topicIDs=[topic] if isinstance(topic, str) else topic,
            from_id=_id_bytes(author.peer_id),
            seqno=self._seqno.to_bytes(8, "big"),
        )
        key = (signer or author).key_pair
        msg.signature = key.private_key.sign(
            PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString()
        )
        msg.key = key.public_key.serialize()
        return msg

    async def send_frame(self, msg: Any) -> None:
        """Hand a frame to gossipsub as if we had published it (it is sent as is)."""

        async def send() -> None:
            pubsub = self.host._pubsub
            assert pubsub is not None
            await pubsub.router.publish(pubsub.my_id, msg)

        await self.host._guest.call(send)


def _id_bytes(peer_id: str) -> bytes:
    from libp2p.peer.id import ID

    return bytes(ID.from_base58(peer_id).to_bytes())


class LogAuthor:
    """A peer whose log the test controls: it can serve altered entries and rewrite history."""

    def __init__(self) -> None:
        self.peer = TestPeer(streams={"/bzzz/log/1.0.0": self.serve})
        self.entries: list[SignedEntry] = []
        self.served: list[SignedEntry] = []  # what goes on the wire (possibly altered)
        self.answer: list[bytes] | None = None  # when set: the lines sent instead, as they are
        self.asked = 0  # requests received

    def append(self, type_: str, data: dict) -> None:
        prev = self.entries[-1].hash if self.entries else GENESIS
        entry = Entry(
            len(self.entries) + 1,
            datetime.now(UTC).isoformat(),
            self.peer.peer_id,
            type_,
            data,
            prev,
        )
        self.entries.append(SignedEntry.create(entry, self.peer.identity.sign))
        self.served = list(self.entries)

    async def serve(self, stream: Stream) -> None:
        while line := await stream.readline(65536):
            self.asked += 1
            if self.answer is not None:
                # As is, then hang up: an answer that never ends would hold the asker for
                # its whole read timeout.
                await stream.write(b"".join(raw + b"\n" for raw in self.answer))
                return
            request = json.loads(line)
            chosen = [s for s in self.served if s.entry.seq >= request["from"]][: request["limit"]]
            for signed in chosen:
                await stream.write(signed.to_record() + b"\n")
            await stream.write(json.dumps({"end": True, "head": len(self.served)}).encode() + b"\n")

    async def announce(self, seq: int | None = None) -> None:
        """Announce our log's head (or claim one at `seq`, to make the daemon ask again)."""
        head = self.entries[-1]
        body = {
            "type": "capability_broadcast",
            "from": self.peer.peer_id,
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {
                "node_id": self.peer.peer_id,
                "agent_id": "forger",
                "log_head": {"seq": seq or head.entry.seq, "hash": head.hash, "sig": ""},
            },
        }
        await self.peer.publish(COORDINATION_TOPIC, json.dumps(body).encode())

    async def announce_until(self, predicate, timeout: float, what: str, seq: int | None = None):
        """Announce the head on every beat (0.5 s), as a node does, until `predicate` holds: a
        daemon replicates an author only once it has been connected for a while."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            await self.announce(seq)
            try:
                return await await_until(predicate, 0.5, what)
            except AssertionError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
