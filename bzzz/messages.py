"""The wire format: the JSON envelope of every pubsub message and the data of each type.

Compatible with the Go Bzzz: `{"type", "from", "timestamp", "data", "hop_count"}`. `decode` is
the one door from bytes to typed messages: it returns a `Message` or a `Rejection` naming why,
and never raises on anything a peer can send.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

COORDINATION_TOPIC = "bzzz/coordination/v1"
ANTENNAE_TOPIC = "antennae/meta-discussion/v1"
TOPICS = (COORDINATION_TOPIC, ANTENNAE_TOPIC)

MAX_MESSAGE_BYTES = 64 * 1024
MAX_HOP_COUNT = 3


class MessageType(StrEnum):
    TASK_ANNOUNCEMENT = "task_announcement"
    TASK_CLAIM = "task_claim"
    TASK_PROGRESS = "task_progress"
    TASK_COMPLETE = "task_complete"
    CAPABILITY_BROADCAST = "capability_broadcast"
    AVAILABILITY_BROADCAST = "availability_broadcast"
    TASK_HELP_REQUEST = "task_help_request"
    TASK_HELP_RESPONSE = "task_help_response"
    PLAN_PROPOSAL = "plan_proposal"
    OBJECTION = "objection"
    COLLABORATION = "collaboration"
    ESCALATION = "escalation"
    CONSENSUS = "consensus"


class Reason(StrEnum):
    """Why a message was refused; the counters and the metrics use these names."""

    OVERSIZED = "oversized"
    NOT_JSON = "not_json"
    BAD_ENVELOPE = "bad_envelope"
    UNKNOWN_TYPE = "unknown_type"
    WRONG_TOPIC = "wrong_topic"
    SENDER_MISMATCH = "sender_mismatch"
    CLOCK_SKEW = "clock_skew"
    HOP_LIMIT = "hop_limit"
    BAD_DATA = "bad_data"
    NOT_ALLOWED = "not_allowed"
    BAD_SIGNATURE = "bad_signature"


class Data(BaseModel):
    """Base of every message's `data`. Fields added by newer peers are kept, not refused."""

    model_config = ConfigDict(extra="allow", frozen=True)


# ---- coordination ---------------------------------------------------------------------------


class LogHead(Data):
    """The newest entry of the sender's audit log; `sig` (base64) is that entry's signature,
    which covers `hash`, so the claim stands on its own as evidence."""

    seq: int = Field(ge=0)
    hash: str
    sig: str = ""


class CapabilityBroadcast(Data):
    node_id: str
    agent_id: str = ""
    capabilities: list[str] = []
    models: list[str] = []
    version: str = ""
    specialization: str = ""
    network_id: str = ""
    log_head: LogHead | None = None
    polls_github: bool = False  # has a token and repositories: may be the cluster's poller


AvailabilityStatus = Literal["ready", "working", "busy"]


class AvailabilityBroadcast(Data):
    node_id: str
    status: AvailabilityStatus
    current_tasks: int = Field(ge=0)
    max_tasks: int = Field(ge=0)
    available_for_work: bool = True
    poller: bool = False  # sent by the cluster's poller after each poll: its heartbeat


class TaskData(Data):
    """Common to task messages: the issue they are about."""

    repository: str = ""
    task_id: int


class TaskAnnouncement(TaskData):
    title: str = ""
    labels: list[str] = []
    priority: int = 0
    task_type: str = ""
    url: str = ""
    takeover: bool = False  # held by an agent whose lease lapsed


class TaskClaim(TaskData):
    """An intent: the sender would take the task (the winner among intents goes on)."""

    agent_id: str = ""
    nonce: str = ""


class TaskProgress(TaskData):
    """The holder's lease renewal: "claimed", "running"."""

    agent_id: str = ""
    status: str = ""
    message: str = ""
    nonce: str = ""


class TaskComplete(TaskData):
    agent_id: str = ""
    success: bool = True
    summary: str = ""
    nonce: str = ""
    url: str = ""  # the result: the issue, or the pull request


class TaskHelpRequest(TaskData):
    agent_id: str = ""
    missing: list[str] = []
    reason: str = ""


class TaskHelpResponse(TaskData):
    agent_id: str = ""
    can_help: bool = False
    capabilities: list[str] = []
    eta_seconds: float | None = None


# ---- antennae -------------------------------------------------------------------------------


class AntennaeData(Data):
    """Common to Antennae messages: the conversation (`owner/repo#n`) and the thread."""

    conversation: str = Field(min_length=1)
    message_id: str = ""
    in_reply_to: str = ""


class PlanProposal(AntennaeData):
    plan: str = ""
    steps: list[str] = []
    expected_changes: list[str] = []
    needed_capabilities: list[str] = []
    helpers: list[str] = []  # peers that took on a sub-task


class Objection(AntennaeData):
    reason: str
    counter_proposal: str = ""


class Collaboration(AntennaeData):
    """kind: "accept" (a plan, closing the sender's objection), "review", "offer", "subtask"
    (given to `to`), "subtask_taken"."""

    kind: str = "offer"
    text: str = ""
    to: str = ""


