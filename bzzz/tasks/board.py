"""The task board: what this node knows of the cluster's tasks, from GitHub and from the mesh.

Who holds what (and in which phase, as holders' progress messages tell), what is finished; and
the authority rule that goes with it: only a task's holder reports on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bzzz.bus import MessageBus
from bzzz.lru import Lru
from bzzz.messages import Message, TaskAnnouncement, TaskComplete, TaskProgress
from bzzz.tasks.model import Phase, Task

# Tasks remembered from GitHub and the mesh (any peer can name any task).
MAX_KNOWN = 1000


@dataclass
class Known:
    """What this node knows of a task."""

    task: Task
    phase: Phase = Phase.ANNOUNCED
    holder: str = ""
    heard: float = 0.0  # monotonic: the holder's last sign of life on the mesh


class TaskBoard:
    def __init__(
        self,
        bus: MessageBus,
        own_id: str,
        repositories: Sequence[str],
        lease: float,
        in_use: Callable[[str], bool],
    ) -> None:
        self._own = own_id
        self._repositories = set(repositories)
        self._lease = lease
        self._mine: dict[str, Phase] = {}  # tasks held here, by the worker's phase
        self.known: Lru[str, Known] = Lru(MAX_KNOWN, lambda key: key in self._mine or in_use(key))
        bus.guard(TaskProgress, self._may_report)
        bus.guard(TaskComplete, self._may_report)
        bus.on(TaskProgress, self._on_progress)
        bus.on(TaskComplete, self._on_complete)

    def serves(self, repository: str) -> bool:
        """Tasks of this repository are followed (a node without repositories follows all)."""
        return not self._repositories or repository in self._repositories

    def entry(self, task: Task) -> Known | None:
        """The entry for `task`, made if new (and if we follow its repository)."""
        if not self.serves(task.repository):
            return None
        return self.known.touch(task.key, lambda: Known(task))

    def _entry(self, repository: str, number: int, title: str = "") -> Known | None:
        return self.entry(Task(repository, number, title, "", (), "open", (), "", ""))

    # ---- our own tasks ---------------------------------------------------------------------

    def mine(self, task: Task, phase: Phase) -> None:
        """A task held here moved to `phase` (None of the held phases: it is ours no more)."""
        known = self.entry(task)
        if phase.held:
            self._mine[task.key] = phase
        else:
            self._mine.pop(task.key, None)
        if known is not None:
            known.task = task
            known.phase = Phase.COMPLETED if phase is Phase.DONE else phase
            known.holder = self._own if phase.held or phase is Phase.DONE else ""
            known.heard = time.monotonic()

    def held_here(self) -> dict[str, Phase]:
        return dict(self._mine)

    # ---- who holds what --------------------------------------------------------------------

    def holder_of(self, key: str) -> str:
        """The agent holding `key` as far as this node knows (us, or one heard within the
        lease), or ""."""
        if key in self._mine:
            return self._own
        known = self.known.get(key)
        if known is None or not known.phase.held or not known.holder:
            return ""
        return known.holder if time.monotonic() - known.heard < self._lease else ""

    def finished_elsewhere(self, key: str) -> bool:
        known = self.known.get(key)
        return known is not None and known.phase is Phase.COMPLETED

    def _may_report(self, msg: Message[TaskProgress | TaskComplete]) -> str | None:
        """Authority: only a task's holder sends its progress and its completion. A peer whose
        holder went silent for a whole lease may report (it took over)."""
        key = f"{msg.data.repository}#{msg.data.task_id}"
        holder = self.holder_of(key)
        if holder and holder != msg.sender:
            return f"{key} is held by {holder}"
        return None

    def on_announcement(self, msg: Message[TaskAnnouncement]) -> Task | None:
        """Record an announced task; return it if we follow its repository."""
        data = msg.data
        known = self._entry(data.repository, data.task_id, data.title)
        if known is None:
            return None
        known.task = Task(
            data.repository,
            data.task_id,
            data.title,
            "",
            tuple(data.labels),
            "open",
            (),
            data.url,
            "",
        )
        return known.task

    def _on_progress(self, msg: Message[TaskProgress]) -> None:
        known = self._entry(msg.data.repository, msg.data.task_id)
        if known is None:
            return
        try:
            phase = Phase(msg.data.status)
        except ValueError:
            phase = Phase.HELD  # "deliberating", or a newer peer's word
        known.holder, known.heard = msg.sender, time.monotonic()
        known.phase = phase if phase.held else Phase.ANNOUNCED
        if not phase.held:
            known.holder = ""  # released or lost: free again

    def _on_complete(self, msg: Message[TaskComplete]) -> None:
        known = self._entry(msg.data.repository, msg.data.task_id)
        if known is not None:
            known.holder = msg.sender
            known.phase = Phase.COMPLETED if msg.data.success else Phase.FAILED

    # ---- what the node tells ---------------------------------------------------------------

    def status(self, agent_of: Callable[[str], str]) -> list[dict[str, Any]]:
        now = time.monotonic()
        rows = []
        for key, known in sorted(self.known.items()):
            rows.append(
                {
                    "task": key,
                    "title": known.task.title,
                    "phase": self._mine.get(key, known.phase).value,
                    "holder": known.holder,
                    "holder_agent": agent_of(known.holder) if known.holder else "",
                    "held_here": key in self._mine,
                    "heard_s": round(now - known.heard, 1) if known.heard else None,
                    "lease_s": self._lease,
                    "url": known.task.url,
                }
            )
        return rows
