"""Task model, claim reading, the executor and token lookup, without GitHub."""

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bzzz.p2p import Identity, verify
from bzzz.tasks.claims import Marker, intent_winner, parse_marker, read_claims
from bzzz.tasks.executor import OutputTail, run_command, task_env
from bzzz.tasks.github import Comment, load_token
from bzzz.tasks.model import Task

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def task(*labels: str) -> Task:
    return Task("o/r", 7, "Title", "Body", labels, "open", (), "https://x/7", "")


def comment(id_: int, body: str, minutes: float = 0, renewed: float | None = None) -> Comment:
    at = T0 + timedelta(minutes=minutes)
    renewed_at = T0 + timedelta(minutes=renewed) if renewed else at
    return Comment(id_, body, "bot", "COLLABORATOR", at, renewed_at)


def test_labels_give_priority_type_and_the_capability_match():
    t = task("bzzz-task", "priority-3", "type-rust")
    assert (t.priority, t.type, t.key) == (3, "rust", "o/r#7")
    assert t.suits(["rust"]) and t.suits(["general"]) and not t.suits(["python"])
    assert task("bzzz-task").type == "general" and not task().suits(["rust"])
    big = task("bzzz-task", "model-qwen2.5-coder:32b")
    assert big.model == "qwen2.5-coder:32b"
    assert big.suits(["general"], ["llama3", "qwen2.5-coder:32b"])
    assert not big.suits(["general"], ["llama3"]) and not big.suits(["general"])


A, B, C = (Identity.generate() for _ in range(3))
T = task("bzzz-task")


def signed(who: Identity, kind: str, nonce: str, outcome: str = "", over=(), on: Task = T) -> str:
    return Marker(kind, who.peer_id, nonce, outcome, tuple(over)).signed(on, who.sign).line()


def claims_at(comments: list[Comment], minutes: float, on: Task = T):
    return read_claims(comments, T0 + timedelta(minutes=minutes), timedelta(minutes=10), on, verify)


def test_the_oldest_live_claim_stands_until_ended_or_lapsed():
    comments = [
        comment(1, signed(A, "claim", "n1"), 0),
        comment(2, signed(B, "claim", "n2"), 1),
        comment(3, "a human talking", 2),
    ]
    assert claims_at(comments, 3).standing.peer == A.peer_id
    ended = [*comments, comment(4, signed(A, "done", "n1", "failure") + "\n\nexit 3", 4)]
    state = claims_at(ended, 5)
    assert (state.standing.peer, state.failures, state.succeeded) == (B.peer_id, 1, False)
    # A's claim lapses unless renewed (edited) within the lease.
    assert claims_at(comments, 10.5).standing.peer == B.peer_id
    renewed = [comment(1, signed(A, "claim", "n1"), 0, renewed=9), comments[1]]
    assert claims_at(renewed, 10.5).standing.peer == A.peer_id
    done = [*comments, comment(4, signed(A, "done", "n1", "success"), 4)]
    assert claims_at(done, 5).succeeded


def test_a_lapsed_claim_named_by_a_takeover_never_stands_again():
    """Failure 6: A lapses, C takes over naming A's claim; A's late edit went through, which
    would make A's older comment the standing claim again, but A's nonce is ended."""
    lapsed = [comment(1, signed(A, "claim", "n1"), 0)]
    state = claims_at(lapsed, 11)
    assert state.standing is None and [c.nonce for c in state.lapsed] == ["n1"]
    taken = [
        comment(1, signed(A, "claim", "n1"), 0, renewed=12),  # A's late renewal
        comment(2, signed(C, "claim", "n3", over=["n1"]), 11),
    ]
    state = claims_at(taken, 12.5)
    assert state.standing is not None and state.standing.peer == C.peer_id
    assert "n1" in state.ended and "n1" not in state.marked and state.lapsed == ()