class Escalation(AntennaeData):
    reason: str


class Consensus(AntennaeData):
    proposal_id: str = ""
    resolution: str = ""  # "human" when people decided an escalation


@dataclass(frozen=True)
class _Kind:
    model: type[Data]
    topic: str


KINDS: dict[MessageType, _Kind] = {
    MessageType.TASK_ANNOUNCEMENT: _Kind(TaskAnnouncement, COORDINATION_TOPIC),
    MessageType.TASK_CLAIM: _Kind(TaskClaim, COORDINATION_TOPIC),
    MessageType.TASK_PROGRESS: _Kind(TaskProgress, COORDINATION_TOPIC),
    MessageType.TASK_COMPLETE: _Kind(TaskComplete, COORDINATION_TOPIC),
    MessageType.CAPABILITY_BROADCAST: _Kind(CapabilityBroadcast, COORDINATION_TOPIC),
    MessageType.AVAILABILITY_BROADCAST: _Kind(AvailabilityBroadcast, COORDINATION_TOPIC),
    MessageType.TASK_HELP_REQUEST: _Kind(TaskHelpRequest, COORDINATION_TOPIC),
    MessageType.TASK_HELP_RESPONSE: _Kind(TaskHelpResponse, COORDINATION_TOPIC),
    MessageType.PLAN_PROPOSAL: _Kind(PlanProposal, ANTENNAE_TOPIC),
    MessageType.OBJECTION: _Kind(Objection, ANTENNAE_TOPIC),
    MessageType.COLLABORATION: _Kind(Collaboration, ANTENNAE_TOPIC),
    MessageType.ESCALATION: _Kind(Escalation, ANTENNAE_TOPIC),
    MessageType.CONSENSUS: _Kind(Consensus, ANTENNAE_TOPIC),
}
_TYPE_OF_MODEL = {kind.model: msg_type for msg_type, kind in KINDS.items()}


def topic_of(msg_type: MessageType) -> str:
    return KINDS[msg_type].topic


def type_of(data: Data) -> MessageType:
    return _TYPE_OF_MODEL[type(data)]


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    sender: str = Field(alias="from")
    timestamp: AwareDatetime
    data: dict[str, Any]
    hop_count: int = Field(default=0, ge=0)


@dataclass(frozen=True)
class Message:
    """A message that passed the door: its type, sender (= its signer) and typed data."""

    type: MessageType
    sender: str
    timestamp: datetime
    data: Data
    topic: str
    hop_count: int = 0
    seqno: int = 0  # the gossipsub sequence number (per sender), set by the bus


@dataclass(frozen=True)
class Rejection:
    reason: Reason
    detail: str = ""


def encode(data: Data, *, sender: str, now: datetime | None = None, hop_count: int = 0) -> bytes:
    """The wire bytes of a message carrying `data`, as sent by `sender`."""
    envelope = {
        "type": type_of(data).value,
        "from": sender,
        "timestamp": (now or datetime.now(UTC)).isoformat(),
        "data": data.model_dump(mode="json"),
        "hop_count": hop_count,
    }
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    location = ".".join(str(part) for part in err["loc"]) or "message"
    return f"{location}: {err['msg']}"


def decode(
    raw: bytes,
    *,
    topic: str,
    signer: str,
    now: datetime,
    max_skew: float,
) -> Message | Rejection:
    """Check one pubsub payload against every rule of the wire format."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return Rejection(Reason.OVERSIZED, f"{len(raw)} bytes")
    try:
        envelope = _Envelope.model_validate_json(raw)
    except ValidationError as exc:
        if any(err["type"] in ("json_invalid", "json_type") for err in exc.errors()):
            return Rejection(Reason.NOT_JSON, _first_error(exc))
        return Rejection(Reason.BAD_ENVELOPE, _first_error(exc))
    try:
        msg_type = MessageType(envelope.type)
    except ValueError:
        return Rejection(Reason.UNKNOWN_TYPE, envelope.type[:64])
    kind = KINDS[msg_type]
    if kind.topic != topic:
        return Rejection(Reason.WRONG_TOPIC, f"{msg_type} on {topic}")
    if envelope.sender != signer:
        return Rejection(Reason.SENDER_MISMATCH, f"from={envelope.sender[:64]} signer={signer}")
    skew = abs((now - envelope.timestamp).total_seconds())
    if skew > max_skew:
        return Rejection(Reason.CLOCK_SKEW, f"{skew:.0f} s")
    if topic == ANTENNAE_TOPIC and envelope.hop_count > MAX_HOP_COUNT:
        return Rejection(Reason.HOP_LIMIT, str(envelope.hop_count))
    try:
        data = kind.model.model_validate(envelope.data)
    except ValidationError as exc:
        return Rejection(Reason.BAD_DATA, _first_error(exc))
    return Message(
        type=msg_type,
        sender=envelope.sender,
        timestamp=envelope.timestamp,
        data=data,
        topic=topic,
        hop_count=envelope.hop_count,
    )
