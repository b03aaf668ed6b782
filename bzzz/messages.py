"""The wire format: the JSON envelope of every pubsub message and the data of each type.

Compatible with the Go Bzzz: `{"type", "from", "timestamp", "data", "hop_count"}`. `decode` is
the one door from bytes to typed messages: it returns a `Message` or a `Rejection` naming why,
and never raises on anything a peer can send.

Every field is bounded here, at the door: strings by length and by the characters they may hold
(no control, zero-width or bidi characters; identifiers without whitespace), lists by size,
numbers by range (finite; non-negative where a count). What passes can be logged, stored, shown
and recorded without further checks; what does not is a counted rejection (`too_large`,
`bad_value`), never an exception later. Our own messages are built with `clip` where their text
comes from elsewhere (GitHub, a model), so that they pass every peer's door.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from typing_extensions import TypeVar

COORDINATION_TOPIC = "bzzz/coordination/v1"
ANTENNAE_TOPIC = "antennae/meta-discussion/v1"
TOPICS = (COORDINATION_TOPIC, ANTENNAE_TOPIC)

MAX_MESSAGE_BYTES = 64 * 1024
MAX_HOP_COUNT = 3

# Characters no field may hold: C0 and C1 controls (tab and newline only in free text), and the
# zero-width and bidi controls that disguise text in terminals, logs and GitHub comments.
HIDDEN = "\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
_TEXT = f"^[^{HIDDEN}]*$"  # free text, several lines
_LINE = f"^[^\t\n{HIDDEN}]*$"  # one line: a title, a label, a name
_TOKEN = f"^[^\\s{HIDDEN}]*$"  # an identifier: printable, no whitespace

PeerId = Annotated[str, StringConstraints(max_length=128, pattern=_TOKEN)]
Token = Annotated[str, StringConstraints(max_length=64, pattern=_TOKEN)]  # nonces, ids, kinds
Url = Annotated[str, StringConstraints(max_length=2048, pattern=_TOKEN)]
ConversationKey = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=_TOKEN)]
# GitHub spells owners and names in ASCII letters, digits, "-", "_" and ".".
Repository = Annotated[
    str, StringConstraints(max_length=201, pattern=r"^([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)?$")
]
Name = Annotated[str, StringConstraints(max_length=64, pattern=_LINE)]  # agents, statuses
LongName = Annotated[str, StringConstraints(max_length=256, pattern=_LINE)]  # models, paths
Label = Annotated[str, StringConstraints(max_length=100, pattern=_LINE)]
Title = Annotated[str, StringConstraints(max_length=512, pattern=_LINE)]
Note = Annotated[str, StringConstraints(max_length=1024, pattern=_TEXT)]
Remark = Annotated[str, StringConstraints(max_length=2048, pattern=_TEXT)]
Step = Annotated[str, StringConstraints(max_length=512, pattern=_TEXT)]
Essay = Annotated[str, StringConstraints(max_length=4096, pattern=_TEXT)]
IssueNumber = Annotated[int, Field(ge=1, le=2**31 - 1)]
Count = Annotated[int, Field(ge=0, le=10_000)]
Priority = Annotated[int, Field(ge=-1000, le=1000)]
Seconds = Annotated[float, Field(ge=0, le=10**7, allow_inf_nan=False)]
Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{64})?$")]
Signature = Annotated[str, StringConstraints(max_length=128, pattern=r"^[A-Za-z0-9+/=]*$")]

# Sizes of lists, and what each holds.
MAX_CAPABILITIES = 32
MAX_LABELS = 100
MAX_STEPS = 50
MAX_CHANGES = 100
MAX_HELPERS = 16


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with a mark where it was cut, and hidden characters
    removed: for our own messages, whose text may come from GitHub or a model."""
    clean = text.translate(_HIDDEN_TABLE)
    if len(clean) <= limit:
        return clean
    mark = " […]"
    return clean[: max(0, limit - len(mark))] + mark


def line(text: str, limit: int) -> str:
    """`text` as a one-line field takes it: tabs and newlines become spaces, then `clip`."""
    return clip(text.replace("\t", " ").replace("\n", " ").replace("\r", " "), limit)


def token(text: str, limit: int = 64) -> str:
    """`text` as an identifier field takes it: whitespace runs become "-", then `clip`."""
    return clip("-".join(text.split()), limit)