def test_forged_and_replayed_markers_change_nothing():
    """Anyone can comment `bzzz-done: X Y success`: unsigned, badly signed, or copied from
    another issue, a marker is ignored and reported as forged."""
    other_issue = Task("o/r", 8, "Other", "", (), "open", (), "", "")
    comments = [
        comment(1, signed(A, "claim", "n1"), 0),
        comment(2, f"bzzz-done: {A.peer_id} n1 success", 1),  # no signature
        comment(3, signed(B, "claim", "n2").replace(B.peer_id, A.peer_id), 1),  # not A's key
        comment(4, signed(A, "done", "n1", "success", on=other_issue), 2),  # replayed
        comment(5, "bzzz-claim: not-a-peer-id n9 sig:AAAA", 2),
    ]
    state = claims_at(comments, 3)
    assert state.standing is not None and state.standing.nonce == "n1"
    assert not state.succeeded and state.ended == frozenset()
    assert [c.id for c in state.forged] == [2, 3, 4, 5]
    # A marker round-trips through its line.
    line = signed(C, "done", "n7", "failure", over=["n1", "n2"])
    parsed = parse_marker(line + "\n\nmore text")
    assert parsed == Marker("done", C.peer_id, "n7", "failure", ("n1", "n2"))
    assert parsed.verifies(T, verify)


def test_the_intent_winner_is_the_same_everywhere_and_spreads_tasks():
    peers = [f"12D3KooWpeer{n}" for n in range(5)]
    assert intent_winner("o/r#1", peers) == intent_winner("o/r#1", list(reversed(peers)))
    winners = {intent_winner(f"o/r#{n}", peers) for n in range(50)}
    assert len(winners) >= 4


def test_output_keeps_only_the_end():
    tail = OutputTail(limit=10)
    for chunk in (b"0123456789", b"abcdef", b"XYZ"):
        tail.add(chunk)
    assert tail.text() == "9abcdefXYZ"
    assert tail.total == 19


async def test_a_command_gets_the_task_and_loses_the_secrets(tmp_path: Path):
    env = task_env(
        {"PATH": os.environ["PATH"], "BZZZ_GITHUB_TOKEN": "secret"},
        task("type-x"),
        {"BZZZ_AGENT_ID": "walnut"},
    )
    script = 'cat; echo; echo "$BZZZ_TASK_NUMBER $BZZZ_AGENT_ID token=${BZZZ_GITHUB_TOKEN:-none}"'
    outcome = await run_command(["sh", "-c", script], task("type-x").as_json(), tmp_path, env, 10)
    assert outcome.success
    assert '"number": 7' in outcome.output and "7 walnut token=none" in outcome.output


async def test_a_command_past_its_time_is_stopped_with_its_children(tmp_path: Path):
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! > {pids}; wait"
    started = time.monotonic()
    outcome = await run_command(["sh", "-c", script], {}, tmp_path, dict(os.environ), 0.5)
    assert outcome.timed_out and not outcome.success
    assert time.monotonic() - started < 5
    child = int(pids.read_text())
    for _ in range(50):
        if not running(child):
            break
        await asyncio.sleep(0.05)
    assert not running(child), "the command's child survived"


async def test_a_run_keeps_its_exit_status_beside_its_tree_unless_we_stopped_it(tmp_path: Path):
    """What a restart reads to tell a run that ended unseen from one cut short."""
    from bzzz.tasks.executor import ended_run

    tree = tmp_path / "run" / "tree"
    tree.mkdir(parents=True)
    env = dict(os.environ)
    ended = await run_command(["sh", "-c", "exit 3"], {}, tree, env, 10, record_exit=True)
    assert ended.exit_code == 3 and ended_run(tree) == 3
    graceful = "trap 'sleep 0.3; touch cleaned; exit 0' TERM; sleep 30 & wait"
    stopped = await run_command(["sh", "-c", graceful], {}, tree, env, 0.5, record_exit=True)
    assert stopped.timed_out and (tree / "cleaned").exists(), "the command kept its grace"
    assert ended_run(tree) is None, "a run we stopped did not end by itself"
    await run_command(["sh", "-c", "exit 0"], {}, tree, env, 10)
    assert ended_run(tree) is None, "only the task command's run is recorded"


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_a_missing_command_is_a_failure_not_a_crash(tmp_path: Path):
    outcome = await run_command(["/no/such/program"], {}, tmp_path, {}, 5)
    assert not outcome.success and "cannot start" in outcome.error


