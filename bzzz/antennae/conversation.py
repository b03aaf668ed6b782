"""One conversation per task: the state every node derives from the same Antennae messages,
whatever order gossip delivered them in.

A `plan_proposal` opens it; a revision answers the proposal it revises (`in_reply_to`), so its
round is one more. `objection`s and `collaboration`s answer a proposal by id. A message that
answers one not seen yet waits until it arrives (`pending`), so that an objection that overtook
its proposal is neither lost nor misplaced. The state is then a function of the set of messages,
not of their order:

- the current proposal is the one of the highest round (ties: the highest message id);
- an objector's objection is open unless that objector accepted a proposal of a later round
  (an accept of the very round it objected to does not close it: objection wins a tie);
- the conversation reached consensus when its proposer declared it for the current proposal,
  and is escalated when its proposer escalated at the current round (a human's decision is a
  consensus with `resolution = "human"`; a new proposal after an escalation re-opens it).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from bzzz.messages import (
    AntennaeData,
    Collaboration,
    Consensus,
    Escalation,
    Message,
    Objection,
    PlanProposal,
)

HISTORY = 64  # messages kept per conversation for `bzzz discuss`
SEEN = 512  # message ids remembered per conversation (duplicates come within seconds)
PENDING = 128  # replies held per conversation until what they answer arrives


@dataclass
class Proposal:
    message_id: str
    by: str
    round: int
    plan: str
    steps: list[str]
    expected_changes: list[str]
    needed_capabilities: list[str]
    helpers: list[str]


@dataclass
class OpenObjection:
    message_id: str
    by: str
    reason: str
    proposal_id: str
    round: int


@dataclass
class Conversation:
    key: str  # "owner/repo#n"
    proposals: dict[str, Proposal] = field(default_factory=dict)
    objections: dict[str, OpenObjection] = field(default_factory=dict)  # latest per objector
    accepted: dict[str, int] = field(default_factory=dict)  # peer -> highest round accepted
    helpers: dict[str, tuple[str, str]] = field(default_factory=dict)  # peer -> (msg id, text)
    consensus: dict[str, str] = field(default_factory=dict)  # proposal id -> resolution
    escalated: dict[int, str] = field(default_factory=dict)  # round -> reason
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    pending: OrderedDict[str, Message[AntennaeData]] = field(default_factory=OrderedDict)
    history: list[dict[str, Any]] = field(default_factory=list)
    received: int = 0  # messages taken in, duplicates excluded

    # ---- what the messages say -------------------------------------------------------------

    @property
    def proposal(self) -> Proposal | None:
        if not self.proposals:
            return None
        return max(self.proposals.values(), key=lambda p: (p.round, p.message_id))

    @property
    def proposer(self) -> str:
        current = self.proposal
        return current.by if current else ""

    @property
    def rounds(self) -> int:
        current = self.proposal
        return current.round if current else 0

    @property
    def state(self) -> str:
        current = self.proposal
        if current is not None and current.message_id in self.consensus:
            return "consensus"
        if self.escalated and max(self.escalated) >= self.rounds:
            return "escalated"
        return "open"

    @property
    def decision(self) -> str:
        current = self.proposal
        if current is not None and current.message_id in self.consensus:
            return self.consensus[current.message_id] or current.message_id
        if self.state == "escalated":
            return self.escalated[max(self.escalated)]
        return ""

    @property
    def accepts(self) -> dict[str, int]:
        """Peers that accepted the current proposal."""
        return {peer: r for peer, r in self.accepted.items() if r >= self.rounds > 0}

    def open_objections(self) -> list[OpenObjection]:
        return sorted(
            (o for o in self.objections.values() if self.accepted.get(o.by, -1) <= o.round),
            key=lambda o: o.message_id,
        )

    # ---- taking messages in ----------------------------------------------------------------

    def apply(self, msg: Message[AntennaeData]) -> list[tuple[Message[AntennaeData], str]]:
        """Take one message in; return what it (and the replies it released) changed, each
        with its kind of change ("proposal", "objection", ...); [] for a duplicate, a message
        held until what it answers arrives, or one that changes nothing."""
        message_id = msg.data.message_id or _derived_id(msg)
        if message_id in self.seen or message_id in self.pending:
            return []
        parent = self._answers(msg)
        if parent and parent not in self.seen:
            self.pending[message_id] = msg
            if len(self.pending) > PENDING:
                self.pending.popitem(last=False)
            return []
        changes = self._take(msg, message_id)
        # Replies that waited for this message, and for those replies, in turn.
        released = [(mid, m) for mid, m in self.pending.items() if self._answers(m) in self.seen]
        while released:
            for mid, waiting in released:
                del self.pending[mid]
                changes += self._take(waiting, mid)
            released = [
                (mid, m) for mid, m in self.pending.items() if self._answers(m) in self.seen
            ]
        return changes

    @staticmethod
    def _answers(msg: Message[AntennaeData]) -> str:
        """The message this one answers, if it must be seen first."""
        if isinstance(msg.data, Consensus):
            return msg.data.proposal_id or msg.data.in_reply_to
        return msg.data.in_reply_to

    def _take(self, msg: Message[AntennaeData], message_id: str) -> list[tuple[Message[Any], str]]:
        self.seen[message_id] = None
        if len(self.seen) > SEEN:
            self.seen.popitem(last=False)
        self.received += 1
        change = self._apply(msg, message_id)
        if change is None:
            return []
        self.history.append(
            {
                "id": message_id,
                "from": msg.sender,
                "type": msg.type.value,
                "change": change,
                "at": msg.timestamp.isoformat(),
                "text": _text(msg)[:200],
                "in_reply_to": msg.data.in_reply_to,
            }
        )
        del self.history[:-HISTORY]
        return [(msg, change)]

    def _round_of(self, message_id: str) -> int:
        replied = self.proposals.get(message_id)
        return replied.round if replied else 0

    def _apply(self, msg: Message[AntennaeData], message_id: str) -> str | None:
        data = msg.data
        if isinstance(data, PlanProposal):
            previous = self.proposals.get(data.in_reply_to)
            self.proposals[message_id] = Proposal(
                message_id,
                msg.sender,
                previous.round + 1 if previous else 1,
                data.plan,
                list(data.steps),
                list(data.expected_changes),
                list(data.needed_capabilities),
                list(data.helpers),
            )
            return "proposal"
        if isinstance(data, Consensus):
            replied = self.proposals.get(data.proposal_id or data.in_reply_to)
            if replied is None or replied.by != msg.sender:
                return None  # only a proposal's author declares it agreed
            self.consensus[replied.message_id] = data.resolution
            return "consensus"
        if isinstance(data, Escalation):
            replied = self.proposals.get(data.in_reply_to)
            if replied is not None and replied.by != msg.sender:
                return None
            self.escalated[replied.round if replied else 0] = data.reason
            return "escalation"
        if isinstance(data, Objection):
            replied = self.proposals.get(data.in_reply_to)
            if replied is not None and replied.by == msg.sender:
                return None  # objecting to one's own plan means nothing
            objection = OpenObjection(
                message_id,
                msg.sender,
                data.reason,
                data.in_reply_to,
                self._round_of(data.in_reply_to),
            )
            current = self.objections.get(msg.sender)
            if current is None or (objection.round, message_id) > (
                current.round,
                current.message_id,
            ):
                self.objections[msg.sender] = objection
            return "objection"
        if isinstance(data, Collaboration):
            if data.kind == "accept":
                round_ = self._round_of(data.in_reply_to)
                closes = (
                    msg.sender in self.objections and round_ > self.objections[msg.sender].round
                )
                self.accepted[msg.sender] = max(self.accepted.get(msg.sender, 0), round_)
                return "objection_closed" if closes else "accept"
            if data.kind in ("offer", "subtask_taken", "subtask"):
                peer = data.to if data.kind == "subtask" else msg.sender
                if peer:
                    known = self.helpers.get(peer)
                    if known is None or message_id < known[0]:
                        self.helpers[peer] = (message_id, data.text)
                return "subtask" if data.kind == "subtask" else "helper"
            return "review"
        return None

    def summary(self) -> dict[str, Any]:
        current = self.proposal
        return {
            "task": self.key,
            "state": self.state,
            "proposer": self.proposer,
            "rounds": self.rounds,
            "plan": current.plan if current else "",
            "open_objections": [{"by": o.by, "reason": o.reason} for o in self.open_objections()],
            "accepted_by": sorted(self.accepts),
            "helpers": {peer: text for peer, (_, text) in sorted(self.helpers.items())},
            "decision": self.decision,
            "messages": self.received,
            "waiting": len(self.pending),
        }


def _derived_id(msg: Message[Any]) -> str:
    """An id for a message that carries none (the Go Bzzz sends none): the same on every node,
    and short enough to be answered (`in_reply_to` is at most 64 characters)."""
    return hashlib.sha256(f"{msg.sender}:{msg.seqno}".encode()).hexdigest()[:32]


def _text(msg: Message[Any]) -> str:
    data = msg.data
    for name in ("plan", "reason", "text", "proposal_id"):
        value = getattr(data, name, "")
        if value:
            return str(value)
    return ""
