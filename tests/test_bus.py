import json
from datetime import UTC, datetime

from bzzz.bus import MessageBus
from bzzz.messages import ANTENNAE_TOPIC, COORDINATION_TOPIC, Message
from bzzz.p2p import Incoming

SELF = "12D3KooWJjhQdGBSTNtqVcgfUUR2bGPCeGQAmtMn7wVdKTpC4vyG"
PEER = "12D3KooWNPLc23nn3XdBLhKnY6Ryoz2BVQQ7ZRbmx7CKw3rA7Sdx"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def incoming(data: bytes, signer: str = PEER, topic: str = COORDINATION_TOPIC) -> Incoming:
    return Incoming(topic=topic, data=data, signer=signer, seqno=1, forwarder=signer)


def capability(sender: str = PEER, **overrides) -> bytes:
    body = {
        "type": "capability_broadcast",
        "from": sender,
        "timestamp": NOW.isoformat(),
        "data": {"node_id": sender},
    }
    body.update(overrides)
    return json.dumps(body).encode()


def test_verdicts_are_counted_by_topic_and_reason():
    bus = MessageBus(SELF, max_skew=120, clock=lambda: NOW)
    assert isinstance(bus.admit(incoming(capability())), Message)
    assert bus.admit(incoming(b"{")) is None
    assert bus.admit(incoming(capability(type="future_thing"))) is None
    assert bus.admit(incoming(capability(**{"from": SELF}))) is None
    assert bus.admit(incoming(capability(), topic=ANTENNAE_TOPIC)) is None

    stats = bus.stats()
    assert stats["topics"][COORDINATION_TOPIC] == {
        "accepted": 1,
        "rejected": 2,
        "ignored": 1,
        "published": 0,
    }
    assert stats["topics"][ANTENNAE_TOPIC]["rejected"] == 1
    refused = {k: v for k, v in stats["rejected"].items() if v}
    assert refused == {"not_json": 1, "unknown_type": 1, "sender_mismatch": 1, "wrong_topic": 1}


def test_allow_list_refuses_other_signers():
    bus = MessageBus(SELF, max_skew=120, allow_peers=[SELF], clock=lambda: NOW)
    assert bus.admit(incoming(capability())) is None
    assert bus.stats()["rejected"]["not_allowed"] == 1


def test_admit_never_raises_even_on_a_decoder_bug():
    def broken_clock() -> datetime:
        raise RuntimeError("clock broke")

    bus = MessageBus(SELF, max_skew=120, clock=broken_clock)
    assert bus.admit(incoming(capability())) is None
    assert bus.stats()["rejected"]["bad_data"] == 1
