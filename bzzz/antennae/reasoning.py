"""How an agent drafts plans and reviews others': pluggable, with rules as the floor.

`RulesReasoner` needs no model. It drafts a plan from the task's labels and body sections
(`## Steps`, `## Files` (or `## Changes`), `## Needs`), and objects to a plan when the planner
and its helpers lack a capability the plan needs, or when the plan changes files this agent is
already changing for another task.

`ChatReasoner` asks a chat model (`bzzz.llm`: any OpenAI-compatible endpoint, Ollama's `/v1`
included) for the same answers as JSON, within a time limit and an hourly budget of calls; any
failure (time, HTTP, unreadable answer, budget spent) falls back to the rules, and is logged.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from bzzz.antennae.conversation import Proposal
from bzzz.llm import Llm, LlmError, json_object
from bzzz.tasks.model import Task

log = structlog.get_logger(__name__)


@dataclass
class Draft:
    plan: str
    steps: list[str]
    expected_changes: list[str]
    needed_capabilities: list[str]


@dataclass
class ReviewContext:
    """What a reviewer knows when it reads a plan."""

    planner_capabilities: set[str]  # the planner's and its helpers', from the peer table
    my_files: dict[str, list[str]] = field(default_factory=dict)  # my other tasks' changes


class Reasoner(Protocol):
    async def propose(self, task: Task, objections: list[str]) -> Draft: ...

    async def review(self, task: str, proposal: Proposal, context: ReviewContext) -> str | None:
        """An objection's reason, or None to accept."""
        ...


def sections(body: str) -> dict[str, list[str]]:
    """Markdown `## Heading` sections of an issue body, as their list items (or lines)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in body.splitlines():
        heading = re.match(r"^#{2,3}\s+(.*?)\s*$", line)
        if heading:
            current = found.setdefault(heading.group(1).strip().lower(), [])
            continue
        item = re.sub(r"^\s*(?:[-*+]|\d+[.)])\s+", "", line).strip().strip("`")
        if current is not None and item:
            current.append(item)
    return found


class RulesReasoner:
    async def propose(self, task: Task, objections: list[str]) -> Draft:
        parts = sections(task.body)
        needed = list(
            dict.fromkeys(parts.get("needs", []) + ([task.type] if task.type != "general" else []))
        )
        steps = parts.get("steps") or [f"Do what #{task.number} asks: {task.title}"]
        plan = f"{task.title}: " + "; ".join(steps)
        if objections:
            plan += " (revised after: " + "; ".join(objections) + ")"
        return Draft(plan, steps, parts.get("files") or parts.get("changes") or [], needed)

    async def review(self, task: str, proposal: Proposal, context: ReviewContext) -> str | None:
        missing = [c for c in proposal.needed_capabilities if c not in context.planner_capabilities]
        if missing:
            return f"nobody on this plan has {', '.join(missing)}"
        for other, files in sorted(context.my_files.items()):
            overlap = sorted(set(files) & set(proposal.expected_changes))
            if other != task and overlap:
                return f"I am already changing {', '.join(overlap)} for {other}"
        return None


class ChatReasoner:
    """A chat model drafts and reviews; the rules answer when it cannot."""

    def __init__(
        self,
        llm: Llm,
        model: str,
        time_limit: float,
        calls_per_hour: int,
        fallback: Reasoner,
    ) -> None:
        self._llm = llm
        self._model = model  # "" : the first the endpoint lists
        self._time_limit = time_limit
        self._budget = calls_per_hour
        self._calls: deque[float] = deque()
        self._fallback = fallback
        self.failures = 0

    async def propose(self, task: Task, objections: list[str]) -> Draft:
        prompt = (
            'Plan this task. Answer with JSON only: {"plan": str, "steps": [str], '
            '"expected_changes": [file paths], "needed_capabilities": [str]}.\n'
            f"Task #{task.number}: {task.title}\nLabels: {', '.join(task.labels)}\n\n{task.body}"
        )
        if objections:
            prompt += "\n\nRevise your plan to answer these objections:\n- " + "\n- ".join(
                objections
            )
        answer = await self._ask(prompt)
        try:
            assert answer is not None
            return Draft(
                str(answer["plan"]),
                [str(s) for s in answer.get("steps", [])],
                [str(f) for f in answer.get("expected_changes", [])],
                [str(c) for c in answer.get("needed_capabilities", [])],
            )
        except (AssertionError, KeyError, TypeError):
            return await self._fallback.propose(task, objections)

    async def review(self, task: str, proposal: Proposal, context: ReviewContext) -> str | None:
        # The hard rules (capabilities, files in use) are facts, not opinions: they hold first.
        ruled = await self._fallback.review(task, proposal, context)
        if ruled is not None:
            return ruled
        prompt = (
            "Review this plan from another agent. Answer with JSON only: "
            '{"object": bool, "reason": str}.\n'
            f"Task {task}\nPlan: {proposal.plan}\nSteps: {proposal.steps}\n"
            f"Changes: {proposal.expected_changes}"
        )
        answer = await self._ask(prompt)
        if answer is None:
            return None
        return str(answer.get("reason") or "objection") if answer.get("object") else None

    async def _ask(self, prompt: str) -> dict[str, Any] | None:
        now = time.monotonic()
        while self._calls and now - self._calls[0] > 3600:
            self._calls.popleft()
        if len(self._calls) >= self._budget:
            self._failed("budget spent")
            return None
        self._calls.append(now)
        messages = [
            {"role": "system", "content": "You are an agent in a team of coding agents."},
            {"role": "user", "content": prompt},
        ]
        try:
            async with asyncio.timeout(self._time_limit):
                if not self._model:
                    listed = await self._llm.models()
                    if not listed:
                        raise LlmError("the endpoint serves no model")
                    self._model = listed[0]
                reply = await self._llm.chat(self._model, messages, json_only=True)
            return json_object(reply.content)
        except (TimeoutError, LlmError) as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            return None

    def _failed(self, why: str) -> None:
        self.failures += 1
        log.warning("reasoning_fallback", url=self._llm.url, reason=why[:200])