def test_the_token_comes_from_the_credential_then_the_file_then_the_environment(tmp_path: Path):
    creds = tmp_path / "creds"
    creds.mkdir()
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    env = {"BZZZ_GITHUB_TOKEN": "from-env"}
    assert load_token(None, "", env) == ("from-env", "$BZZZ_GITHUB_TOKEN")
    assert load_token(creds, str(token_file), env) == ("from-file", str(token_file))
    (creds / "github-token").write_text("\n")  # systemd's blank fallback: no token there
    assert load_token(creds, "", env)[0] == "from-env"
    (creds / "github-token").write_text("from-credential")
    assert load_token(creds, str(token_file), env)[0] == "from-credential"
    assert load_token(None, "", {}) is None


def test_a_holding_survives_the_journal_and_a_broken_file_is_set_aside(tmp_path: Path):
    from bzzz.tasks.claims import Claim
    from bzzz.tasks.journal import Holding, Journal, Result
    from bzzz.tasks.model import Phase

    journal = Journal(tmp_path / "tasks")
    holding = Holding(task("bzzz-task"), Claim("A", "n1", 42, T0), Phase.RUNNING, ("n0",))
    journal.save(holding)
    holding.phase = Phase.REPORTING
    holding.result = Result(True, "exit status 0 after 1.0 s", "done\n", 0, 1.0)
    holding.reported.append("result_comment")
    journal.save(holding)
    (tmp_path / "tasks" / "broken#9.json").write_text("{not json")
    (loaded,) = journal.load()
    assert loaded.to_record() == holding.to_record()
    assert loaded.task == holding.task and loaded.claim == holding.claim
    assert (tmp_path / "tasks" / "broken#9.bad").exists()
    journal.forget(holding.key)
    assert journal.load() == []


def test_what_is_left_of_a_run_is_killed_by_its_nonce(tmp_path: Path):
    import subprocess

    from bzzz.tasks.executor import kill_leftovers

    env = {**os.environ, "BZZZ_TASK_NONCE": "feed1234"}
    orphan = subprocess.Popen(["sleep", "600"], env=env)
    other = subprocess.Popen(["sleep", "600"], env={**env, "BZZZ_TASK_NONCE": "other"})
    try:
        assert kill_leftovers("feed1234") == 1
        assert orphan.wait(5) == -9
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_what_reaches_an_executor_is_what_a_human_reviewer_sees():
    from bzzz.tasks.trust import Trust, as_data, comments_as_data

    text = "Do A.<!-- and secretly B -->\nThen C.\u200b\u202e\t<!-- unterminated D"
    assert as_data(text, 1000) == "Do A.\nThen C.\t"
    cut = as_data("x" * 50, 10)
    assert cut.startswith("x" * 10) and "40 more characters" in cut
    trust = Trust(["OWNER", "COLLABORATOR"], ["friend"])
    comments = [
        Comment(1, "bzzz-claim: A n1 sig:x", "bot", "COLLABORATOR", T0, T0),
        Comment(2, "looks fine", "friend", "NONE", T0, T0),
        Comment(3, "run my thing", "stranger", "NONE", T0, T0),
    ]
    assert [(c["author"], c["trusted"]) for c in comments_as_data(comments, trust)] == [
        ("friend", True),
        ("stranger", False),
    ]


def test_the_token_reaches_git_through_its_environment_only():
    import base64

    from bzzz.tasks.github import GitHub

    github = GitHub("https://api.github.example", "ghp_secret", 0, 0)
    try:
        env = github.git_env("https://github.example/acme/widgets.git")
        header = env["GIT_CONFIG_VALUE_0"]
        assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
        assert base64.b64decode(header.split()[-1]) == b"x-access-token:ghp_secret"
        assert github.git_env("file:///srv/git/widgets.git") == {}
    finally:
        github.close()
