"""What this node tells the cluster about itself, and when.

A capability broadcast (who we are, what we can do) and an availability broadcast (how busy we
are) at start, every `interval` seconds, to greet each newly connected peer and when a peer
leaves (the capability broadcast carries how many peers we have: `bzzz status` on any node shows
every node's count); on the same beat the peer table is swept for stale peers and a status line
is logged. A clean stop says goodbye (`leaving`), so the others log `peer_left`, not a stale
peer a minute later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from bzzz import __version__
from bzzz.bus import MessageBus
from bzzz.config import NodeConfig
from bzzz.messages import (
    COORDINATION_TOPIC,
    MAX_CAPABILITIES,
    AvailabilityBroadcast,
    AvailabilityStatus,
    CapabilityBroadcast,
    LogHead,
    clip,
    line,
)
from bzzz.p2p import GuestStopped, Host, PeerEvent
from bzzz.peers import PeerTable

log = structlog.get_logger(__name__)

# How long a greeting waits for a new peer to join our gossip mesh before publishing anyway.
GREETING_MESH_TIMEOUT = 5.0
# Peers that leave at once (a switch rebooting) make one announcement, not one each.
RECOUNT_DELAY = 1.0
FAREWELL_TIMEOUT = 2.0

Load = Callable[[], tuple[int, int]]
"""Returns (current tasks, max tasks)."""


class Presence:
    def __init__(
        self,
        node: NodeConfig,
        agent_id: str,
        interval: float,
        bus: MessageBus,
        host: Host,
        peers: PeerTable,
        load: Load,
        network_id: str,
        log_head: Callable[[], LogHead | None],
        polls_github: Callable[[], bool] = lambda: False,
        models: Callable[[], list[str]] | None = None,
        problem: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._models = models or (lambda: list(node.models))
        self._problem = problem
        self._node = node
        self.agent_id = agent_id
        self._interval = interval
        self._bus = bus
        self._host = host
        self._peers = peers
        self._load = load
        self._network_id = network_id
        self._log_head = log_head
        self._polls_github = polls_github
        self._greet: asyncio.Queue[str] = asyncio.Queue()
        self._recount = asyncio.Event()
        self.broadcasts_sent = 0

    def capability(self) -> CapabilityBroadcast:
        problem = self._problem()
        return CapabilityBroadcast(
            node_id=self._bus.own_id,
            agent_id=self.agent_id,
            capabilities=list(self._node.capabilities),
            models=[line(m, 256) for m in self._models()[:MAX_CAPABILITIES]],
            works=problem is None,
            problem=clip(problem or "", 1024),
            version=__version__,
            specialization=self._node.specialization,
            network_id=self._network_id,
            log_head=self._log_head(),
            polls_github=self._polls_github(),
            connected_peers=self._peers.counts()["connected"],
        )

    def availability(self, poller: bool = False, leaving: bool = False) -> AvailabilityBroadcast:
        current, maximum = self._load()
        status: AvailabilityStatus = (
            "ready" if current == 0 else "busy" if current >= maximum else "working"
        )
        return AvailabilityBroadcast(
            node_id=self._bus.own_id,
            status=status,
            current_tasks=current,
            max_tasks=maximum,
            available_for_work=current < maximum and not leaving,
            poller=poller,
            leaving=leaving,
        )

    def on_peer_event(self, event: PeerEvent) -> None:
        if event.connected:
            self._greet.put_nowait(event.peer_id)
        else:
            self._recount.set()

    async def farewell(self) -> None:
        """Tell the cluster we stop on purpose (best effort: a stop must not wait on it)."""
        try:
            async with asyncio.timeout(FAREWELL_TIMEOUT):
                await self._bus.publish(self.availability(leaving=True))
                await self._host.flush(FAREWELL_TIMEOUT)  # out of the send queues before we go
        except (TimeoutError, GuestStopped):
            return
        except Exception:  # a stop goes on whatever the goodbye does
            log.exception("farewell_failed")
            return
        self.broadcasts_sent += 1

    async def poller_heartbeat(self) -> None:
        """After each poll of GitHub: tells the others that the cluster's poller is alive."""
        with contextlib.suppress(GuestStopped):
            await self._bus.publish(self.availability(poller=True))

    async def announce(self) -> None:
        try:
            await self._bus.publish(self.capability())
            await self._bus.publish(self.availability())
        except GuestStopped:
            return
        self.broadcasts_sent += 2

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._beat())
            group.create_task(self._announce_recounts())
            while True:
                peer_id = await self._greet.get()
                group.create_task(self._greet_peer(peer_id))

    async def _beat(self) -> None:
        while True:
            await self.announce()
            counts = self._peers.counts()
            log.info(
                "cluster_status",
                peers=counts["connected"],
                known=counts["known"],
                stale=counts["stale"],
                mesh=len(self._host.mesh_peers(COORDINATION_TOPIC)),
            )
            await asyncio.sleep(self._interval)

    async def _announce_recounts(self) -> None:
        """After peers leave, the others learn our new count without waiting for a beat."""
        while True:
            await self._recount.wait()
            await asyncio.sleep(RECOUNT_DELAY)
            self._recount.clear()
            with contextlib.suppress(GuestStopped):
                await self._bus.publish(self.capability())
                self.broadcasts_sent += 1

    async def _greet_peer(self, peer_id: str) -> None:
        """Announce ourselves once the new peer can hear it, so it need not wait a whole beat."""
        try:
            await self._greet_when_meshed(peer_id)
        except Exception:  # one greeting failing must not stop the beat
            log.exception("greeting_failed", peer=peer_id)

    async def _greet_when_meshed(self, peer_id: str) -> None:
        try:
            async with asyncio.timeout(GREETING_MESH_TIMEOUT):
                await self._host.wait_for_mesh(peer_id, COORDINATION_TOPIC)
        except TimeoutError:
            pass  # a big cluster may never mesh us directly: gossip still carries it
        except GuestStopped:
            return
        await self.announce()
