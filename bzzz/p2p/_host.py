"""The libp2p host: TCP + Noise + Yamux, gossipsub on our topics, served to asyncio code.

Everything py-libp2p-specific lives here: the transport stack, the gossipsub parameters, the
hooks that count forged messages and hand admitted ones to asyncio without py-libp2p's 32-slot
subscription channel. Callers see strings (peer ids, multiaddrs) and bytes, never libp2p types.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import os
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Yamux's release-on-read mode costs about 3x CPU per message here and buys nothing for small
# gossip frames. py-libp2p reads the variable on every frame; set it before any.
os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")

import multiaddr
import structlog
import trio
from libp2p import new_host
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub, ValidationCache, ValidationResult
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX, signature_validator
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from bzzz.p2p._guest import GuestStopped, TrioGuest
from bzzz.p2p._stream import Stream, StreamError, StreamHandler, trio_handler
from bzzz.p2p.identity import Identity

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class GossipSettings:
    """Gossipsub parameters chosen for a small coordination mesh (not py-libp2p's defaults).

    - heartbeat 1 s (py-libp2p: 120 s): mesh repair and gossip within a second, as go-libp2p.
    - meshsub 1.1 and 1.0 only: 1.2 adds an IDONTWANT per message to every peer, which here cost
      ~3x CPU per message and two outbound queue slots per publish, for no gain at our sizes.
    - spam protection off (py-libp2p: 10 msg/s per topic, own publishes included): our own
      validators refuse bad messages, and Antennae throttles talkative peers per conversation.
    - outbound queue 1024 RPCs per peer (py-libp2p: 32): a burst of a few hundred messages is
      delivered instead of silently dropped.
    - publish wait 10 s: how long our own publish waits for room in a peer's full send queue
      before it fails with PublishStalled (py-libp2p would drop it there).
    - seen-messages TTL 300 s: longer than twice the clock-skew window, so a replayed message is
      either remembered or refused as too old.
    """

    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval: int = 1
    gossip_window: int = 3
    gossip_history: int = 5
    fanout_ttl: int = 60
    prune_back_off: int = 60
    seen_ttl: int = 300
    outbound_queue: int = 1024
    publish_wait: float = 10.0
    inbound_queue: int = 4096
    max_rpc_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class Incoming:
    """A gossipsub message whose signature checked out, before our own validation."""

    topic: str
    data: bytes
    signer: str
    seqno: int
    forwarder: str


@dataclass(frozen=True)
class PeerEvent:
    peer_id: str
    connected: bool
    address: str = ""


SHUTDOWN_HANGUP_S = 2.0
REFUSED_LOGGED = 1024  # refused peers logged by id (each once)

# How much delivery history the adaptive-gossip health score may keep.
DELIVERY_HISTORY_S = 60.0

# How long our address list is reused before it is built again (see `_reuse_addrs`).
ADDRS_REUSE_S = 1.0

Admit = Callable[[Incoming], object | None]
"""Turns an incoming message into what subscribers get, or None to refuse it (not forwarded)."""

PeerListener = Callable[[PeerEvent], None]


class ListenError(OSError):
    """A configured listen address could not be bound."""


class PublishStalled(Exception):
    """A peer's send queue stayed full for `publish_wait` seconds: the message was not sent."""


class _ValidationCache(ValidationCache):
    """py-libp2p's cache of validation results, O(1): its own keeps the LRU order in a list,
    so each new message scanned and shifted all 1,000 entries (3 % of a node's CPU)."""

    def __init__(self, ttl: int, max_size: int) -> None:
        super().__init__(ttl, max_size)
        self.cache: OrderedDict[bytes, ValidationResult] = OrderedDict()

    def get(self, msg_id: bytes) -> ValidationResult | None:
        result = self.cache.get(msg_id)
        if result is None:
            return None
        if time.time() - result.timestamp > self.ttl:
            del self.cache[msg_id]
            return None
        self.cache.move_to_end(msg_id)
        return result

    def put(self, msg_id: bytes, result: ValidationResult) -> None:
        self.cache[msg_id] = result
        self.cache.move_to_end(msg_id)
        while len(self.cache) > self.max_size:
            self.cache.popitem(last=False)

    def _remove(self, msg_id: bytes) -> None:
        self.cache.pop(msg_id, None)


class _Pubsub(Pubsub):
    """py-libp2p's Pubsub, hooked: forged messages counted, direct delivery, deeper queues,
    our own publishes never dropped, each signature verified once.

    Run it with strict_signing off: py-libp2p would otherwise verify every message a second
    time after our counted check in `_push_msg` (and our own on the way out); `publish` signs.
    """

    def __init__(self, owner: Host, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner
        # Sequence numbers start at the clock in nanoseconds, as go-libp2p's do. py-libp2p
        # starts at seconds, so a node restarted soon after a burst would reuse numbers its
        # peers still remember, and they would drop its new messages as duplicates.
        self.counter = time.time_ns()
        self._sign = self.host.get_private_key().sign
        self._public_key = self.host.get_public_key().serialize()
        self._outbound: dict[ID, Any] = {}  # each peer's send queue
        self._writing = 0  # RPCs being written right now
        self._room: trio.Event | None = None  # set when a send queue shrinks, if awaited
        self._stalled: set[ID] = set()  # peers that took nothing during a whole publish wait
        cache = self.validation_cache
        self.validation_cache = _ValidationCache(cache.ttl, cache.max_size)

    async def publish(self, topic_id: str | list[str], data: bytes) -> None:
        """Sign and send once every peer of the topics has room in its send queue.

        py-libp2p drops what does not fit; our own messages wait for room instead, at most
        `publish_wait` seconds, then fail with PublishStalled (counted as publish_stalled).
        """
        topics = [topic_id] if isinstance(topic_id, str) else topic_id
        if self._full_queues(topics):
            await self._wait_for_room(topics)
        # From here to the queues nothing yields to trio: the room is still there.
        msg = rpc_pb2.Message(
            data=data, topicIDs=topics, from_id=self.my_id.to_bytes(), seqno=self._next_seqno()
        )
        msg.signature = self._sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
        msg.key = self._public_key
        await self.push_msg(self.my_id, msg)

    async def _wait_for_room(self, topics: list[str]) -> None:
        within = self._owner.settings.publish_wait
        with trio.move_on_after(within) as waiting:
            while full := self._full_queues(topics):
                if self._room is None:
                    self._room = trio.Event()
                await self._room.wait()
        if waiting.cancelled_caught:
            # Until such a peer takes an RPC again, publishes pass it over (what it misses
            # is counted as outbound_dropped): one stuck peer must not hold every publish.
            self._stalled.update(full)
            self._owner.count("publish_stalled")
            peers = [peer.to_base58() for peer in full]
            log.warning("publish_stalled", topics=topics, peers=peers, waited_s=within)
            raise PublishStalled(f"send queue full for {within} s: {', '.join(peers)}")

    def _full_queues(self, topics: list[str]) -> list[ID]:
        """Peers on `topics` whose send queue has no free slot (stalled ones aside)."""
        full = []
        for peer in {peer for topic in topics for peer in self.peer_topics.get(topic, ())}:
            if peer in self._stalled:
                continue
            queue = self._outbound.get(peer)
            if queue is not None and not queue.closed and len(queue) >= queue._queue.max_size:
                full.append(peer)
        return full

    def _made_room(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    def outbound_idle(self) -> bool:
        """Nothing queued or being written to any peer: what we published has left."""
        return self._writing == 0 and not any(len(q._queue) for q in self._outbound.values())

    async def write_msg(self, stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
        self._writing += 1
        try:
            return await super().write_msg(stream, rpc_msg)
        finally:
            self._writing -= 1

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        # Runs as a task of pubsub's service: an exception here would stop pubsub, and with it
        # the host. Whatever a peer sent, it ends here, counted.
        try:
            await self._push_msg(msg_forwarder, msg)
        except Exception as exc:
            self._owner.count("handler_errors")
            log.debug("pubsub_push_failed", peer=str(msg_forwarder), error=repr(exc)[:200])

    async def _push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder == self.my_id:
            await super().push_msg(msg_forwarder, msg)
            return
        if self._is_msg_seen(msg):
            return  # a duplicate: before any crypto, as in the parent
        # Honest nodes name one topic per message (js-libp2p's gossipsub cannot name more);
        # a frame listing its topic 1,000 times would be validated and delivered 1,000 times.
        if len(msg.topicIDs) != 1:
            self._owner.count("bad_frame")
            return
        # py-libp2p drops bad signatures silently; check first so they are counted.
        if not signature_validator(msg):
            self._owner.count("bad_signature")
            return
        await super().push_msg(msg_forwarder, msg)

    def _is_subscribed_to_msg(self, msg: rpc_pb2.Message) -> bool:
        # py-libp2p's read loop asks this of every copy it receives, then spawns a service task
        # for it (a tracked task, ~100 us) only to find in push_msg that it is a duplicate: in
        # a full mesh of n nodes, n - 2 of every n - 1 copies are. Say no to those here.
        return super()._is_subscribed_to_msg(msg) and not self._is_msg_seen(msg)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        self._owner.deliver(publish_message)

    async def handle_sending_messages(self, peer_id: ID, stream: INetStream, queue: Any) -> None:
        queue._queue.max_size = self._owner.settings.outbound_queue
        push, pop = queue.push, queue.pop

        def counted_push(rpc: rpc_pb2.RPC, priority: bool = False) -> bool:
            # py-libp2p drops what does not fit and logs it at debug; count it. Our own
            # publishes wait for room, so only forwarded ones (or ours to a stalled peer).
            if push(rpc, priority):
                return True
            self._owner.count("outbound_dropped")
            return False

        async def pop_and_wake() -> rpc_pb2.RPC | None:
            rpc: rpc_pb2.RPC | None = await pop()
            self._stalled.discard(peer_id)
            self._made_room()  # a publish may be waiting for this slot
            return rpc

        queue.push, queue.pop = counted_push, pop_and_wake
        self._outbound[peer_id] = queue
        try:
            await super().handle_sending_messages(peer_id, stream, queue)
        finally:
            if self._outbound.get(peer_id) is queue:
                del self._outbound[peer_id]
                self._stalled.discard(peer_id)
            self._made_room()  # a publish waiting for this peer waits no more


class _BoundedGossipSub(GossipSub):
    """py-libp2p's GossipSub without its two leaks (measured with 3 nodes at 100 msg/s).

    - Its adaptive gossip stretches the heartbeat from the configured 1 s to 30-60 s when
      the mesh is smaller than D (as in any cluster of fewer than 7 nodes). The message cache
      shifts once per heartbeat, so it held ~5 minutes of messages at ~2.7 KB each (protobuf
      keeps each message's whole RPC alive): 84 -> 174 MB RSS. We keep the heartbeat.
    - `recent_message_deliveries` gains a timestamp per message and is trimmed only on a path
      that is skipped in some states; trim it every heartbeat.
    """

    def _adapt_heartbeat_parameters(self, health: float) -> None:
        self.heartbeat_interval = self.heartbeat_interval_base

    def _periodic_security_cleanup(self) -> None:
        super()._periodic_security_cleanup()
        cutoff = time.time() - DELIVERY_HISTORY_S
        for topic in list(self.recent_message_deliveries):
            deliveries = self.recent_message_deliveries[topic]
            del deliveries[: bisect.bisect_right(deliveries, cutoff)]  # time-ordered
            if not deliveries:
                del self.recent_message_deliveries[topic]

    def send_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, priority: bool = False) -> None:
        # py-libp2p attaches our signed peer record to every message it sends, and the
        # receiver verifies it on every copy, duplicates included (~60 us each). Peers have it
        # from the hello that opens each stream; go- and js-libp2p never send it with messages.
        if rpc.publish and rpc.senderRecord:
            rpc.ClearField("senderRecord")  # the same RPC goes to every peer: once is enough
        super().send_rpc(peer_id, rpc, priority)


class _Notifee(INotifee):
    def __init__(self, owner: Host) -> None:
        self._owner = owner

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        await self._owner.on_connected(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._owner.on_disconnected(conn)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


class Host:
    """A libp2p host joined to a fixed set of gossipsub topics, driven from asyncio.

    Each topic has an `admit` function that runs as the gossipsub validator (inside libp2p,
    before forwarding): what it returns is delivered to `messages(topic)`; None refuses the
    message. Our own publishes are not delivered back to us.
    """

    def __init__(
        self,
        identity: Identity,
        listen: Sequence[str],
        topics: Mapping[str, Admit],
        allow_peers: Collection[str] = (),
        settings: GossipSettings | None = None,
    ) -> None:
        self.identity = identity
        self.peer_id = identity.peer_id
        self._own_id = bytes(ID.from_base58(identity.peer_id).to_bytes())
        self.settings = settings or GossipSettings()
        self._listen = [multiaddr.Multiaddr(addr) for addr in listen]
        self._admit = dict(topics)
        self._allow = frozenset(allow_peers)
        self._queues: dict[str, asyncio.Queue[object]] = {
            topic: asyncio.Queue(self.settings.inbound_queue) for topic in topics
        }
        self._admitted: OrderedDict[bytes, object] = OrderedDict()
        self._listeners: list[PeerListener] = []
        self._stream_handlers: dict[str, StreamHandler] = {}
        self._counters: dict[str, int] = dict.fromkeys(
            (
                "bad_signature",  # forged: py-libp2p alone drops them without a trace
                "bad_frame",  # a frame no honest node sends
                "inbound_overflow",  # admitted, but our inbound queue was full
                "outbound_dropped",  # py-libp2p's per-peer send queue was full (forwarding)
                "publish_stalled",  # our own publish found a send queue full for publish_wait
                "stream_errors",  # a peer's stream broke a protocol handler: stream reset
                "handler_errors",  # a message broke pubsub's handling: dropped
                "peers_refused",  # connections from peers not in allow_peers
            ),
            0,
        )
        self._refused_logged: set[Any] = set()
        self._guest = TrioGuest()
        self._host: Any = None
        self._pubsub: _Pubsub | None = None
        self._router: GossipSub | None = None
        self._bound: list[str] = []

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, join the topics, and return once messages can flow (or raise why not)."""
        for address in self._listen:
            _probe_port(address)
        await self._guest.start(self._trio_main)

    async def stop(self) -> None:
        stuck = await self._guest.stop()
        if stuck:
            log.error("p2p_stop_overdue", still_running=stuck)

    async def wait_done(self) -> None:
        """Return (or raise) when the libp2p side ends; it should only end by `stop`."""
        await self._guest.wait_done()

    async def _trio_main(self, stop: trio.Event, task_status: Any) -> None:
        key_pair = self.identity.key_pair
        s = self.settings
        host = new_host(
            key_pair=key_pair,
            # Noise only: new_host would otherwise also accept plaintext sessions.
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(
                    key_pair, noise_privkey=new_x25519_key_pair().private_key
                )
            },
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            connection_config=ConnectionConfig(min_connections=0, low_watermark=0),
        )
        router = _BoundedGossipSub(
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=s.degree,
            degree_low=s.degree_low,
            degree_high=s.degree_high,
            time_to_live=s.fanout_ttl,
            gossip_window=s.gossip_window,
            gossip_history=s.gossip_history,
            heartbeat_interval=s.heartbeat_interval,
            prune_back_off=s.prune_back_off,
            spam_protection_enabled=False,
        )
        pubsub = _Pubsub(
            self,
            host,
            router,
            strict_signing=False,  # _Pubsub signs and verifies (once)
            seen_ttl=s.seen_ttl,
            max_inbound_rpc_size=s.max_rpc_bytes,
        )
        host.get_network().register_notifee(_Notifee(self))
        self._contain_stream_handlers(host.get_network())
        try:
            async with host.run(self._listen):
                self._check_listening(host)
                _reuse_addrs(host)  # listening: the list is complete now
                # The auto-connector dials every peer in the peer store to reach ~150
                # connections; discovery decides whom we dial.
                await host.get_network().auto_connector.stop()  # type: ignore[attr-defined]
                async with background_trio_service(pubsub), background_trio_service(router):
                    await pubsub.wait_until_ready()
                    for topic in self._admit:
                        pubsub.set_topic_validator(topic, self._validator(topic), False)
                        await pubsub.subscribe(topic)
                    for protocol, handler in self._stream_handlers.items():
                        host.set_stream_handler(
                            TProtocol(protocol), trio_handler(self._guest, protocol, handler)
                        )
                    self._host, self._pubsub, self._router = host, pubsub, router
                    task_status.started()
                    try:
                        await stop.wait()
                    finally:
                        self._host = self._pubsub = self._router = None
                    # Hang up first: a message arriving while pubsub shuts down crashes it.
                    with trio.move_on_after(SHUTDOWN_HANGUP_S):
                        for peer in host.get_connected_peers():
                            await host.disconnect(peer)
        except Exception as exc:
            if not stop.is_set():
                raise
            # Leaving anyway; py-libp2p's teardown races are no reason to fail the stop.
            log.debug("p2p_shutdown_error", error=repr(exc))

    def _contain_stream_handlers(self, network: Any) -> None:
        """Every stream a peer opens (gossipsub, identify, the log protocol) runs under this
        wrapper: an exception in its handler resets that stream and is counted. Unwrapped, a
        5-byte invalid protobuf on /meshsub escapes into the swarm and stops the host."""
        handler = network.common_stream_handler

        async def contained(stream: INetStream) -> None:
            try:
                await handler(stream)
            except Exception as exc:
                self.count("stream_errors")
                log.debug(
                    "stream_failed",
                    peer=stream.muxed_conn.peer_id.to_base58(),
                    protocol=str(stream.get_protocol()),
                    error=repr(exc)[:200],
                )
                with contextlib.suppress(Exception):
                    await stream.reset()

        network.set_stream_handler(contained)

    def _check_listening(self, host: Any) -> None:
        network = host.get_network()
        missing = [str(a) for a in self._listen if str(a) not in network.listeners]
        if missing:
            raise ListenError(f"cannot listen on {', '.join(missing)} (address in use?)")
        self._bound = [str(addr) for addr in host.get_addrs()]

    # ---- inbound ---------------------------------------------------------------------------

    def _validator(self, topic: str) -> Callable[[ID, rpc_pb2.Message], bool]:
        admit = self._admit[topic]

        def validate(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            if msg.from_id == self._own_id:
                return True  # our own publish
            result = admit(
                Incoming(
                    topic=topic,
                    data=bytes(msg.data),
                    signer=ID(msg.from_id).to_base58(),
                    seqno=int.from_bytes(msg.seqno, "big"),
                    forwarder=forwarder.to_base58(),
                )
            )
            if result is None:
                return False
            self._admitted[msg.from_id + msg.seqno] = result
            if len(self._admitted) > self.settings.inbound_queue:
                self._admitted.popitem(last=False)
            return True

        return validate

    def deliver(self, msg: rpc_pb2.Message) -> None:
        """Hand an admitted message to its topic's queue (called by pubsub, same thread)."""
        admitted = self._admitted.pop(msg.from_id + msg.seqno, None)
        if admitted is None:
            return  # our own publish, or a topic we do not serve
        queue = self._queues.get(msg.topicIDs[0])  # one topic: push_msg refuses others
        if queue is None:
            return
        try:
            queue.put_nowait(admitted)
        except asyncio.QueueFull:
            self.count("inbound_overflow")

    async def messages(self, topic: str) -> AsyncIterator[object]:
        """Admitted messages of `topic`, in arrival order."""
        queue = self._queues[topic]
        while True:
            yield await queue.get()

    def count(self, what: str) -> None:
        self._counters[what] += 1

    def counters(self) -> dict[str, int]:
        """What the host refused, dropped or contained on its own (see `_counters`)."""
        return dict(self._counters)

    # ---- peers -----------------------------------------------------------------------------

    def add_peer_listener(self, listener: PeerListener) -> None:
        """Call `listener` (in asyncio context) when a peer connects or its last connection ends."""
        self._listeners.append(listener)

    async def on_connected(self, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if self._allow and peer.to_base58() not in self._allow:
            self.count("peers_refused")
            if len(self._refused_logged) < REFUSED_LOGGED and peer not in self._refused_logged:
                self._refused_logged.add(peer)
                log.warning(
                    "peer_refused",
                    peer=peer.to_base58(),
                    address=_remote_addr(conn),
                    reason="not in p2p.allow_peers",
                )
            await self._host_network().close_peer(peer)
            return
        self._emit(PeerEvent(peer.to_base58(), True, _remote_addr(conn)))

    def on_disconnected(self, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if self._host is not None and self._host_network().get_connections(peer):
            return  # another connection to this peer is still up
        self._emit(PeerEvent(peer.to_base58(), False, _remote_addr(conn)))

    def _emit(self, event: PeerEvent) -> None:
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.call_soon(listener, event)

    def _host_network(self) -> Any:
        assert self._host is not None
        return self._host.get_network()

    def connected_peers(self) -> list[str]:
        if self._host is None:
            return []
        return sorted(peer.to_base58() for peer in self._host.get_connected_peers())

    def listen_addrs(self) -> list[str]:
        """The addresses we listen on, as others dial them (with /p2p/<our id>)."""
        return list(self._bound)

    # ---- calls into libp2p -----------------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        await self._guest.call(self._publish, topic, data)

    async def _publish(self, topic: str, data: bytes) -> None:
        assert self._pubsub is not None
        await self._pubsub.publish(topic, data)

    async def flush(self, within: float) -> bool:
        """Wait (at most `within` seconds) until what we published has been written to every
        peer: before a clean stop, so the goodbye is not lost in the send queues."""
        return bool(await self._guest.call(self._flush, within))

    async def _flush(self, within: float) -> bool:
        assert self._pubsub is not None
        with trio.move_on_after(within):
            # py-libp2p's send queues have no event to await: look every 10 ms.
            while not self._pubsub.outbound_idle():  # noqa: ASYNC110
                await trio.sleep(0.01)
            return True
        return False

    async def connect(self, *addresses: str) -> str:
        """Dial a peer at any of its full multiaddrs (with /p2p/<id>); return its id."""
        infos = [info_from_p2p_addr(multiaddr.Multiaddr(address)) for address in addresses]
        peer = infos[0].peer_id
        if any(info.peer_id != peer for info in infos):
            raise ValueError("addresses of more than one peer")
        info = PeerInfo(peer, [addr for info in infos for addr in info.addrs])
        await self._guest.call(self._connect, info)
        return str(peer.to_base58())

    async def _connect(self, info: PeerInfo) -> None:
        assert self._host is not None
        # py-libp2p refuses to redial a failed peer for 60 s; our dialers own the backoff.
        self._host.get_network().unblock_peer(info.peer_id)
        await self._host.connect(info)

    async def disconnect(self, peer_id: str) -> None:
        """Close every connection to `peer_id`."""
        await self._guest.call(self._disconnect, ID.from_base58(peer_id))

    async def _disconnect(self, peer: ID) -> None:
        assert self._host is not None
        await self._host.disconnect(peer)

    async def wait_for_mesh(self, peer_id: str, topic: str) -> None:
        """Wait until `peer_id` is subscribed to `topic` and in our mesh for it.

        No time limit of its own: wrap it in `asyncio.timeout`; cancelling reaches trio.
        """
        await self._guest.call(self._wait_for_mesh, ID.from_base58(peer_id), topic)

    async def _wait_for_mesh(self, peer: ID, topic: str) -> None:
        assert self._pubsub is not None
        await self._pubsub.wait_for_subscription(peer, topic, timeout=math.inf)
        await self._pubsub.wait_for_mesh(peer, topic, timeout=math.inf)

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        """Serve `protocol`: `handler` gets each stream a peer opens (register before start)."""
        self._stream_handlers[protocol] = handler

    async def open_stream(self, peer_id: str, protocol: str) -> Stream:
        """Open a stream to a connected peer; raises StreamError if it does not speak it."""
        try:
            raw = await self._guest.call(self._new_stream, ID.from_base58(peer_id), protocol)
        except GuestStopped:
            raise
        except Exception as exc:
            raise StreamError(f"cannot open {protocol} to {peer_id}: {exc!r}") from None
        return Stream(self._guest, raw, peer_id, protocol)

    async def _new_stream(self, peer: ID, protocol: str) -> Any:
        assert self._host is not None
        return await self._host.new_stream(peer, [TProtocol(protocol)])

    def mesh_peers(self, topic: str) -> list[str]:
        if self._router is None:
            return []
        return sorted(peer.to_base58() for peer in self._router.mesh.get(topic, ()))


def _probe_port(address: multiaddr.Multiaddr) -> None:
    """Fail if another process listens on `address`.

    py-libp2p listens with SO_REUSEPORT, so a second daemon of the same user would bind the
    same port without error and the kernel would split incoming connections between the two.
    """
    port = int(address.value_for_protocol("tcp"))
    if port == 0:
        return
    protocols = {p.name for p in address.protocols()}
    family = socket.AF_INET6 if "ip6" in protocols else socket.AF_INET
    host = address.value_for_protocol("ip6" if family == socket.AF_INET6 else "ip4")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ListenError(f"cannot listen on {address}: {exc.strerror}") from None


def _reuse_addrs(host: Any) -> None:
    """py-libp2p builds our address list anew (~60 us of multiaddr parsing) for the signed
    peer record it attaches to each message it sends or forwards; build it at most once per
    ADDRS_REUSE_S, so a change of address still shows within that time."""
    build = host.get_addrs
    addrs: list[multiaddr.Multiaddr] = []
    built = -math.inf

    def get_addrs() -> list[multiaddr.Multiaddr]:
        nonlocal addrs, built
        now = time.monotonic()
        if now - built > ADDRS_REUSE_S:
            addrs, built = build(), now
        return list(addrs)

    host.get_addrs = get_addrs


def _remote_addr(conn: INetConn) -> str:
    try:
        addrs = conn.get_transport_addresses()
        return str(addrs[0]) if addrs else ""
    except Exception:  # best effort: only used in log lines
        return ""