_HIDDEN_TABLE = {
    code: None
    for low, high in (
        (0x00, 0x08),
        (0x0B, 0x1F),
        (0x7F, 0x9F),
        (0x200B, 0x200F),
        (0x2028, 0x202E),
        (0x2060, 0x2069),
        (0xFEFF, 0xFEFF),
    )
    for code in range(low, high + 1)
}


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

    OVERSIZED = "oversized"  # the whole message is over MAX_MESSAGE_BYTES
    BAD_FRAME = "bad_frame"  # a gossipsub frame no honest node sends (several topics)
    NOT_JSON = "not_json"
    BAD_ENVELOPE = "bad_envelope"
    UNKNOWN_TYPE = "unknown_type"
    WRONG_TOPIC = "wrong_topic"
    SENDER_MISMATCH = "sender_mismatch"
    CLOCK_SKEW = "clock_skew"
    HOP_LIMIT = "hop_limit"
    BAD_DATA = "bad_data"  # a field missing or of the wrong type
    TOO_LARGE = "too_large"  # a string or a list over its bound
    BAD_VALUE = "bad_value"  # a number out of range, a forbidden character, a bad combination
    NOT_ALLOWED = "not_allowed"  # the signer is not in allow_peers
    NOT_AUTHORISED = "not_authorised"  # the sender may not say this (not the task's holder...)
    BAD_SIGNATURE = "bad_signature"


class Data(BaseModel):
    """Base of every message's `data`. Fields added by newer peers are kept, not refused (the
    whole message is bounded by MAX_MESSAGE_BYTES; nothing of ours reads them)."""

    model_config = ConfigDict(extra="allow", frozen=True)


# ---- coordination ---------------------------------------------------------------------------


class LogHead(Data):
    """The newest entry of the sender's audit log; `sig` (base64) is that entry's signature,
    which covers `hash`, so the claim stands on its own as evidence."""

    seq: Seq
    hash: Sha256Hex
    sig: Signature = ""


class CapabilityBroadcast(Data):
    node_id: LongName  # the Go Bzzz sends "<peer.ID 12*aXHoUh>"
    agent_id: Name = ""
    capabilities: Annotated[list[Token], Field(max_length=MAX_CAPABILITIES)] = []
    models: Annotated[list[LongName], Field(max_length=MAX_CAPABILITIES)] = []
    version: Name = ""
    specialization: LongName = ""
    network_id: Token = ""
    log_head: LogHead | None = None
    polls_github: bool = False  # has a token and repositories: may be the cluster's poller
    works: bool = True  # can do a task's work now (see `problem`)
    problem: Note = ""  # why it cannot (no command, no model, no sandbox)
    connected_peers: Count | None = None  # as the sender counts them (None: an older node)


AvailabilityStatus = Literal["ready", "working", "busy"]


class AvailabilityBroadcast(Data):
    node_id: LongName
    status: AvailabilityStatus
    current_tasks: Count
    max_tasks: Count
    available_for_work: bool = True
    poller: bool = False  # sent by the cluster's poller after each poll: its heartbeat
    leaving: bool = False  # the sender stops cleanly: its silence from now on is expected

    @model_validator(mode="after")
    def _within_capacity(self) -> AvailabilityBroadcast:
        if self.current_tasks > self.max_tasks:
            raise ValueError("current_tasks is over max_tasks")
        return self


class TaskData(Data):
    """Common to task messages: the issue they are about."""

    repository: Repository = ""
    task_id: IssueNumber


class TaskAnnouncement(TaskData):
    title: Title = ""
    labels: Annotated[list[Label], Field(max_length=MAX_LABELS)] = []
    priority: Priority = 0
    task_type: Label = ""
    url: Url = ""
    takeover: bool = False  # held by an agent whose lease lapsed
    review: Token = ""  # a review round asked for on its pull request (see tasks.review)


class TaskClaim(TaskData):
    """An intent: the sender would take the task (the winner among intents goes on)."""

    agent_id: Name = ""
    nonce: Token = ""


class TaskProgress(TaskData):
    """The holder's lease renewal: "claimed", "running"."""

    agent_id: Name = ""
    status: Name = ""
    message: Note = ""
    nonce: Token = ""


class TaskComplete(TaskData):
    agent_id: Name = ""
    success: bool = True
    summary: Essay = ""
    nonce: Token = ""
    url: Url = ""  # the result: the issue, or the pull request


class TaskHelpRequest(TaskData):
    agent_id: Name = ""
    missing: Annotated[list[Token], Field(max_length=MAX_CAPABILITIES)] = []
    reason: Note = ""


