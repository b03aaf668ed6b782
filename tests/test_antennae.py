"""Conversations and reasoning providers, without a network."""

import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from bzzz.antennae.conversation import Conversation
from bzzz.antennae.reasoning import ChatReasoner, ReviewContext, RulesReasoner, sections
from bzzz.llm import Llm
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
from tests.fakes.model import Error, ScriptedModel, Slow

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


def proposal(id_: str, plan: str = "p", revises: str = "") -> PlanProposal:
    return PlanProposal(
        conversation=KEY, message_id=id_, in_reply_to=revises, plan=plan, needed_capabilities=[]
    )


def objection(id_: str, to: str, reason: str = "no") -> Objection:
    return Objection(conversation=KEY, message_id=id_, in_reply_to=to, reason=reason)


def accept(id_: str, to: str) -> Collaboration:
    return Collaboration(conversation=KEY, message_id=id_, in_reply_to=to, kind="accept")


def test_an_objection_is_closed_by_its_author_accepting_a_revision():
    c = Conversation(KEY)
    assert [change for _, change in c.apply(msg("A", proposal("p1")))] == ["proposal"]
    assert c.apply(msg("B", objection("o1", "p1", "files in use")))[0][1] == "objection"
    assert [o.by for o in c.open_objections()] == ["B"]
    # Someone else accepting does not close B's objection; nor does B accepting p1 itself.
    c.apply(msg("C", accept("c1", "p1")))
    c.apply(msg("B", accept("c0", "p1")))
    assert [o.by for o in c.open_objections()] == ["B"]
    c.apply(msg("A", proposal("p2", "revised", revises="p1")))
    assert c.rounds == 2 and c.proposer == "A"
    assert c.apply(msg("B", accept("c2", "p2")))[0][1] == "objection_closed"
    assert c.open_objections() == []
    assert c.apply(msg("A", Consensus(conversation=KEY, message_id="k", proposal_id="p2")))
    assert c.summary()["state"] == "consensus" and c.summary()["accepted_by"] == ["B"]


def test_duplicates_and_decisions_by_others_change_nothing():
    c = Conversation(KEY)
    c.apply(msg("A", proposal("p1")))
    assert c.apply(msg("A", proposal("p1"))) == []  # the same message id again
    assert c.apply(msg("B", Consensus(conversation=KEY, message_id="k1", proposal_id="p1"))) == []
    assert c.apply(msg("A", objection("o", "p1", "me?"))) == []
    assert c.state == "open"


def test_a_reply_that_overtook_what_it_answers_waits_for_it():
    """An objection delivered before its proposal was once lost for good (marked seen)."""
    c = Conversation(KEY)
    assert c.apply(msg("B", objection("o1", "p1"))) == []
    assert c.summary()["waiting"] == 1 and c.state == "open"
    changes = c.apply(msg("A", proposal("p1")))
    assert [change for _, change in changes] == ["proposal", "objection"]
    assert [o.by for o in c.open_objections()] == ["B"] and c.summary()["waiting"] == 0


def test_the_same_messages_give_the_same_state_in_either_order():
    messages = [
        msg("A", proposal("p1")),
        msg("B", objection("o1", "p1")),
        msg("C", accept("c1", "p1")),
        msg("A", Escalation(conversation=KEY, message_id="e1", in_reply_to="p1", reason="stuck")),
    ]
    one, two = Conversation(KEY), Conversation(KEY)
    for m in messages:
        one.apply(m)
    for m in [messages[3], messages[2], messages[1], messages[0]]:
        two.apply(m)
    assert one.summary() == two.summary()
    assert one.state == "escalated"


def conversation_messages() -> list[Message]:
    """A whole conversation: three rounds of proposals, objections and accepts to each, a
    helper, one escalation and the final consensus."""
    return [
        msg("A", proposal("p1")),
        msg("B", objection("o1", "p1", "too broad")),
        msg("C", accept("c1", "p1")),
        msg("A", Escalation(conversation=KEY, message_id="e1", in_reply_to="p1", reason="x")),
        msg("A", proposal("p2", "narrower", revises="p1")),
        msg("B", objection("o2", "p2", "still broad")),
        msg("C", objection("o3", "p2", "now too narrow")),
        msg("D", Collaboration(conversation=KEY, message_id="h1", kind="offer", text="rust")),
        msg("A", proposal("p3", "just right", revises="p2")),
        msg("B", accept("c2", "p3")),
        msg("C", accept("c3", "p3")),
        msg("A", Consensus(conversation=KEY, message_id="k", proposal_id="p3")),
    ]


@settings(max_examples=300, deadline=None)
@given(st.permutations(conversation_messages()), st.data())
def test_every_delivery_order_gives_the_same_state(order, data):
    duplicates = data.draw(st.lists(st.sampled_from(order), max_size=4))
    conversation = Conversation(KEY)
    for m in [*order, *duplicates]:
        conversation.apply(m)
    reference = Conversation(KEY)
    for m in conversation_messages():
        reference.apply(m)
    assert conversation.summary() == reference.summary()
    assert reference.summary()["state"] == "consensus" and reference.rounds == 3
    assert reference.open_objections() == []


@settings(max_examples=200, deadline=None)
@given(st.permutations(conversation_messages()[:7]))
def test_every_order_of_an_unfinished_conversation_agrees_too(order):
    conversation = Conversation(KEY)
    for m in order:
        conversation.apply(m)
    reference = Conversation(KEY)
    for m in conversation_messages()[:7]:
        reference.apply(m)
    assert conversation.summary() == reference.summary()
    assert [o.by for o in reference.open_objections()] == ["B", "C"]


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


async def test_a_chat_model_drafts_and_reviews_and_falls_back_to_the_rules():
    with ScriptedModel(
        [
            '```json\n{"plan": "model plan", "steps": ["s"], "expected_changes": ["m.py"], '
            '"needed_capabilities": []}\n```',
            json.dumps({"object": True, "reason": "tests are missing"}),
            Error(500),
            Error(500),
            Error(500),  # the client's own two retries, then the failure
            "not json at all",
        ]
    ) as model:
        llm = Llm(model.url, None, 5)
        chat = ChatReasoner(llm, "tiny", 5, 10, RulesReasoner())
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
        assert model.requests[0]["model"] == "tiny"
        assert model.requests[0]["response_format"] == {"type": "json_object"}
        await llm.close()


async def test_the_model_budget_and_time_limit_hold():
    with ScriptedModel([json.dumps({"plan": "x"})]) as model:
        llm = Llm(model.url, None, 5)
        chat = ChatReasoner(llm, "tiny", 5, 1, RulesReasoner())
        await chat.propose(task(""), [])
        await chat.propose(task("## Files\n- b.py"), [])  # over budget: rules, no request
        assert len(model.requests) == 1 and chat.failures == 1
        await llm.close()
    with ScriptedModel([Slow(3, "late")]) as slow_model:
        slow = ChatReasoner(Llm(slow_model.url, None, 30), "tiny", 0.5, 5, RulesReasoner())
        draft = await slow.propose(task("## Files\n- c.py"), [])  # too slow: rules
        assert draft.expected_changes == ["c.py"] and slow.failures == 1
    down = ChatReasoner(Llm("http://127.0.0.1:9/v1", None, 2), "tiny", 5, 5, RulesReasoner())
    draft = await down.propose(task("## Files\n- d.py"), [])  # nothing listens: rules
    assert draft.expected_changes == ["d.py"] and down.failures == 1


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
