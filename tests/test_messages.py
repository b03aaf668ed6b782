import json
from datetime import UTC, datetime, timedelta

import pytest

from bzzz import messages
from bzzz.messages import (
    ANTENNAE_TOPIC,
    COORDINATION_TOPIC,
    CapabilityBroadcast,
    Message,
    MessageType,
    Objection,
    Reason,
    Rejection,
)

PEER = "12D3KooWJjhQdGBSTNtqVcgfUUR2bGPCeGQAmtMn7wVdKTpC4vyG"
OTHER = "12D3KooWNPLc23nn3XdBLhKnY6Ryoz2BVQQ7ZRbmx7CKw3rA7Sdx"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def decode(raw: bytes, topic: str = COORDINATION_TOPIC, signer: str = PEER, now=NOW):
    return messages.decode(raw, topic=topic, signer=signer, now=now, max_skew=120)


def envelope(**overrides) -> bytes:
    body = {
        "type": "capability_broadcast",
        "from": PEER,
        "timestamp": NOW.isoformat(),
        "data": {"node_id": PEER, "capabilities": ["general"]},
    }
    body.update(overrides)
    return json.dumps(body).encode()


def test_a_message_exactly_as_the_go_bzzz_sends_it():
    raw = (
        b'{"type":"capability_broadcast","from":"' + PEER.encode() + b'",'
        b'"timestamp":"2025-07-12T01:23:45.123456789+10:00",'
        b'"data":{"node_id":"<peer.ID 12*aXHoUh>","capabilities":["task-coordination",'
        b'"meta-discussion","ollama-reasoning"],"models":["phi3","llama3.1"],"version":"0.1.0"}}'
    )
    sent_at = datetime(2025, 7, 11, 15, 23, 45, tzinfo=UTC)
    result = decode(raw, now=sent_at)
    assert isinstance(result, Message)
    assert result.type is MessageType.CAPABILITY_BROADCAST
    assert result.sender == PEER
    assert result.hop_count == 0
    assert isinstance(result.data, CapabilityBroadcast)
    assert result.data.models == ["phi3", "llama3.1"]
    assert result.data.capabilities[0] == "task-coordination"


def test_round_trip_of_every_type():
    samples = [
        messages.TaskAnnouncement(repository="o/r", task_id=7, title="t", labels=["bzzz-task"]),
        messages.TaskClaim(repository="o/r", task_id=7, agent_id="a"),
        messages.TaskProgress(repository="o/r", task_id=7, status="working"),
        messages.TaskComplete(repository="o/r", task_id=7, success=False, summary="no"),
        messages.CapabilityBroadcast(node_id=PEER, agent_id="walnut", models=["m"]),
        messages.AvailabilityBroadcast(node_id=PEER, status="busy", current_tasks=3, max_tasks=3),
        messages.TaskHelpRequest(repository="o/r", task_id=7, missing=["rust"]),
        messages.TaskHelpResponse(repository="o/r", task_id=7, can_help=True, eta_seconds=60),
        messages.PlanProposal(conversation="o/r#7", plan="do it", steps=["a", "b"]),
        messages.Objection(conversation="o/r#7", reason="too broad", in_reply_to="m1"),
        messages.Collaboration(conversation="o/r#7", kind="review"),
        messages.Escalation(conversation="o/r#7", reason="stuck"),
        messages.Consensus(conversation="o/r#7", proposal_id="m1"),
    ]
    assert {messages.type_of(s) for s in samples} == set(MessageType)
    for data in samples:
        raw = messages.encode(data, sender=PEER, now=NOW, hop_count=1)
        topic = messages.topic_of(messages.type_of(data))
        result = decode(raw, topic=topic)
        assert isinstance(result, Message), result
        assert result.data == data
        assert result.timestamp == NOW
        assert result.hop_count == 1


def test_fields_from_newer_peers_are_kept():
    result = decode(envelope(data={"node_id": PEER, "gpu": "a100"}, extra_field=1))
    assert isinstance(result, Message)
    assert result.data.model_extra == {"gpu": "a100"}


