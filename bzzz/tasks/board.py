"""The task board: what this node knows of the cluster's tasks, from GitHub and from the mesh.

Who holds what (and in which phase, as holders' progress messages tell), what is finished; and
the authority rule that goes with it: only a task's holder reports on it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from bzzz.bus import MessageBus
from bzzz.lru import Lru
from bzzz.messages import Message, TaskAnnouncement, TaskComplete, TaskProgress
from bzzz.tasks.model import Phase, Task

# Tasks remembered from GitHub and the mesh (any peer can name any task).
MAX_KNOWN = 1000
TIMELINE = 16  # phase changes kept per task

# The five stages an operator follows a task through, from the holder's finer phases: an intent
# is still an announced task (nobody holds it yet), `prepared` and another agent's `held` are
# claimed (held, work not started or not told), our `done` and a reported `completed` are done.
# Released, failed and lost are the other ends and show as themselves.
STAGES: dict[Phase, str] = {
    Phase.ANNOUNCED: "announced",
    Phase.INTENT: "announced",
    Phase.CLAIMED: "claimed",
    Phase.PREPARED: "claimed",
    Phase.HELD: "claimed",
    Phase.RUNNING: "running",
    Phase.REPORTING: "reporting",
    Phase.DONE: "done",
    Phase.COMPLETED: "done",
    Phase.RELEASED: "released",
    Phase.FAILED: "failed",
    Phase.LOST: "lost",
}


class Known:
    """What this node knows of a task. Setting `phase` to a new value appends (phase, wall
    time, holder) to a short timeline and tells the board's listener: O(1), whoever sets it.
    Set `holder` before `phase`, so that the entry names the new holder."""

    def __init__(self, task: Task, changed: Callable[[Known], None] | None = None) -> None:
        self.task = task
        self.holder = ""
        self.heard = 0.0  # monotonic: the holder's last sign of life on the mesh
        self.result_url = ""  # the result its holder reported: a pull request, or the issue
        self.timeline: deque[tuple[Phase, float, str]] = deque(maxlen=TIMELINE)
        self._changed = changed
        self._phase = Phase.ANNOUNCED
        self._moved()

    @property
    def phase(self) -> Phase:
        return self._phase

    @phase.setter
    def phase(self, phase: Phase) -> None:
        if phase is not self._phase:
            self._phase = phase
            self._moved()

    def _moved(self) -> None:
        self.timeline.append((self._phase, time.time(), self.holder))
        if self._changed is not None:
            self._changed(self)

    def history(self) -> list[dict[str, Any]]:
        return [
            {"phase": phase.value, "stage": STAGES[phase], "at": round(at, 3), "holder": holder}
            for phase, at, holder in self.timeline
        ]


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
        self._listeners: list[Callable[[Known], None]] = []
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
        return self.known.touch(task.key, lambda: Known(task, self._moved))

    def on_phase(self, listener: Callable[[Known], None]) -> None:
        """Call `listener` with a task's entry when it appears and whenever its phase changes
        (the web view's live updates). It must not raise."""
        self._listeners.append(listener)

    def _moved(self, known: Known) -> None:
        for listener in self._listeners:
            listener(known)

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
            known.holder = self._own if phase.held or phase is Phase.DONE else ""
            known.heard = time.monotonic()
            known.phase = Phase.COMPLETED if phase is Phase.DONE else phase

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
        if phase is Phase.DONE:
            # Told after its result (task_complete): finished, not free again.
            known.holder, known.heard = msg.sender, time.monotonic()
            known.phase = Phase.COMPLETED
            return
        # Released, lost, or an attempt that failed: free again.
        known.holder, known.heard = (msg.sender if phase.held else ""), time.monotonic()
        known.phase = phase if phase.held or phase is Phase.FAILED else Phase.ANNOUNCED

    def _on_complete(self, msg: Message[TaskComplete]) -> None:
        known = self._entry(msg.data.repository, msg.data.task_id)
        if known is not None:
            known.holder = msg.sender
            known.result_url = msg.data.url
            known.phase = Phase.COMPLETED if msg.data.success else Phase.FAILED

    def reported(self, key: str, url: str) -> None:
        """Our own result's link (a pull request): the reporter tells the mesh, and our own
        messages do not come back to our board."""
        known = self.known.get(key)
        if known is not None and url:
            known.result_url = url

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
                    "result_url": known.result_url,
                    "timeline": known.history(),
                }
            )
        return rows
