"""Fuzzing a running daemon through a real hostile libp2p peer: hypothesis generates messages of
every type (inside and just outside their bounds, and garbage) and lines of the log protocol
(both ways); the daemon must live, count every message, and answer `status` within 2 s.

The long run (10,000 messages) is `python -m bench.fuzz`; this is its short version.
"""

from __future__ import annotations

import asyncio
import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bzzz import control
from bzzz.auditlog.replication import PROTOCOL as LOG_PROTOCOL
from bzzz.messages import KINDS, TOPICS
from tests import strategies
from tests.integration.harness import Cluster, Daemon, wait_until
from tests.integration.testpeer import LogAuthor, PeerThread

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)


def counted(daemon: Daemon) -> int:
    """Messages the daemon has a verdict for (accepted, rejected or ignored)."""
    topics = daemon.status()["messages"]["topics"]
    return sum(t["accepted"] + t["rejected"] + t["ignored"] for t in topics.values())


def timed_status(daemon: Daemon) -> float:
    started = time.monotonic()
    control.request(daemon.socket_path, "status", timeout=2)
    return time.monotonic() - started


@st.composite
def published(draw: st.DrawFn, sender: str) -> tuple[str, bytes]:
    """(topic, payload): a valid message, one with a field out of bounds, or garbage."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        msg_type, data = draw(strategies.valid_messages())
        return KINDS[msg_type].topic, strategies.envelope(msg_type, data, sender)
    if kind == 1:
        msg_type, data, _reason = draw(strategies.broken_messages())
        return KINDS[msg_type].topic, strategies.envelope(msg_type, data, sender)
    return draw(st.sampled_from(TOPICS)), draw(strategies.garbage(sender))


def log_lines(record: bytes) -> st.SearchStrategy[bytes]:
    """Lines a hostile log server might answer with (no newline inside: one line each)."""
    return st.one_of(
        st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ")),
        strategies.json_values.map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda start, junk: record[:start] + junk + record[start:],
            st.integers(0, len(record)),
            st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")),
        ),
        st.sampled_from([b"Infinity", b"NaN", b"-1", b"1e999", b"9" * 5000]).map(
            lambda v: b'{"end": true, "head": ' + v + b"}"
        ),
        st.integers(1, 8000).map(lambda depth: b"[" * depth + b"]" * depth),
        st.just(record),
    )


def log_requests(author: str) -> st.SearchStrategy[bytes]:
    """Request lines a hostile peer might send to the daemon's own log server."""
    fields = st.fixed_dictionaries(
        {},
        optional={
            "author": st.one_of(st.just(author), st.text(max_size=200), strategies.json_values),
            "from": st.one_of(st.integers(-(2**70), 2**70), strategies.json_values),
            "limit": st.one_of(st.integers(-(2**70), 2**70), strategies.json_values),
        },
    )
    return st.one_of(
        fields.map(lambda f: json.dumps(f).encode()),
        st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" ")),
        st.integers(1, 8000).map(lambda depth: b"{" * depth),
    )


def test_fuzzed_messages_and_log_lines_never_stop_the_daemon(cluster: Cluster):
    (daemon,) = cluster.full_mesh(["a"])
    author = LogAuthor()
    peer = author.peer
    thread = PeerThread()
    slowest = 0.0
    try:
        thread.run(peer.__aenter__())
        thread.run(peer.join(daemon.address))
        author.append("tick", {"n": 0})
        record = author.entries[0].to_record()
        heads = [100]
        sent = 0

        @settings(FUZZ, max_examples=500)
        @given(published(peer.peer_id))
        def publish(message: tuple[str, bytes]) -> None:
            nonlocal sent
            topic, raw = message
            thread.run(peer.publish(topic, raw))
            sent += 1

        publish()
        wait_until(lambda: counted(daemon) == sent, 30, f"a verdict on all {sent} messages")
        slowest = max(slowest, timed_status(daemon))
        rejected = daemon.status()["messages"]["rejected"]
        assert sum(rejected.values()) > sent // 4, rejected

        @settings(FUZZ, max_examples=80)
        @given(st.lists(log_lines(record), min_size=1, max_size=4))
        def answer_pulls(lines: list[bytes]) -> None:
            asked = author.asked
            author.answer = lines
            heads.append(heads[-1] + 1)  # a head the daemon does not hold: it asks

            def pulled() -> bool:
                return author.asked > asked

            thread.run(author.announce_until(pulled, 10, "a pull", seq=heads[-1]))

        answer_pulls()
        slowest = max(slowest, timed_status(daemon))

        async def ask(line: bytes) -> bytes:
            stream = await peer.host.open_stream(daemon.peer_id, LOG_PROTOCOL)
            try:
                await stream.write(line + b"\n")
                async with asyncio.timeout(10):
                    while reply := await stream.readline(1 << 20):
                        if reply.startswith((b'{"end"', b'{"error"')):
                            return reply
                return b""
            finally:
                await stream.close()

        @settings(FUZZ, max_examples=100)
        @given(log_requests(daemon.peer_id))
        def ask_the_daemon(line: bytes) -> None:
            reply = json.loads(thread.run(ask(line)) or b"{}")
            assert set(reply) & {"end", "error"}, "every request is answered"

        ask_the_daemon()
        slowest = max(slowest, timed_status(daemon))

        assert daemon.process.poll() is None
        assert slowest < 2.0
        errors = daemon.status()["auditlog"]["errors"]
        assert errors.get("pull", 0) == 0 and errors.get("serve", 0) == 0, errors
        assert daemon.status()["messages"]["handler_errors"] == 0
    finally:
        try:
            thread.run(peer.__aexit__(None, None, None))
        finally:
            thread.close()
    log = daemon.log()
    crash = log.find("Traceback")
    assert crash < 0, log[max(0, crash - 500) : crash + 3000]
