"""Conversations and reasoning providers, without a network."""

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bzzz.antennae.conversation import Conversation
from bzzz.antennae.reasoning import ChatReasoner, ReviewContext, RulesReasoner, sections
from bzzz.messages import (
    ANTENNAE_TOPIC,
    Collaboration,
    Consensus,
    Escalation,
    Message,
    Objection,
    PlanProposal,
    type_of,
)
from bzzz.tasks.model import Task

KEY = "acme/widgets#7"


def msg(sender: str, data, seqno: int = 0) -> Message:
    return Message(
        type=type_of(data),
        sender=sender,
        timestamp=datetime.now(UTC),
        data=data,
        topic=ANTENNAE_TOPIC,
        seqno=seqno,
    )


def proposal(id_: str, plan: str = "p") -> PlanProposal:
    return PlanProposal(conversation=KEY, message_id=id_, plan=plan, needed_capabilities=[])


def test_an_objection_is_closed_by_its_author_accepting_a_revision():
    c = Conversation(KEY)
    assert c.apply(msg("A", proposal("p1"))) == "proposal"
    assert (
        c.apply(
            msg(
                "B",
                Objection(
                    conversation=KEY, message_id="o1", in_reply_to="p1", reason="files in use"
                ),
            )
        )
        == "objection"
    )
    assert [o.by for o in c.open_objections()] == ["B"]
    # Someone else accepting does not close B's objection.
    c.apply(msg("C", Collaboration(conversation=KEY, message_id="c1", kind="accept")))
    assert [o.by for o in c.open_objections()] == ["B"]
    assert c.apply(msg("A", proposal("p2", "revised"))) == "proposal" and c.rounds == 2
    assert (
        c.apply(
            msg(
                "B",
                Collaboration(conversation=KEY, message_id="c2", kind="accept", in_reply_to="p2"),
            )
        )
        == "objection_closed"
    )
    assert c.open_objections() == []
    assert (
        c.apply(msg("A", Consensus(conversation=KEY, message_id="k", proposal_id="p2")))
        == "consensus"
    )
    assert c.summary()["state"] == "consensus" and c.summary()["accepted_by"] == ["B"]


def test_duplicates_and_decisions_by_others_change_nothing():
    c = Conversation(KEY)
    c.apply(msg("A", proposal("p1")))
    assert c.apply(msg("A", proposal("p1"))) is None  # the same message id again
    assert c.apply(msg("B", Consensus(conversation=KEY, message_id="k1"))) is None
    assert c.apply(msg("A", Objection(conversation=KEY, message_id="o", reason="me?"))) is None
    assert c.state == "open"


def test_the_same_messages_give_the_same_state_in_either_order():
    messages = [
        msg("A", proposal("p1")),
        msg("B", Objection(conversation=KEY, message_id="o1", reason="no")),
        msg("C", Collaboration(conversation=KEY, message_id="c1", kind="accept")),
        msg("A", Escalation(conversation=KEY, message_id="e1", reason="stuck")),
    ]
    one, two = Conversation(KEY), Conversation(KEY)
    for m in messages:
        one.apply(m)
    for m in [messages[0], messages[2], messages[1], messages[3]]:
        two.apply(m)
    assert one.summary() == two.summary()
    assert one.state == "escalated"


def task(body: str, *labels: str) -> Task:
    return Task("acme/widgets", 7, "Add caching", body, ("bzzz-task", *labels), "open", (), "", "")


async def test_rules_draft_from_labels_and_body_sections():
    body = (
        "Intro.\n\n## Steps\n1. read\n2. write\n\n## Files\n- `src/cache.py`\n\n## Needs\n- rust\n"
    )
    assert sections(body)["files"] == ["src/cache.py"]
    draft = await RulesReasoner().propose(task(body, "type-backend"), [])
    assert draft.steps == ["read", "write"]
    assert draft.expected_changes == ["src/cache.py"]
    assert draft.needed_capabilities == ["rust", "backend"]


async def test_rules_object_on_missing_capabilities_and_files_in_use():
    rules = RulesReasoner()
    draft = await rules.propose(task("## Files\n- a.py\n## Needs\n- rust"), [])
    c = Conversation(KEY)
    c.apply(
        msg(
            "A",
            PlanProposal(
                conversation=KEY,
                message_id="p",
                plan=draft.plan,
                expected_changes=draft.expected_changes,
                needed_capabilities=draft.needed_capabilities,
            ),
        )
    )
    assert c.proposal is not None
    lacking = await rules.review(KEY, c.proposal, ReviewContext({"general"}))
    assert lacking == "nobody on this plan has rust"
    busy = await rules.review(KEY, c.proposal, ReviewContext({"rust"}, {"o/r#1": ["a.py"]}))
    assert busy == "I am already changing a.py for o/r#1"
    assert await rules.review(KEY, c.proposal, ReviewContext({"rust"}, {KEY: ["a.py"]})) is None


