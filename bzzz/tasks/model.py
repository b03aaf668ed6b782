"""A task: a GitHub issue labelled as one, as the seed's agents read it.

Labels carry the task's shape: `priority-N` (higher first) and `type-X`, matched against an
agent's capabilities (`general` takes every type, and a task without a type is `general`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    """Where a task is in its life, on the holder's side:

    announced -> intent -> claimed -> prepared -> running -> reporting -> done,
    with released (given back), failed (an attempt that failed, reported) and lost (our claim
    lapsed or another stands) as the other ends. Other nodes' tasks show as `held` until their
    holder tells which phase (progress messages carry it), and `completed` once reported.
    """

    ANNOUNCED = "announced"
    INTENT = "intent"
    CLAIMED = "claimed"
    PREPARED = "prepared"
    RUNNING = "running"
    REPORTING = "reporting"
    DONE = "done"
    RELEASED = "released"
    FAILED = "failed"
    LOST = "lost"
    HELD = "held"  # by another agent, phase not told
    COMPLETED = "completed"  # labelled completed on GitHub, or announced done on the mesh

    @property
    def working(self) -> bool:
        """A holder in these phases may still be stopped (its work is not finished)."""
        return self in (Phase.CLAIMED, Phase.PREPARED, Phase.RUNNING)

    @property
    def held(self) -> bool:
        return self in (Phase.CLAIMED, Phase.PREPARED, Phase.RUNNING, Phase.REPORTING, Phase.HELD)


@dataclass(frozen=True)
class Guidance:
    """What deliberation settled before the work: the agreed plan, and humans' answers."""

    plan: str = ""
    answers: tuple[str, ...] = ()


class Outcome(StrEnum):
    """How an attempt ended, as its marker comment says."""

    SUCCESS = "success"
    FAILURE = "failure"
    RELEASED = "released"


@dataclass(frozen=True)
class Task:
    repository: str  # "owner/name"
    number: int
    title: str
    body: str
    labels: tuple[str, ...]
    state: str  # "open" | "closed"
    assignees: tuple[str, ...]
    url: str  # the issue's web page
    api_url: str
    author: str = ""  # who opened it
    association: str = "NONE"  # GitHub's author_association of the author
    locked: bool = False
    updated_at: str = ""  # as GitHub stamped it: any change to the issue changes it

    @property
    def key(self) -> str:
        return f"{self.repository}#{self.number}"

    @property
    def priority(self) -> int:
        for label in self.labels:
            if label.startswith("priority-") and label[9:].lstrip("-").isdigit():
                return max(-1000, min(1000, int(label[9:])))  # the wire's range
        return 0

    @property
    def type(self) -> str:
        for label in self.labels:
            if label.startswith("type-") and len(label) > 5:
                return label[5:]
        return "general"

    @property
    def model(self) -> str:
        """The model a `model-<name>` label asks for, or ""."""
        for label in self.labels:
            if label.startswith("model-") and len(label) > 6:
                return label[6:]
        return ""

    def suits(self, capabilities: Iterable[str], models: Iterable[str] = ()) -> bool:
        """The seed's rule: a type matches a capability of that name, or `general`; and a
        `model-<name>` label goes only to agents that work with that model."""
        capabilities = set(capabilities)
        if self.model and self.model not in set(models):
            return False
        return "general" in capabilities or self.type in capabilities

    @classmethod
    def from_issue(cls, repository: str, issue: Mapping[str, Any]) -> Task:
        """From GitHub's JSON for an issue (REST `issues` shape)."""
        return cls(
            repository=repository,
            number=int(issue["number"]),
            title=str(issue.get("title") or ""),
            body=str(issue.get("body") or ""),
            labels=tuple(str(label["name"]) for label in issue.get("labels") or ()),
            state=str(issue.get("state") or "open"),
            assignees=tuple(str(user["login"]) for user in issue.get("assignees") or ()),
            url=str(issue.get("html_url") or ""),
            api_url=str(issue.get("url") or ""),
            author=str((issue.get("user") or {}).get("login") or ""),
            association=str(issue.get("author_association") or "NONE"),
            locked=bool(issue.get("locked")),
            updated_at=str(issue.get("updated_at") or ""),
        )

    def to_record(self) -> dict[str, Any]:
        """Everything, for the journal (see `from_record`)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Task:
        fields = dict(record)
        fields["labels"] = tuple(fields.get("labels") or ())
        fields["assignees"] = tuple(fields.get("assignees") or ())
        return cls(**fields)

    def as_json(self) -> dict[str, Any]:
        """What an executor gets on stdin."""
        return {
            "repository": self.repository,
            "number": self.number,
            "title": self.title,
            "body": self.body,
            "labels": list(self.labels),
            "priority": self.priority,
            "type": self.type,
            "url": self.url,
        }


def split_key(key: str) -> tuple[str, int]:
    repository, _, number = key.rpartition("#")
    return repository, int(number)
