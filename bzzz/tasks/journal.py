"""The tasks this node holds, one file each in `<state_dir>/tasks/`, so that a restart resumes
instead of repeating: a task found in `reporting` is reported and never run again; one found
earlier in its life (claimed, prepared, running) is released, since what its cut-short run left
behind is unknown, and the cluster claims it afresh.

Each change of phase is written before anything that depends on it happens (write to a new
file, fsync, rename, fsync the directory): the result of a run is on disk before the first
GitHub write that reports it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from bzzz.durable import fsync_dir
from bzzz.tasks.claims import Claim
from bzzz.tasks.model import Phase, Task

log = structlog.get_logger(__name__)


@dataclass
class Result:
    """How a run ended, as the reporter tells it."""

    success: bool
    summary: str  # one line: "exit status 0 after 3.1 s"
    output: str  # the end of the output (redacted)
    exit_code: int | None = None
    seconds: float = 0.0
    details: str = ""  # markdown for the pull request (and the comment, without one)
    warning: str = ""  # said in the pull request and in every result comment
    close_issue: bool = True  # success without a pull request closes the issue


@dataclass
class Holding:
    """A task this node holds: its claim on GitHub and where its life has got to."""

    task: Task
    claim: Claim
    phase: Phase = Phase.CLAIMED
    takes_over: tuple[str, ...] = ()  # nonces our claim names as lapsed
    branch: str | None = None
    result: Result | None = None
    pull_url: str = ""
    reported: list[str] = field(default_factory=list)  # reporting steps done
    round: str = ""  # a review round's key ("" for the task itself)
    request: str = ""  # what the reviewer asked for, in that round

    @property
    def key(self) -> str:
        return self.task.key

    @property
    def nonce(self) -> str:
        return self.claim.nonce

    def to_record(self) -> dict[str, Any]:
        return {
            "task": self.task.to_record(),
            "claim": {
                "peer": self.claim.peer,
                "nonce": self.claim.nonce,
                "comment_id": self.claim.comment_id,
                "renewed_at": self.claim.renewed_at.isoformat(),
            },
            "phase": self.phase.value,
            "takes_over": list(self.takes_over),
            "branch": self.branch,
            "result": None if self.result is None else self.result.__dict__,
            "pull_url": self.pull_url,
            "reported": self.reported,
            "round": self.round,
            "request": self.request,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Holding:
        claim = record["claim"]
        result = record.get("result")
        return cls(
            task=Task.from_record(record["task"]),
            claim=Claim(
                claim["peer"],
                claim["nonce"],
                int(claim["comment_id"]),
                datetime.fromisoformat(claim["renewed_at"]),
            ),
            phase=Phase(record["phase"]),
            takes_over=tuple(record.get("takes_over") or ()),
            branch=record.get("branch"),
            result=Result(**result) if result else None,
            pull_url=record.get("pull_url") or "",
            reported=list(record.get("reported") or ()),
            round=record.get("round") or "",
            request=record.get("request") or "",
        )


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        repository, _, number = key.rpartition("#")
        return self.directory / f"{repository.replace('/', '__')}#{number}.json"

    def save(self, holding: Holding) -> None:
        """Durably record `holding` as it is now."""
        self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        path = self._path(holding.key)
        temporary = path.with_suffix(".tmp")
        with temporary.open("w") as handle:
            json.dump(holding.to_record(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
        fsync_dir(self.directory)

    def forget(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        if self.directory.exists():
            fsync_dir(self.directory)

    def load(self) -> list[Holding]:
        """Every task held when the node last stopped; unreadable files are set aside."""
        if not self.directory.exists():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append(Holding.from_record(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("task_journal_unreadable", path=str(path), error=str(exc))
                path.rename(path.with_suffix(".bad"))
        return found
