"""A libp2p peer run by the test itself, to send a daemon what a well-behaved node never would.

It is a real `bzzz.p2p.Host` (real TCP, Noise, Yamux, gossipsub) whose topics admit everything.
Forged and duplicated messages need raw gossipsub frames; they are built from py-libp2p's own
protobuf types and handed straight to the router, skipping our publish path.
"""

from __future__ import annotations

import asyncio
from typing import Any

from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import PUBSUB_SIGNING_PREFIX

from bzzz.messages import TOPICS
from bzzz.p2p import Host, Identity, Incoming
from bzzz.p2p._stream import StreamHandler


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

    def frame(self, topic: str, data: bytes, signer: Identity | None = None) -> Any:
        """A gossipsub message from us, signed by `signer` (a forgery unless it is us)."""
        self._seqno += 1
        msg = rpc_pb2.Message(
            data=data,
            topicIDs=[topic],
            from_id=_id_bytes(self.peer_id),
            seqno=self._seqno.to_bytes(8, "big"),
        )
        key = (signer or self.identity).key_pair
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
