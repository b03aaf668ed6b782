"""Task model, claim reading, the executor and token lookup, without GitHub."""

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bzzz.tasks.claims import intent_winner, read_claims
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


def test_the_oldest_live_claim_stands_until_ended_or_lapsed():
    lease = timedelta(minutes=10)
    comments = [
        comment(1, "bzzz-claim: A n1", 0),
        comment(2, "bzzz-claim: B n2", 1),
        comment(3, "a human talking", 2),
    ]
    assert read_claims(comments, T0 + timedelta(minutes=3), lease).standing.peer == "A"
    ended = [*comments, comment(4, "bzzz-done: A n1 failure\n\nexit 3", 4)]
    state = read_claims(ended, T0 + timedelta(minutes=5), lease)
    assert (state.standing.peer, state.failures, state.succeeded) == ("B", 1, False)
    # A's claim lapses unless renewed (edited) within the lease.
    assert read_claims(comments, T0 + timedelta(minutes=10.5), lease).standing.peer == "B"
    renewed = [comment(1, "bzzz-claim: A n1", 0, renewed=9), comments[1]]
    assert read_claims(renewed, T0 + timedelta(minutes=10.5), lease).standing.peer == "A"
    done = [*comments, comment(4, "bzzz-done: A n1 success", 4)]
    assert read_claims(done, T0 + timedelta(minutes=5), lease).succeeded


def test_a_lapsed_claim_named_by_a_takeover_never_stands_again():
    """Failure 6: A lapses, C takes over naming A's claim; A's late edit went through, which
    would make A's older comment the standing claim again, but A's nonce is ended."""
    lease = timedelta(minutes=10)
    lapsed = [comment(1, "bzzz-claim: A n1", 0)]
    state = read_claims(lapsed, T0 + timedelta(minutes=11), lease)
    assert state.standing is None and [c.nonce for c in state.lapsed] == ["n1"]
    taken = [
        comment(1, "bzzz-claim: A n1", 0, renewed=12),  # A's late renewal
        comment(2, "bzzz-claim: C n3 takes-over:n1", 11),
    ]
    state = read_claims(taken, T0 + timedelta(minutes=12.5), lease)
    assert state.standing is not None and state.standing.peer == "C"
    assert "n1" in state.ended and "n1" not in state.marked and state.lapsed == ()


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
    outcome = await run_command(["sh", "-c", script], task("type-x"), tmp_path, env, 10)
    assert outcome.success
    assert '"number": 7' in outcome.output and "7 walnut token=none" in outcome.output


async def test_a_command_past_its_time_is_stopped_with_its_children(tmp_path: Path):
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! > {pids}; wait"
    started = time.monotonic()
    outcome = await run_command(["sh", "-c", script], task(), tmp_path, dict(os.environ), 0.5)
    assert outcome.timed_out and not outcome.success
    assert time.monotonic() - started < 5
    child = int(pids.read_text())
    for _ in range(50):
        if not running(child):
            break
        await asyncio.sleep(0.05)
    assert not running(child), "the command's child survived"


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_a_missing_command_is_a_failure_not_a_crash(tmp_path: Path):
    outcome = await run_command(["/no/such/program"], task(), tmp_path, {}, 5)
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
