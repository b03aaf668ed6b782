"""Antennae on a node: reviewing others' plans, deliberating over our own, asking for help,
and handing over to humans when agents cannot agree.

Deliberation (the holder of a task, before it executes, with `require_consensus`): propose a
plan; wait `review_window` (or until `quorum` peers accept); consensus when no objection is open.
An objection is answered by a revised proposal, which its author accepts or objects to again.
Help is asked for (`task_help_request`) when the plan needs a capability we lack; the first
peer whose announced capabilities cover it and who answers is given the sub-task. After
`max_rounds` proposals without consensus, on an escalation keyword, or when no help comes within
`help_timeout`, the conversation escalates: a comment on the issue for humans, the
`needs_human_label`, an `escalation` message, the optional webhook; the task waits until a human
comments or removes the label.

Every message is throttled per sender and conversation (`max_messages_per_minute`); duplicates
are dropped; the hop count (each automatic answer adds one, a proposal starts at 0) is checked at
the door (≤ 3), which ends loops of agents answering each other.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.request
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import structlog

from bzzz.antennae.conversation import Conversation, Proposal
from bzzz.antennae.reasoning import Reasoner, ReviewContext
from bzzz.bus import MessageBus
from bzzz.config import AntennaeConfig
from bzzz.lru import Lru
from bzzz.messages import (
    ANTENNAE_TOPIC,
    MAX_CAPABILITIES,
    MAX_CHANGES,
    MAX_HOP_COUNT,
    MAX_STEPS,
    AntennaeData,
    Collaboration,
    Consensus,
    Escalation,
    Message,
    Objection,
    PlanProposal,
    TaskComplete,
    TaskHelpRequest,
    TaskHelpResponse,
    clip,
    token,
    type_of,
)
from bzzz.p2p import GuestStopped
from bzzz.peers import PeerTable
from bzzz.tasks.github import GitHub, GitHubError
from bzzz.tasks.model import Guidance, Task
from bzzz.tasks.trust import MAX_COMMENT_CHARS, Trust, as_data

log = structlog.get_logger(__name__)

Record = Callable[[str, dict[str, Any]], None]
HOPS_KEPT = 4096
WEBHOOK_ATTEMPTS = 3
ESCALATION_MARK = "bzzz-escalation:"


class Antennae:
    def __init__(
        self,
        *,
        config: AntennaeConfig,
        bus: MessageBus,
        peers: PeerTable,
        record: Record,
        own_id: str,
        agent_id: str,
        capabilities: list[str],
        reasoner: Reasoner,
        github: GitHub | None,
        poll_interval: float,
        holder_of: Callable[[str], str] = lambda key: "",
        trust: Trust | None = None,
    ) -> None:
        self._cfg = config
        self._bus = bus
        self._peers = peers
        self._record = record
        self._own = own_id
        self._agent = agent_id
        self._capabilities = set(capabilities)
        self._reasoner = reasoner
        self._github = github
        self._poll_interval = poll_interval
        self._holder_of = holder_of
        self._trust = trust or Trust(("OWNER", "MEMBER", "COLLABORATOR"), ())
        self._untrusted_seen: Lru[int, bool] = Lru(1024)  # comments logged as untrusted
        self._deliberating: set[str] = set()
        in_use = self._deliberating.__contains__
        # Conversations remembered: any peer can open one.
        limit = config.max_conversations
        self.conversations: Lru[str, Conversation] = Lru(limit, in_use)
        self._changed: Lru[str, asyncio.Event] = Lru(limit, in_use)
        self._rates: Lru[tuple[str, str], deque[float]] = Lru(limit * 4)
        self._hops: OrderedDict[str, int] = OrderedDict()
        self._help: dict[str, dict[str, list[str]]] = {}
        self._keywords: dict[str, str] = {}
        self._done: Lru[str, bool] = Lru(limit)  # tasks finished
        self._group: asyncio.TaskGroup | None = None
        self.stats: Counter[str] = Counter()
        for kind in (PlanProposal, Objection, Collaboration, Consensus, Escalation):
            bus.on(kind, self._on_message)
        bus.guard(PlanProposal, self._may_propose)
        bus.guard(Consensus, self._may_decide)
        bus.guard(Escalation, self._may_decide)
        bus.on(TaskHelpRequest, self._on_help_request)
        bus.on(TaskHelpResponse, self._on_help_response)
        bus.on(TaskComplete, self._on_complete)

    async def run(self) -> None:
        """Owns the reviews this node writes for others' plans."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            await asyncio.Event().wait()

    # ---- authority -------------------------------------------------------------------------

    def _may_propose(self, msg: Message[PlanProposal]) -> str | None:
        """Only the task's holder proposes (and revises); while no holder is known, only the
        conversation's proposer, once there is one."""
        key = msg.data.conversation
        holder = self._holder_of(key)
        if holder:
            return None if holder == msg.sender else f"{key} is held by {holder}"
        conversation = self.conversations.get(key)
        if conversation is not None and conversation.proposer not in ("", msg.sender):
            return f"{key} is proposed by {conversation.proposer}"
        return None

    def _may_decide(self, msg: Message[AntennaeData]) -> str | None:
        """Consensus and escalation are the proposer's decisions (before any proposal, the
        holder's: it escalates when no help came)."""
        key = msg.data.conversation
        conversation = self.conversations.get(key)
        decider = conversation.proposer if conversation is not None else ""
        decider = decider or self._holder_of(key)
        if decider and decider != msg.sender:
            return f"only {decider} decides {key}"
        return None

    # ---- inbound ---------------------------------------------------------------------------

    def _throttled(self, sender: str, key: str) -> bool:
        window = self._rates.touch((sender, key), deque)
        now = time.monotonic()
        while window and now - window[0] > 60:
            window.popleft()
        if len(window) >= self._cfg.max_messages_per_minute:
            self.stats["throttled"] += 1
            if self.stats["throttled"] % 100 == 1:
                log.warning(
                    "antennae_throttled",
                    peer=sender,
                    task=key,
                    limit_per_minute=self._cfg.max_messages_per_minute,
                )
            return True
        window.append(now)
        return False

    def _on_message(self, msg: Message[AntennaeData]) -> None:
        if self._throttled(msg.sender, msg.data.conversation):
            return
        self._apply(msg)

    def _apply(self, msg: Message[AntennaeData]) -> None:
        key = msg.data.conversation
        conversation = self.conversations.touch(key, lambda: Conversation(key))
        changes = conversation.apply(msg)
        if not changes:
            self.stats["ignored" if not conversation.pending else "waiting"] += 1
        for applied, change in changes:
            self._applied(conversation, applied, change)
        self._changed.touch(key, asyncio.Event).set()

    def _applied(self, conversation: Conversation, msg: Message[AntennaeData], change: str) -> None:
        data = msg.data
        key = conversation.key
        self.stats["applied"] += 1
        if data.message_id:
            self._hops[data.message_id] = msg.hop_count
            while len(self._hops) > HOPS_KEPT:
                self._hops.popitem(last=False)
        text = " ".join(str(getattr(data, f, "")) for f in ("reason", "text")).lower()
        if (
            key in self._deliberating
            and msg.sender != self._own
            and any(k.lower() in text for k in self._cfg.escalation_keywords)
        ):
            self._keywords[key] = text.strip()
        proposal = conversation.proposals.get(data.message_id) if data.message_id else None
        # A proposal of an old round, overtaken by its revision, is not worth a review.
        current = proposal is not None and proposal is conversation.proposal
        if change == "proposal" and msg.sender != self._own and proposal is not None and current:
            self._spawn(self._review(key, proposal), "review")
        if isinstance(data, Collaboration) and data.kind == "subtask" and data.to == self._own:
            self._spawn(self._take_subtask(key, data), "subtask")

    def _spawn(self, job: Coroutine[Any, Any, None], what: str) -> None:
        if self._group is None:
            job.close()
            return
        self._group.create_task(self._contained(job, what))

    async def _contained(self, job: Coroutine[Any, Any, None], what: str) -> None:
        """One review or answer failing (a model, a bug) must not stop Antennae or the node."""
        try:
            await job
        except GuestStopped:
            pass
        except Exception:
            self.stats["errors"] += 1
            log.exception("antennae_job_failed", job=what)

    def _on_complete(self, msg: Message[TaskComplete]) -> None:
        data = msg.data
        key = f"{data.repository}#{data.task_id}"
        if key in self.conversations:
            self._done.touch(key, lambda: True)

    def task_finished(self, key: str) -> None:
        """Our own task ended: its files are free again."""
        self._done.touch(key, lambda: True)

    # ---- reviewing -------------------------------------------------------------------------

    def capabilities_of(self, peer: str) -> set[str]:
        if peer == self._own:
            return set(self._capabilities)
        record = self._peers.get(peer)
        return set(record.capabilities) if record else set()

    def _my_files(self) -> dict[str, list[str]]:
        return {
            key: list(c.proposal.expected_changes)
            for key, c in self.conversations.items()
            if c.proposer == self._own
            and c.state == "consensus"
            and c.proposal
            and key not in self._done
        }

    async def _review(self, key: str, proposal: Proposal) -> None:
        planners = {proposal.by, *proposal.helpers}
        context = ReviewContext(
            set().union(*(self.capabilities_of(p) for p in planners)), self._my_files()
        )
        review = await self._reasoner.review(key, proposal, context)
        hop = self._hops.get(proposal.message_id, 0) + 1
        if review:
            reason = clip(review, 2048)
            log.info("antennae_objection", task=key, reason=reason)
            self._record(
                "objection", {"task": key, "proposal": proposal.message_id, "reason": reason}
            )
            await self._send(
                Objection(
                    conversation=key,
                    message_id=_new_id(),
                    in_reply_to=proposal.message_id,
                    reason=reason,
                ),
                hop,
            )
        else:
            await self._collaborate(key, proposal.message_id, "accept", "no objection")

    # ---- help ------------------------------------------------------------------------------

    def _on_help_request(self, msg: Message[TaskHelpRequest]) -> None:
        data = msg.data
        offer = sorted(set(data.missing) & self._capabilities)
        if offer and msg.sender != self._own:
            log.info(
                "antennae_help_offered",
                task=f"{data.repository}#{data.task_id}",
                capabilities=offer,
            )
            self._spawn(
                self._bus.publish(
                    TaskHelpResponse(
                        repository=data.repository,
                        task_id=data.task_id,
                        agent_id=self._agent,
                        can_help=True,
                        capabilities=offer,
                    )
                ),
                "help_response",
            )

    def _on_help_response(self, msg: Message[TaskHelpResponse]) -> None:
        data = msg.data
        key = f"{data.repository}#{data.task_id}"
        if data.can_help and key in self._help:
            self._help[key][msg.sender] = list(data.capabilities)
            self._changed.touch(key, asyncio.Event).set()

    async def _find_help(self, task: Task, missing: list[str]) -> str | None:
        """Ask the mesh; the first answer whose announced capabilities cover `missing`."""
        key = task.key
        self._help[key] = {}
        await self._bus.publish(
            TaskHelpRequest(
                repository=task.repository,
                task_id=task.number,
                agent_id=self._agent,
                missing=missing[:MAX_CAPABILITIES],
                reason="the plan needs it",
            )
        )
        deadline = time.monotonic() + self._cfg.help_timeout
        try:
            while time.monotonic() < deadline:
                for peer in self._help[key]:
                    # Matched against the peer table: what it announced, not only what it says.
                    if set(missing) <= self.capabilities_of(peer):
                        return peer
                await self._wait(key, deadline - time.monotonic())
            return None
        finally:
            self._help.pop(key, None)

    async def _take_subtask(self, key: str, offer: Collaboration) -> None:
        log.info("antennae_subtask_taken", task=key, what=offer.text)
        self._record("subtask_taken", {"task": key, "what": offer.text})
        await self._collaborate(key, offer.message_id, "subtask_taken", offer.text)

    async def _collaborate(self, key: str, parent: str, kind: str, text: str) -> None:
        """Answer message `parent` (one hop further than it)."""
        await self._send(
            Collaboration(
                conversation=key, message_id=_new_id(), in_reply_to=parent, kind=kind, text=text
            ),
            self._hops.get(parent, 0) + 1,
        )

    # ---- deliberating over our own task ----------------------------------------------------

    async def deliberate(self, task: Task) -> Guidance:
        """Agree on a plan for `task` before it runs; what the work gets: the plan (agreed, or
        the last one when humans decided) and the trusted humans' answers."""
        key = task.key
        self._deliberating.add(key)
        try:
            return await self._deliberate(task, key)
        finally:
            self._deliberating.discard(key)

    async def _deliberate(self, task: Task, key: str) -> Guidance:
        conversation = self.conversations.touch(key, lambda: Conversation(key))
        self._done.pop(key, None)
        helpers: list[str] = []
        for _ in range(self._cfg.max_rounds):
            objections = [o.reason for o in conversation.open_objections()]
            draft = await self._reasoner.propose(task, objections)
            # Capabilities are identifiers on the wire; an issue's "## Needs" is free text.
            needed = list(dict.fromkeys(token(c) for c in draft.needed_capabilities if c.strip()))
            covered = self._capabilities.union(*(self.capabilities_of(h) for h in helpers))
            missing = [c for c in needed if c not in covered]
            if missing:
                helper = await self._find_help(task, missing)
                if helper is None:
                    return await self._escalate(
                        task, f"no agent offered help with {', '.join(missing)}"
                    )
                helpers.append(helper)
                await self._send(
                    Collaboration(
                        conversation=key,
                        message_id=_new_id(),
                        kind="subtask",
                        to=helper,
                        text=clip(f"the {', '.join(missing)} part", 2048),
                    ),
                    0,
                )
            previous = conversation.proposal
            proposal = PlanProposal(
                conversation=key,
                message_id=_new_id(),
                in_reply_to=previous.message_id if previous else "",  # a revision: one round on
                plan=clip(draft.plan, 4096),
                steps=[clip(step, 512) for step in draft.steps[:MAX_STEPS]],
                expected_changes=[clip(c, 256) for c in draft.expected_changes[:MAX_CHANGES]],
                needed_capabilities=needed[:MAX_CAPABILITIES],
                helpers=helpers,
            )
            log.info(
                "antennae_proposal", task=key, round=conversation.rounds + 1, plan=draft.plan[:200]
            )
            self._record(
                "plan_proposal",
                {
                    "task": key,
                    "round": conversation.rounds + 1,
                    "plan": draft.plan,
                    "helpers": helpers,
                },
            )
            await self._send(proposal, 0)
            await self._review_window(key, conversation)
            if key in self._keywords:
                return await self._escalate(task, f"an agent said: {self._keywords.pop(key)}")
            if not conversation.open_objections():
                await self._send(
                    Consensus(
                        conversation=key, message_id=_new_id(), proposal_id=proposal.message_id
                    ),
                    0,
                )
                log.info("antennae_consensus", task=key, rounds=conversation.rounds)
                self._record(
                    "consensus",
                    {"task": key, "proposal": proposal.message_id, "rounds": conversation.rounds},
                )
                return Guidance(plan=_plan_text(conversation.proposal))
        return await self._escalate(task, f"no consensus after {self._cfg.max_rounds} rounds")

    async def _review_window(self, key: str, conversation: Conversation) -> None:
        deadline = time.monotonic() + self._cfg.review_window
        while time.monotonic() < deadline:
            quorum = self._cfg.quorum
            if (
                quorum
                and len(conversation.accepts) >= quorum
                and not conversation.open_objections()
            ):
                return
            if key in self._keywords:
                return
            await self._wait(key, deadline - time.monotonic())

    async def _wait(self, key: str, at_most: float) -> None:
        event = self._changed.touch(key, asyncio.Event)
        event.clear()
        try:
            async with asyncio.timeout(max(at_most, 0.0)):
                await event.wait()
        except TimeoutError:
            pass

    # ---- escalating ------------------------------------------------------------------------

    async def _escalate(self, task: Task, reason: str) -> Guidance:
        key = task.key
        conversation = self.conversations[key]
        log.warning("antennae_escalation", task=key, reason=reason)
        self._record("escalation", {"task": key, "reason": reason, "rounds": conversation.rounds})
        current = conversation.proposal
        await self._send(
            Escalation(
                conversation=key,
                message_id=_new_id(),
                in_reply_to=current.message_id if current else "",
                reason=clip(reason, 2048),
            ),
            0,
        )
        summary = self._human_summary(conversation, reason)
        marker_id = 0
        if self._github is not None:
            try:
                made = await self._github.comment(task.repository, task.number, summary)
                marker_id = made.id
                await self._github.add_labels(
                    task.repository, task.number, self._cfg.needs_human_label
                )
            except GitHubError as exc:
                log.error("antennae_escalation_comment_failed", task=key, error=str(exc))
        if self._cfg.webhook_url:
            await self._call_webhook(task, reason, conversation)
        answers = await self._wait_for_humans(task, marker_id)
        await self._send(
            Consensus(
                conversation=key,
                message_id=_new_id(),
                proposal_id=conversation.proposal.message_id if conversation.proposal else "",
                resolution="human",
            ),
            0,
        )
        self._record("escalation_resolved", {"task": key})
        log.info("antennae_resumed", task=key)
        return Guidance(plan=_plan_text(conversation.proposal), answers=tuple(answers))

    def _human_summary(self, conversation: Conversation, reason: str) -> str:
        def agent(peer: str) -> str:
            record = self._peers.get(peer)
            name = self._agent if peer == self._own else (record.agent_id if record else "")
            return f"`{name or peer[-6:]}`"

        proposals = [h for h in conversation.history if h["type"] == "plan_proposal"]
        lines = [
            f"{ESCALATION_MARK} {self._own}",
            "",
            "**The agents could not agree on this task: a human decision is needed.**",
            "",
            f"Why: {reason}.",
            "",
            "Proposals:",
            *[
                f"- round {n}, by {agent(p['from'])}: {p['text']}"
                for n, p in enumerate(proposals, 1)
            ],
        ]
        objections = conversation.open_objections()
        if objections:
            lines += ["", "Open objections:", *[f"- {agent(o.by)}: {o.reason}" for o in objections]]
        lines += [
            "",
            f"To decide, comment here, or remove the `{self._cfg.needs_human_label}` "
            f"label to let {agent(self._own)} go ahead with its last plan.",
        ]
        return "\n".join(lines)

    async def _call_webhook(self, task: Task, reason: str, conversation: Conversation) -> None:
        body = json.dumps(
            {
                "event": "escalation",
                "task": task.key,
                "title": task.title,
                "url": task.url,
                "reason": reason,
                "agent": self._agent,
                "peer": self._own,
                "conversation": conversation.summary(),
                "at": datetime.now(UTC).isoformat(),
            }
        ).encode()

        def post() -> int:
            request = urllib.request.Request(
                self._cfg.webhook_url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=self._cfg.webhook_timeout) as answer:
                return int(answer.status)

        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            try:
                status = await asyncio.to_thread(post)
                log.info("antennae_webhook_sent", task=task.key, status=status)
                return
            except OSError as exc:
                log.warning(
                    "antennae_webhook_failed", task=task.key, attempt=attempt, error=str(exc)[:200]
                )
                await asyncio.sleep(2 ** (attempt - 1))

    async def _wait_for_humans(self, task: Task, marker_id: int) -> list[str]:
        """Until a trusted human comments after our escalation, or removes the label (which
        takes triage access on GitHub); their answers (trusted comments only)."""
        if self._github is None:
            return []
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                comments = await self._github.comments(task.repository, task.number)
                issue = await self._github.issue(task.repository, task.number)
            except GitHubError as exc:
                log.warning("antennae_wait_failed", task=task.key, error=str(exc))
                continue
            human = [c for c in comments if c.id > marker_id and not c.body.startswith("bzzz-")]
            answered = any(self._trust.comment(c) for c in human)
            for comment in human:
                if not self._trust.comment(comment) and comment.id not in self._untrusted_seen:
                    self._untrusted_seen.touch(comment.id, lambda: True)
                    log.info(
                        "antennae_untrusted_answer",
                        task=task.key,
                        author=comment.user,
                        association=comment.association,
                        reason="only trusted authors decide an escalation",
                    )
            if answered or self._cfg.needs_human_label not in issue.labels:
                if self._cfg.needs_human_label in issue.labels:
                    await self._github.remove_label(
                        task.repository, task.number, self._cfg.needs_human_label
                    )
                return [as_data(c.body, MAX_COMMENT_CHARS) for c in human if self._trust.comment(c)]

    # ---- sending ---------------------------------------------------------------------------

    async def _send(self, data: AntennaeData, hop_count: int) -> None:
        """Publish, and take our own message in as every other node does."""
        if hop_count > MAX_HOP_COUNT:
            self.stats["loop_stopped"] += 1
            return  # answering would exceed the hop limit: the chain ends here
        try:
            await self._bus.publish(data, hop_count=hop_count)
        except GuestStopped:
            return
        self._apply(
            Message(
                type=type_of(data),
                sender=self._own,
                timestamp=datetime.now(UTC),
                data=data,
                topic=ANTENNAE_TOPIC,
                hop_count=hop_count,
            )
        )

    # ---- what the node tells ---------------------------------------------------------------

    def hops(self, message_id: str) -> int | None:
        """How many hops a recent message had come when it reached us (None: not kept)."""
        return self._hops.get(message_id)

    def status(self, key: str = "") -> list[dict[str, Any]]:
        rows = []
        for name, conversation in sorted(self.conversations.items()):
            if key and name != key:
                continue
            row = conversation.summary()
            row["done"] = name in self._done
            if key:
                row["history"] = conversation.history
            rows.append(row)
        return rows


def _plan_text(proposal: Proposal | None) -> str:
    if proposal is None:
        return ""
    steps = "".join(f"\n{n}. {step}" for n, step in enumerate(proposal.steps, 1))
    return f"{proposal.plan}{steps}"


def _new_id() -> str:
    return secrets.token_hex(8)