class FakeModel:
    """A local endpoint answering like OpenAI's and Ollama's chat APIs."""

    def __init__(self, answers: list) -> None:
        self.answers = answers
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body})
                answer = outer.answers.pop(0) if outer.answers else {"plan": "x"}
                if answer == "error":
                    self.send_response(500)
                    self.end_headers()
                    return
                content = answer if isinstance(answer, str) else json.dumps(answer)
                if self.path == "/api/chat":
                    reply = {"message": {"role": "assistant", "content": content}, "done": True}
                else:
                    reply = {"choices": [{"message": {"role": "assistant", "content": content}}]}
                raw = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("kind", ["openai", "ollama"])
async def test_a_chat_model_drafts_and_reviews_and_falls_back_to_the_rules(kind):
    model = FakeModel(
        [
            '```json\n{"plan": "model plan", "steps": ["s"], "expected_changes": ["m.py"], '
            '"needed_capabilities": []}\n```',
            {"object": True, "reason": "tests are missing"},
            "error",
            "not json at all",
        ]
    )
    try:
        chat = ChatReasoner(kind, model.url, "tiny", 5, 10, RulesReasoner())
        draft = await chat.propose(task("## Files\n- a.py"), [])
        assert (draft.plan, draft.expected_changes) == ("model plan", ["m.py"])
        c = Conversation(KEY)
        c.apply(msg("A", proposal("p")))
        assert c.proposal is not None
        assert await chat.review(KEY, c.proposal, ReviewContext(set())) == "tests are missing"
        fallback = await chat.propose(task("## Files\n- a.py"), [])  # the model fails: rules
        assert fallback.expected_changes == ["a.py"]
        assert await chat.review(KEY, c.proposal, ReviewContext(set())) is None  # unreadable
        assert chat.failures == 2
        path = "/api/chat" if kind == "ollama" else "/v1/chat/completions"
        assert {r["path"] for r in model.requests} == {path}
        assert model.requests[0]["body"]["model"] == "tiny"
    finally:
        model.close()


async def test_the_model_budget_and_time_limit_hold():
    model = FakeModel([])
    try:
        chat = ChatReasoner("openai", model.url, "tiny", 5, 1, RulesReasoner())
        await chat.propose(task(""), [])
        await chat.propose(task("## Files\n- b.py"), [])  # over budget: rules, no request
        assert len(model.requests) == 1 and chat.failures == 1
    finally:
        model.close()
    slow = ChatReasoner("openai", "http://127.0.0.1:9", "tiny", 0.5, 5, RulesReasoner())
    draft = await slow.propose(task("## Files\n- c.py"), [])  # nothing listens: rules
    assert draft.expected_changes == ["c.py"] and slow.failures == 1


def test_state_keyed_by_what_peers_send_stays_bounded():
    from bzzz.lru import Lru

    kept = {"mine"}
    table: Lru[str, int] = Lru(3, kept.__contains__)
    table.touch("mine", lambda: 0)
    for n in range(100):
        table.touch(f"spam-{n}", lambda n=n: n)
    assert len(table) == 3 and "mine" in table and "spam-99" in table
    table.touch("spam-98", lambda: -1)  # used again: kept, not remade
    table.touch("new", lambda: 1)
    assert list(table) == ["mine", "spam-98", "new"] and table["spam-98"] == 98


def test_what_a_conversation_remembers_stays_bounded():
    from bzzz.antennae.conversation import HISTORY, SEEN

    c = Conversation(KEY)
    c.apply(msg("A", proposal("p1")))
    for n in range(3 * SEEN):
        c.apply(msg(f"peer{n}", Collaboration(conversation=KEY, message_id=f"{n:064d}")))
    assert len(c.seen) == SEEN and len(c.history) == HISTORY
    assert c.summary()["messages"] == 3 * SEEN + 1


def test_a_message_without_an_id_gets_one_that_can_be_answered():
    c = Conversation(KEY)
    c.apply(msg("A" * 52, PlanProposal(conversation=KEY, plan="p"), seqno=2**63 - 1))
    assert c.proposal is not None and len(c.proposal.message_id) <= 64
    reply = Collaboration(conversation=KEY, in_reply_to=c.proposal.message_id, kind="accept")
    assert reply.in_reply_to == c.proposal.message_id