class TaskHelpResponse(TaskData):
    agent_id: Name = ""
    can_help: bool = False
    capabilities: Annotated[list[Token], Field(max_length=MAX_CAPABILITIES)] = []
    eta_seconds: Seconds | None = None


# ---- antennae -------------------------------------------------------------------------------


class AntennaeData(Data):
    """Common to Antennae messages: the conversation (`owner/repo#n`) and the thread."""

    conversation: ConversationKey
    message_id: Token = ""
    in_reply_to: Token = ""


class PlanProposal(AntennaeData):
    plan: Essay = ""
    steps: Annotated[list[Step], Field(max_length=MAX_STEPS)] = []
    expected_changes: Annotated[list[LongName], Field(max_length=MAX_CHANGES)] = []
    needed_capabilities: Annotated[list[Token], Field(max_length=MAX_CAPABILITIES)] = []
    helpers: Annotated[list[PeerId], Field(max_length=MAX_HELPERS)] = []  # took a sub-task


class Objection(AntennaeData):
    reason: Remark
    counter_proposal: Essay = ""


class Collaboration(AntennaeData):
    """kind: "accept" (a plan, closing the sender's objection), "review", "offer", "subtask"
    (given to `to`), "subtask_taken"."""

    kind: Token = "offer"
    text: Remark = ""
    to: PeerId = ""


class Escalation(AntennaeData):
    reason: Remark


class Consensus(AntennaeData):
    proposal_id: Token = ""
    resolution: LongName = ""  # "human" when people decided an escalation


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


def type_for(kind: type[Data]) -> MessageType:
    """The message type whose data is `kind` (TaskClaim -> task_claim)."""
    return _TYPE_OF_MODEL[kind]


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Annotated[str, StringConstraints(max_length=64)]
    sender: PeerId = Field(alias="from")
    timestamp: AwareDatetime
    data: dict[str, Any]
    hop_count: int = Field(default=0, ge=0)


D = TypeVar("D", bound=Data, default=Data, covariant=True)


@dataclass(frozen=True)
class Message(Generic[D]):
    """A message that passed the door: its type, sender (= its signer) and typed data
    (`Message[TaskClaim]` carries a `TaskClaim`)."""

    type: MessageType
    sender: str
    timestamp: datetime
    data: D
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


_TOO_LARGE = frozenset({"string_too_long", "too_long"})
_MALFORMED = frozenset({"missing", "model_type", "model_attributes_type", "dict_type"})


def _data_rejection(exc: ValidationError) -> Rejection:
    """Which rule the data broke: a bound (too_large), a type (bad_data), or a value."""
    err = exc.errors(include_url=False, include_input=False)[0]
    kind = err["type"]
    location = ".".join(str(part) for part in err["loc"]) or "data"
    detail = f"{location}: {err['msg']}"[:200]
    if kind in _TOO_LARGE:
        return Rejection(Reason.TOO_LARGE, detail)
    if kind in _MALFORMED or kind.endswith(("_type", "_parsing")):
        return Rejection(Reason.BAD_DATA, detail)
    return Rejection(Reason.BAD_VALUE, detail)


def _envelope_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    location = ".".join(str(part) for part in err["loc"]) or "message"
    return f"{location}: {err['msg']}"[:200]


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
            return Rejection(Reason.NOT_JSON, _envelope_error(exc))
        return Rejection(Reason.BAD_ENVELOPE, _envelope_error(exc))
    try:
        msg_type = MessageType(envelope.type)
    except ValueError:
        return Rejection(Reason.UNKNOWN_TYPE, envelope.type.encode("unicode_escape").decode())
    kind = KINDS[msg_type]
    if kind.topic != topic:
        return Rejection(Reason.WRONG_TOPIC, f"{msg_type} on {topic}")
    if envelope.sender != signer:
        return Rejection(Reason.SENDER_MISMATCH, f"from={envelope.sender!r} signer={signer}")
    skew = abs((now - envelope.timestamp).total_seconds())
    if skew > max_skew:
        return Rejection(Reason.CLOCK_SKEW, f"{skew:.0f} s")
    # Every automatic answer adds one hop, on either topic: more than 3 is a loop.
    if envelope.hop_count > MAX_HOP_COUNT:
        return Rejection(Reason.HOP_LIMIT, str(min(envelope.hop_count, 10**6)))
    try:
        data = kind.model.model_validate(envelope.data)
    except ValidationError as exc:
        return _data_rejection(exc)
    return Message(
        type=msg_type,
        sender=envelope.sender,
        timestamp=envelope.timestamp,
        data=data,
        topic=topic,
        hop_count=envelope.hop_count,
    )
