"""A task: a GitHub issue labelled as one, as the seed's agents read it.

Labels carry the task's shape: `priority-N` (higher first) and `type-X`, matched against an
agent's capabilities (`general` takes every type, and a task without a type is `general`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


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

    @property
    def key(self) -> str:
        return f"{self.repository}#{self.number}"

    @property
    def priority(self) -> int:
        for label in self.labels:
            if label.startswith("priority-") and label[9:].lstrip("-").isdigit():
                return int(label[9:])
        return 0

    @property
    def type(self) -> str:
        for label in self.labels:
            if label.startswith("type-") and len(label) > 5:
                return label[5:]
        return "general"

    def suits(self, capabilities: Iterable[str]) -> bool:
        """The seed's rule: a type matches a capability of that name, or `general`."""
        capabilities = set(capabilities)
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
        )

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
