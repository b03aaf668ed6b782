"""One conversation per task: the state every node derives from the same Antennae messages.

A `plan_proposal` opens it (and each revision starts a new round); `objection`s and
`collaboration`s answer a message by id (`in_reply_to`). An objector closes its objection by
accepting a later proposal (`collaboration` of kind `accept`); an objection still open blocks
consensus. `consensus` and `escalation` are the proposer's decisions. Applying the same messages
gives the same state on every node, whatever order gossip delivered them in, except that a
message answering one not seen yet waits until it is (`pending`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from bzzz.messages import (
    Collaboration,
    Consensus,
    Escalation,
    Message,
    Objection,
    PlanProposal,
)

HISTORY = 64  # messages kept per conversation for `bzzz discuss`
SEEN = 512  # message ids remembered per conversation (duplicates come within seconds)


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


@dataclass
class Conversation:
    key: str  # "owner/repo#n"
    proposer: str = ""
    proposal: Proposal | None = None
    rounds: int = 0
    state: str = "open"  # open, consensus, escalated
    objections: dict[str, OpenObjection] = field(default_factory=dict)  # by objector
    accepts: dict[str, str] = field(default_factory=dict)  # peer -> proposal accepted
    helpers: dict[str, str] = field(default_factory=dict)  # peer -> what it took on
    decision: str = ""
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    received: int = 0  # messages taken in, duplicates excluded
    history: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, msg: Message) -> str | None:
        """Take one message in; return what it changed ("proposal", "objection", "accept",
        "consensus", ...) or None if it changed nothing (a duplicate, or after a decision)."""
        data = msg.data
        message_id = getattr(data, "message_id", "") or _derived_id(msg)
        if message_id in self.seen:
            return None
        self.seen[message_id] = None
        if len(self.seen) > SEEN:
            self.seen.popitem(last=False)
        self.received += 1
        change = self._apply(msg, message_id)
        if change is not None:
            self.history.append(
                {
                    "id": message_id,
                    "from": msg.sender,
                    "type": msg.type.value,
                    "change": change,
                    "at": msg.timestamp.isoformat(),
                    "text": _text(msg)[:200],
                    "in_reply_to": getattr(data, "in_reply_to", ""),
                }
            )
            del self.history[:-HISTORY]
        return change

    def _apply(self, msg: Message, message_id: str) -> str | None:
        data = msg.data
        if isinstance(data, PlanProposal):
            if self.state != "open" and self.proposer and msg.sender != self.proposer:
                return None
            self.proposer = msg.sender
            self.rounds += 1
            self.proposal = Proposal(
                message_id,
                msg.sender,
                self.rounds,
                data.plan,
                list(data.steps),
                list(data.expected_changes),
                list(data.needed_capabilities),
                list(getattr(data, "helpers", []) or []),
            )
            self.accepts.clear()
            if self.state == "escalated":
                self.state = "open"  # a human answered; the agents try again
            return "proposal"
        if isinstance(data, Consensus):
            if msg.sender != self.proposer or self.state == "consensus":
                return None
            self.state, self.decision = "consensus", data.resolution or data.proposal_id
            return "consensus"
        if self.state != "open" and not isinstance(data, Collaboration):
            return None
        if isinstance(data, Objection):
            if self.proposal is None or msg.sender == self.proposer:
                return None
            self.objections[msg.sender] = OpenObjection(
                message_id, msg.sender, data.reason, data.in_reply_to or self.proposal.message_id
            )
            self.accepts.pop(msg.sender, None)
            return "objection"
        if isinstance(data, Collaboration):
            if data.kind == "accept" and self.proposal is not None:
                self.accepts[msg.sender] = self.proposal.message_id
                closed = self.objections.pop(msg.sender, None)
                return "objection_closed" if closed else "accept"
            if data.kind in ("offer", "subtask_taken"):
                self.helpers[msg.sender] = data.text
                return "helper"
            if data.kind == "subtask" and data.to:
                self.helpers.setdefault(data.to, data.text)
                return "subtask"
            return "review"
        if isinstance(data, Escalation):
            self.state, self.decision = "escalated", data.reason
            return "escalation"
        return None

    def open_objections(self) -> list[OpenObjection]:
        return sorted(self.objections.values(), key=lambda o: o.message_id)

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.key,
            "state": self.state,
            "proposer": self.proposer,
            "rounds": self.rounds,
            "plan": self.proposal.plan if self.proposal else "",
            "open_objections": [{"by": o.by, "reason": o.reason} for o in self.open_objections()],
            "accepted_by": sorted(self.accepts),
            "helpers": self.helpers,
            "decision": self.decision,
            "messages": self.received,
        }


def _derived_id(msg: Message) -> str:
    """An id for a message that carries none (the Go Bzzz sends none): the same on every node,
    and short enough to be answered (`in_reply_to` is at most 64 characters)."""
    return hashlib.sha256(f"{msg.sender}:{msg.seqno}".encode()).hexdigest()[:32]


def _text(msg: Message) -> str:
    data = msg.data
    for name in ("plan", "reason", "text", "proposal_id"):
        value = getattr(data, name, "")
        if value:
            return str(value)
    return ""
