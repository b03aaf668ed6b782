from datetime import UTC, datetime

import pytest

from bzzz.messages import (
    COORDINATION_TOPIC,
    AvailabilityBroadcast,
    CapabilityBroadcast,
    Message,
    MessageType,
)
from bzzz.p2p import PeerEvent
from bzzz.peers import PeerTable

SELF = "12D3KooWSelf"
PEER = "12D3KooWPeer"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def message(data, msg_type, seqno: int = 0) -> Message:
    return Message(
        type=msg_type,
        sender=PEER,
        timestamp=datetime.now(UTC),
        data=data,
        topic=COORDINATION_TOPIC,
        seqno=seqno,
    )


def table(clock: Clock) -> PeerTable:
    return PeerTable(SELF, stale_after=90, forget_after=600, clock=clock, wall_clock=clock)


def test_capabilities_and_availability_fill_the_record():
    clock = Clock()
    peers = table(clock)
    peers.on_peer_event(PeerEvent(PEER, True, "/ip4/127.0.0.1/tcp/1"))
    peers.on_message(
        message(
            CapabilityBroadcast(node_id=PEER, agent_id="walnut", capabilities=["code"]),
            MessageType.CAPABILITY_BROADCAST,
        )
    )
    peers.on_message(
        message(
            AvailabilityBroadcast(node_id=PEER, status="working", current_tasks=1, max_tasks=3),
            MessageType.AVAILABILITY_BROADCAST,
        )
    )
    [row] = peers.snapshot()
    assert row["agent_id"] == "walnut"
    assert row["capabilities"] == ["code"]
    assert row["status"] == "working"
    assert row["connected"] is True
    assert row["stale"] is False


def test_silence_makes_a_peer_stale_then_a_message_makes_it_fresh():
    clock = Clock()
    peers = table(clock)
    peers.on_peer_event(PeerEvent(PEER, True))
    clock.now += 90.5
    assert peers.counts() == {"known": 1, "connected": 1, "stale": 1, "evicted": 0}
    peers.on_message(message(CapabilityBroadcast(node_id=PEER), MessageType.CAPABILITY_BROADCAST))
    assert peers.counts()["stale"] == 0


def test_gone_peers_are_forgotten_but_connected_ones_are_kept():
    clock = Clock()
    peers = table(clock)
    peers.on_peer_event(PeerEvent(PEER, True))
    clock.now += 700
    assert peers.counts()["known"] == 1, "still connected: kept, although stale"
    peers.on_peer_event(PeerEvent(PEER, False))
    assert peers.counts() == {"known": 0, "connected": 0, "stale": 0, "evicted": 0}


def test_own_connection_events_and_unknown_disconnects_are_ignored():
    peers = table(Clock())
    peers.on_peer_event(PeerEvent(SELF, True))
    peers.on_peer_event(PeerEvent(PEER, False))
    assert peers.snapshot() == []


def test_gaps_in_a_senders_sequence_numbers_count_as_missed():
    from bzzz.peers import SequenceGaps

    gaps = SequenceGaps()
    for seqno in (100, 101, 103, 104):
        gaps.add(seqno)
    assert gaps.missed == 1
    gaps.add(102)  # late, by another gossip path
    assert gaps.missed == 0
    gaps.add(10**18)  # the sender restarted: a new epoch, not a billion losses
    gaps.add(10**18 + 2)
    assert gaps.missed == 1


def test_a_goodbye_means_left_never_stale_and_a_return_clears_it():
    clock = Clock()
    peers = table(clock)
    told: list[str] = []
    peers.add_listener(lambda kind, record: told.append(kind))
    peers.on_peer_event(PeerEvent(PEER, True))
    peers.on_peer_event(PeerEvent(PEER, True))  # both sides dialled: one peer, joined once
    assert told == ["joined"]
    bye = AvailabilityBroadcast(
        node_id=PEER, status="ready", current_tasks=0, max_tasks=1, leaving=True
    )
    peers.on_message(message(bye, MessageType.AVAILABILITY_BROADCAST))
    peers.on_peer_event(PeerEvent(PEER, False))
    clock.now += 300  # silent well past stale_after: expected after a goodbye
    [row] = peers.snapshot()
    assert (row["state"], row["stale"], row["connected"]) == ("left", False, False)
    peers.on_peer_event(PeerEvent(PEER, True))  # restarted
    assert peers.snapshot()[0]["state"] == "connected"
    peers.on_peer_event(PeerEvent(PEER, False))  # a crash: no goodbye
    clock.now += 100
    assert peers.snapshot()[0]["state"] == "stale"  # silent, and it did not say why


def test_a_peer_says_how_many_peers_it_has():
    peers = table(Clock())
    peers.on_message(
        message(
            CapabilityBroadcast(node_id=PEER, agent_id="walnut", connected_peers=2),
            MessageType.CAPABILITY_BROADCAST,
        )
    )
    assert peers.snapshot()[0]["connected_peers"] == 2


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_a_goodbye_holds_whatever_order_gossip_brings_it_in(order):
    """A restarted node catches up through gossip: a peer's last words may come before the
    message it sent just before them."""
    peers = table(Clock())
    sent = [
        message(CapabilityBroadcast(node_id=PEER, agent_id="walnut"), CAP, seqno=10),
        message(
            AvailabilityBroadcast(
                node_id=PEER, status="ready", current_tasks=0, max_tasks=1, leaving=True
            ),
            MessageType.AVAILABILITY_BROADCAST,
            seqno=11,
        ),
    ]
    for i in order:
        peers.on_message(sent[i])
    assert peers.snapshot()[0]["state"] == "left"
    peers.on_message(message(CapabilityBroadcast(node_id=PEER), CAP, seqno=10**12))  # restarted
    assert peers.snapshot()[0]["state"] == "disconnected"


CAP = MessageType.CAPABILITY_BROADCAST