@pytest.mark.parametrize(
    ("raw", "topic", "reason"),
    [
        (b"x" * (64 * 1024 + 1), COORDINATION_TOPIC, Reason.OVERSIZED),
        (b"not json", COORDINATION_TOPIC, Reason.NOT_JSON),
        (b"\xff\xfe{}", COORDINATION_TOPIC, Reason.NOT_JSON),
        (b"[1, 2]", COORDINATION_TOPIC, Reason.BAD_ENVELOPE),
        (envelope(timestamp="yesterday"), COORDINATION_TOPIC, Reason.BAD_ENVELOPE),
        (envelope(timestamp="2026-11-24T12:00:00"), COORDINATION_TOPIC, Reason.BAD_ENVELOPE),
        (envelope(data=None), COORDINATION_TOPIC, Reason.BAD_ENVELOPE),
        (envelope(type="hologram_broadcast"), COORDINATION_TOPIC, Reason.UNKNOWN_TYPE),
        (envelope(), ANTENNAE_TOPIC, Reason.WRONG_TOPIC),
        (envelope(**{"from": OTHER}), COORDINATION_TOPIC, Reason.SENDER_MISMATCH),
        (
            envelope(timestamp=(NOW - timedelta(seconds=121)).isoformat()),
            COORDINATION_TOPIC,
            Reason.CLOCK_SKEW,
        ),
        (
            envelope(timestamp=(NOW + timedelta(seconds=121)).isoformat()),
            COORDINATION_TOPIC,
            Reason.CLOCK_SKEW,
        ),
        (envelope(data={"capabilities": []}), COORDINATION_TOPIC, Reason.BAD_DATA),
        (envelope(data={"node_id": PEER, "models": "phi3"}), COORDINATION_TOPIC, Reason.BAD_DATA),
        (
            envelope(type="objection", data={"conversation": "o/r#1", "reason": "x"}, hop_count=4),
            ANTENNAE_TOPIC,
            Reason.HOP_LIMIT,
        ),
        (
            envelope(type="objection", data={"conversation": "o/r#1", "reason": "x"}, hop_count=-1),
            ANTENNAE_TOPIC,
            Reason.BAD_ENVELOPE,
        ),
        (envelope(type="objection", data={"reason": "x"}), ANTENNAE_TOPIC, Reason.BAD_DATA),
    ],
)
def test_each_rule_of_the_door_refuses_with_its_reason(raw, topic, reason):
    result = decode(raw, topic=topic)
    assert isinstance(result, Rejection)
    assert result.reason is reason


def test_hop_count_three_is_still_accepted_on_both_topics_and_four_is_not():
    objection = envelope(type="objection", data={"conversation": "o/r#1", "reason": "x"})
    body = json.loads(objection)
    body["hop_count"] = 3
    result = decode(json.dumps(body).encode(), topic=ANTENNAE_TOPIC)
    assert isinstance(result, Message) and isinstance(result.data, Objection)
    assert isinstance(decode(envelope(hop_count=3)), Message)
    refused = decode(envelope(hop_count=9))
    assert isinstance(refused, Rejection) and refused.reason is Reason.HOP_LIMIT


def test_the_size_limit_is_inclusive():
    padding = "x" * (64 * 1024)
    # A field a newer peer added: only the size of the whole message bounds it.
    raw = envelope(data={"node_id": PEER, "padding": padding})
    trimmed = raw.replace(b"x" * (len(raw) - 64 * 1024), b"", 1)
    assert len(trimmed) == 64 * 1024
    assert isinstance(decode(trimmed), Message)


# ---- properties of the door, over generated messages ----------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests import strategies  # noqa: E402


@settings(max_examples=400, deadline=None)
@given(strategies.valid_messages())
def test_every_message_within_its_bounds_is_admitted_and_round_trips(generated):
    msg_type, data = generated
    topic = messages.topic_of(msg_type)
    raw = strategies.envelope(msg_type, data, PEER)
    result = messages.decode(raw, topic=topic, signer=PEER, now=datetime.now(UTC), max_skew=120)
    assert isinstance(result, Message), result
    assert result.type is msg_type
    again = messages.encode(result.data, sender=PEER)
    assert isinstance(
        messages.decode(again, topic=topic, signer=PEER, now=datetime.now(UTC), max_skew=120),
        Message,
    )


@settings(max_examples=400, deadline=None)
@given(strategies.broken_messages())
def test_a_field_outside_its_bounds_is_refused_with_its_reason(generated):
    msg_type, data, reason = generated
    raw = strategies.envelope(msg_type, data, PEER)
    result = messages.decode(
        raw, topic=messages.topic_of(msg_type), signer=PEER, now=datetime.now(UTC), max_skew=120
    )
    assert isinstance(result, Rejection), (data, result)
    assert result.reason in (reason, Reason.OVERSIZED), (data, result)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_garbage_is_refused_and_never_raises(data):
    raw = data.draw(strategies.garbage(PEER))
    topic = data.draw(st.sampled_from([COORDINATION_TOPIC, ANTENNAE_TOPIC]))
    result = messages.decode(raw, topic=topic, signer=PEER, now=datetime.now(UTC), max_skew=120)
    assert isinstance(result, Message | Rejection)


def test_clip_makes_any_text_fit_a_field():
    long = "\u202eevil\x1b[31m" + "x" * 5000
    clipped = messages.clip(long, 2048)
    assert len(clipped) <= 2048 and clipped.endswith("[…]")
    assert "\u202e" not in clipped and "\x1b" not in clipped
    objection = messages.Objection(conversation="o/r#1", reason=clipped)
    raw = messages.encode(objection, sender=PEER, now=NOW)
    assert isinstance(decode(raw, topic=ANTENNAE_TOPIC), Message)
