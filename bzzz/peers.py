"""The peer table: who is connected, what they can do, when we last heard from them.

Fed by connection events from the host and by every admitted message; read by status, metrics
and task matching. A peer not heard from for `stale_after` seconds is stale; one that is also
disconnected is forgotten after `forget_after` seconds. A peer that said goodbye (a clean stop)
has left: its silence is expected, so it is never stale, and is forgotten the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog

from bzzz.messages import AvailabilityBroadcast, CapabilityBroadcast, Message
from bzzz.p2p import PeerEvent

log = structlog.get_logger(__name__)


# A sender's sequence numbers grow by one per message; a jump larger than this is a restart
# (numbers start at the clock in nanoseconds), not lost messages.
EPOCH_JUMP = 1_000_000


@dataclass
class SequenceGaps:
    """Messages of one sender that never arrived, from the gaps in its sequence numbers.

    Out-of-order arrival (two gossip paths) shows as a gap only until the late message lands.
    """

    first: int = 0
    last: int = 0
    count: int = 0
    missed_before: int = 0  # gaps of earlier epochs (before the sender restarted)

    def add(self, seqno: int) -> None:
        if self.count == 0 or seqno > self.last + EPOCH_JUMP or seqno < self.first - EPOCH_JUMP:
            self.missed_before += self.missed_current
            self.first = self.last = seqno
            self.count = 1
            return
        self.first = min(self.first, seqno)
        self.last = max(self.last, seqno)
        self.count += 1

    @property
    def missed_current(self) -> int:
        return max(0, self.last - self.first + 1 - self.count) if self.count else 0

    @property
    def missed(self) -> int:
        return self.missed_before + self.missed_current


class PeerState(StrEnum):
    CONNECTED = "connected"
    LEFT = "left"  # said goodbye: stopped on purpose
    DISCONNECTED = "disconnected"
    STALE = "stale"  # silent for longer than stale_after, without a goodbye


@dataclass
class PeerRecord:
    peer_id: str
    agent_id: str = ""
    capabilities: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    version: str = ""
    specialization: str = ""
    status: str = "unknown"
    current_tasks: int = 0
    max_tasks: int = 0
    connected: bool = False
    connected_at: float = 0.0  # monotonic: when the current connection came up
    address: str = ""
    last_seen: float = 0.0  # wall clock, for display
    last_heard: float = 0.0  # monotonic, for staleness
    stale: bool = False
    left: bool = False  # said goodbye; cleared when it connects or speaks again
    left_seqno: int = 0  # the goodbye's: an older message arriving late does not undo it
    ever_connected: bool = False  # a direct link in our lifetime (else heard through others)
    connected_peers: int | None = None  # how many peers it has, as it last said
    announced: bool = False  # sent a capability broadcast: a bzzz node, expected to beat
    polls_github: bool = False  # may be the cluster's poller
    works: bool = True  # can do a task's work (its last capability broadcast)
    problem: str = ""  # why it cannot
    received: int = 0  # messages from this peer
    sequence: SequenceGaps = field(default_factory=SequenceGaps)

    @property
    def state(self) -> PeerState:
        if self.left:
            return PeerState.LEFT
        if self.stale:
            return PeerState.STALE
        return PeerState.CONNECTED if self.connected else PeerState.DISCONNECTED


class PeerTable:
    def __init__(
        self,
        own_id: str,
        stale_after: float,
        forget_after: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        max_peers: int = 256,
    ) -> None:
        self._own_id = own_id
        self.stale_after = stale_after
        self.forget_after = forget_after
        self.max_peers = max_peers
        self.evicted = 0  # rows dropped to stay within max_peers
        self._clock = clock
        self._wall = wall_clock
        self._peers: dict[str, PeerRecord] = {}
        self._listeners: list[Callable[[str, PeerRecord], None]] = []

    def add_listener(self, listener: Callable[[str, PeerRecord], None]) -> None:
        """Call `listener(kind, record)` when a peer is "joined", "left", or announces changed
        "capabilities"."""
        self._listeners.append(listener)

    def _tell(self, kind: str, record: PeerRecord) -> None:
        for listener in self._listeners:
            listener(kind, record)

    def _heard(self, peer_id: str) -> PeerRecord:
        record = self._peers.get(peer_id)
        if record is None:
            if len(self._peers) >= self.max_peers:
                self._evict()
            record = self._peers[peer_id] = PeerRecord(peer_id)
        record.last_heard = self._clock()
        record.last_seen = self._wall()
        if record.stale:
            record.stale = False
            log.info("peer_fresh", peer=peer_id, agent=record.agent_id)
        return record

    def _evict(self) -> None:
        """Make room: forget the disconnected peer heard from least recently. Any signer of a
        message gets a row, so without this 2,000 identities are 2,000 rows for good."""
        idle = [r for r in self._peers.values() if not r.connected]
        if not idle:
            return  # every row is a live connection: over the limit until one ends
        victim = min(idle, key=lambda r: r.last_heard)
        del self._peers[victim.peer_id]
        self.evicted += 1
        if self.evicted % 100 == 1:
            log.info("peer_table_full", limit=self.max_peers, evicted=self.evicted)

    def connected_for(self, peer_id: str) -> float:
        """Seconds `peer_id` has been connected (0 when it is not)."""
        record = self._peers.get(peer_id)
        if record is None or not record.connected:
            return 0.0
        return self._clock() - record.connected_at

    def on_peer_event(self, event: PeerEvent) -> None:
        if event.peer_id == self._own_id:
            return
        if event.connected:
            record = self._heard(event.peer_id)
            if record.connected:
                return  # a second connection (both sides dialled): the same peer, joined once
            record.connected_at = self._clock()
            record.connected = record.ever_connected = True
            record.left = False
            record.address = event.address
            log.info("peer_connected", peer=event.peer_id, address=event.address)
            self._tell("joined", record)
        else:
            known = self._peers.get(event.peer_id)
            if known is None:
                return
            known.connected = False
            if not known.left:  # after a goodbye, `peer_left` said it all
                log.info("peer_disconnected", peer=event.peer_id, agent=known.agent_id)
            self._tell("left", known)

    def on_message(self, msg: Message) -> None:
        record = self._heard(msg.sender)
        record.received += 1
        record.sequence.add(msg.seqno)
        if record.left and msg.seqno > record.left_seqno:
            record.left = False  # back (a restart numbers its messages higher: the clock)
        data = msg.data
        if isinstance(data, CapabilityBroadcast):
            record.announced = True
            record.polls_github = data.polls_github
            changed = (
                record.agent_id,
                record.capabilities,
                record.models,
                record.specialization,
                record.version,
                record.problem,
            ) != (
                data.agent_id,
                data.capabilities,
                data.models,
                data.specialization,
                data.version,
                data.problem,
            )
            record.works, record.problem = data.works, data.problem
            record.agent_id = data.agent_id
            record.capabilities = list(data.capabilities)
            record.models = list(data.models)
            record.version = data.version
            record.specialization = data.specialization
            record.connected_peers = data.connected_peers
            if changed:
                self._tell("capabilities", record)
                log.info(
                    "peer_capabilities",
                    peer=msg.sender,
                    agent=data.agent_id,
                    capabilities=",".join(data.capabilities),
                    models=",".join(data.models),
                    version=data.version,
                    problem=data.problem or None,
                )
        elif isinstance(data, AvailabilityBroadcast):
            record.status = data.status
            record.current_tasks = data.current_tasks
            record.max_tasks = data.max_tasks
            if data.leaving and msg.seqno >= record.left_seqno:
                record.left, record.left_seqno = True, msg.seqno
                log.info("peer_left", peer=msg.sender, agent=record.agent_id)

    def sweep(self) -> None:
        """Mark peers stale and forget long-gone ones; log each transition once."""
        now = self._clock()
        for peer_id, record in list(self._peers.items()):
            silent = now - record.last_heard
            if not record.stale and not record.left and silent > self.stale_after:
                record.stale = True
                # Worth a warning when a bzzz node we were linked to went silent; a peer only
                # heard through others (gossip a restarted node catches up on), or one that never
                # announced itself (not a bzzz node, or gone before it could), is not news.
                news = record.ever_connected and record.announced
                (log.warning if news else log.info)(
                    "peer_stale", peer=peer_id, agent=record.agent_id, silent_s=round(silent)
                )
            gone = record.stale or record.left
            if gone and not record.connected and silent > self.forget_after:
                del self._peers[peer_id]
                log.info("peer_forgotten", peer=peer_id, agent=record.agent_id)

    def get(self, peer_id: str) -> PeerRecord | None:
        return self._peers.get(peer_id)

    def unresponsive(self) -> list[str]:
        """Connected bzzz peers that stopped beating: their link is dead (a partition TCP
        has not noticed). Peers that never announced themselves cannot be judged by silence."""
        return [r.peer_id for r in self.records() if r.connected and r.stale and r.announced]

    def records(self) -> list[PeerRecord]:
        self.sweep()
        return sorted(self._peers.values(), key=lambda r: r.peer_id)

    def counts(self) -> dict[str, int]:
        records = self.records()
        return {
            "known": len(records),
            "connected": sum(r.connected for r in records),
            "stale": sum(r.stale for r in records),
            "evicted": self.evicted,
        }

    def snapshot(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The table as plain data for `bzzz status` and `bzzz peers`; with `limit`, the
        connected peers first, then those heard from most recently."""
        now = self._clock()
        records = self.records()
        if limit is not None and len(records) > limit:
            chosen = sorted(records, key=lambda r: (not r.connected, now - r.last_heard))
            records = sorted(chosen[:limit], key=lambda r: r.peer_id)
        return [
            {
                "peer_id": r.peer_id,
                "agent_id": r.agent_id,
                "capabilities": r.capabilities,
                "models": r.models,
                "version": r.version,
                "specialization": r.specialization,
                "status": r.status,
                "works": r.works,
                "problem": r.problem,
                "current_tasks": r.current_tasks,
                "max_tasks": r.max_tasks,
                "connected": r.connected,
                "state": r.state.value,
                "connected_peers": r.connected_peers,
                "address": r.address,
                "last_seen": datetime.fromtimestamp(r.last_seen, UTC).isoformat(),
                "last_seen_s": round(now - r.last_heard, 1),
                "stale": r.stale,
                "received": r.received,
                "missed": r.sequence.missed,
            }
            for r in records
        ]
