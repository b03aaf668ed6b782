"""GitHub issues as tasks, end to end: daemons against the stateful GitHub fake over HTTP."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.fakes.github import FakeGitHub
from tests.integration.github_world import (
    REPO,
    TOKEN,
    entries,
    github_settings,
    recorder,
    standing_claims,
    start_agents,
)
from tests.integration.harness import Cluster, wait_until


def test_one_agent_claims_executes_and_reports(cluster: Cluster, fake: FakeGitHub, tmp_path: Path):
    number = fake.create_issue(
        REPO, "Write the widget file", body="Please.", labels=["bzzz-task", "priority-2"]
    )
    daemon = cluster.add(
        "a", executor={"command": recorder(tmp_path / "ran")}, **github_settings(fake)
    )
    daemon.start()

    issue = wait_until(
        lambda: (i := fake.issue(REPO, number))["state"] == "closed" and i, 30, "the issue closed"
    )
    assert "completed" in issue["labels"] and "in-progress" not in issue["labels"]
    assert issue["assignees"] == ["bzzz-bot"]
    assert (tmp_path / "ran" / str(number)).read_text().split() == [daemon.peer_id]
    result = fake.comments(REPO, number)[-1]["body"]
    assert result.startswith(f"bzzz-done: {daemon.peer_id} ")
    assert "exit status 0" in result and "ran Write the widget file" in result
    assert "without a sandbox (`executor.sandbox = none`)" in result, "the harness opts out"
    assert "NO SANDBOX" in daemon.cli("status")
    assert standing_claims(fake, number) == []
    for step in ("task_announced", "task_claimed", "task_completed"):
        assert [e["data"]["task"] for e in entries(daemon, step)] == [f"{REPO}#{number}"], step
    tasks = daemon.cli("tasks", "--json")
    assert tasks[0]["task"] == f"{REPO}#{number}" and tasks[0]["phase"] == "completed"
    assert TOKEN not in daemon.log()


def test_a_failing_command_resets_the_task_until_attempts_run_out(
    cluster: Cluster, fake: FakeGitHub
):
    number = fake.create_issue(REPO, "Impossible", labels=["bzzz-task"])
    daemon = cluster.add(
        "a",
        executor={"command": ["sh", "-c", "echo no way; exit 3"]},
        **github_settings(fake, max_attempts=2),
    )
    daemon.start()
    issue = wait_until(
        lambda: (i := fake.issue(REPO, number)) and "bzzz-failed" in i["labels"] and i,
        30,
        "the task given up after two attempts",
    )
    assert issue["state"] == "open" and "in-progress" not in issue["labels"]
    failures = [c["body"] for c in fake.comments(REPO, number) if c["body"].startswith("bzzz-done")]
    assert len(failures) == 2 and all("failure" in f.splitlines()[0] for f in failures)
    assert "exit status 3" in failures[0] and "no way" in failures[0]
    assert len(entries(daemon, "task_failed")) == 2


def _race(cluster: Cluster, fake: FakeGitHub, tmp_path: Path, meshed: bool) -> None:
    numbers = [fake.create_issue(REPO, f"Task {n}", labels=["bzzz-task"]) for n in range(30)]
    start_agents(cluster, fake, 5, meshed, executor={"command": recorder(tmp_path / "ran")})

    wait_until(
        lambda: all(fake.issue(REPO, n)["state"] == "closed" for n in numbers),
        120,
        "all 30 issues done",
    )
    for number in numbers:
        ran = (tmp_path / "ran" / str(number)).read_text().split()
        assert len(ran) == 1, f"issue {number} executed by {ran}"
        assert standing_claims(fake, number) == [], f"issue {number}"
        done = [c for c in fake.comments(REPO, number) if c["body"].startswith("bzzz-done")]
        assert len(done) == 1
    executed_by = {(tmp_path / "ran" / str(n)).read_text().strip() for n in numbers}
    if meshed:
        assert len(executed_by) >= 3, "P2P intents spread the work"


def test_thirty_issues_five_daemons_each_executed_once(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    _race(cluster, fake, tmp_path, meshed=True)


def test_thirty_issues_five_deaf_daemons_still_once_settled_by_github(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    _race(cluster, fake, tmp_path, meshed=False)


def poll_logins(fake: FakeGitHub, since: float) -> set[str]:
    return {
        r["token_login"]
        for r in fake.requests
        if r["time"] >= since and r["method"] == "GET" and r["path"].endswith("/issues")
    }


def test_when_the_poller_dies_another_node_polls_within_two_intervals(
    cluster: Cluster, fake: FakeGitHub
):
    daemons = start_agents(cluster, fake, 3, github={"poll_interval": 2})
    logins = {f"bot-{n}": d for n, d in enumerate(daemons)}
    wait_until(
        lambda: (
            sum(d.status()["tasks"]["poller"] for d in daemons) == 1
            and all(len(d.status()["connected"]) == 2 for d in daemons)
        ),
        30,
        "one poller",
    )
    since = time.time() + 3  # after the mesh settled
    time.sleep(5)
    pollers = poll_logins(fake, since)
    assert len(pollers) == 1, f"only the poller polls, not {pollers}"
    poller = logins[pollers.pop()]

    poller.signal(signal.SIGKILL)
    poller.wait_exit(5)
    killed = time.time()
    others = wait_until(lambda: poll_logins(fake, killed), 2 * 2 + 2, "a new poller")
    assert logins[others.pop()] is not poller


def test_a_dead_holders_lease_lapses_and_another_takes_over(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    number = fake.create_issue(REPO, "Long task", labels=["bzzz-task"])
    slow = cluster.add(
        "a",
        executor={"command": ["sleep", "600"]},
        **github_settings(fake, f"{TOKEN}-0", lease_timeout=6),
    )
    slow.start()
    wait_until(lambda: "in-progress" in fake.issue(REPO, number)["labels"], 30, "a holds it")
    quick = cluster.add(
        "b",
        executor={"command": recorder(tmp_path / "ran")},
        bootstrap=[slow.address],
        **github_settings(fake, f"{TOKEN}-1", lease_timeout=6),
    )
    quick.start()
    wait_until(lambda: (r := quick.peer(slow.peer_id)) and r["connected"], 15, "b meets a")
    slow.signal(signal.SIGKILL)
    slow.wait_exit(5)
    issue = wait_until(
        lambda: (i := fake.issue(REPO, number))["state"] == "closed" and i,
        60,
        "b takes over and completes",
    )
    assert "completed" in issue["labels"]
    bodies = [c["body"] for c in fake.comments(REPO, number)]
    claims = [b for b in bodies if b.startswith("bzzz-claim:")]
    assert [c.split()[1] for c in claims] == [slow.peer_id, quick.peer_id]
    assert "Taking over" in claims[1]
    # The lapsed claim is named: its holder cannot come back by renewing it late.
    slow_nonce = claims[0].split()[2]
    assert f"takes-over:{slow_nonce}" in claims[1].splitlines()[0].split()
    assert (tmp_path / "ran" / str(number)).read_text().split() == [quick.peer_id]
    assert entries(quick, "task_taken_over")[0]["data"]["previous"] == [slow.peer_id]


def test_github_faults_back_off_and_never_double_claim(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    daemons = start_agents(cluster, fake, 2, executor={"command": recorder(tmp_path / "ran")})
    wait_until(lambda: fake.counted_requests() > 2, 15, "the daemons talking to GitHub")
    # While they work: the hourly budget exhausted for 4 s, then a burst of 502s and slow answers.
    fake.rate_limit_until(int(time.time()) + 4)
    numbers = [fake.create_issue(REPO, f"Task {n}", labels=["bzzz-task"]) for n in range(6)]
    wait_until(lambda: any(r["status"] == 403 for r in fake.requests), 15, "a rate-limit 403")
    fake.fail_next(6, 502)
    fake.slow_next(4, 2.0)
    wait_until(
        lambda: all(fake.issue(REPO, n)["state"] == "closed" for n in numbers),
        90,
        "every task done despite the faults",
    )
    for number in numbers:
        assert len((tmp_path / "ran" / str(number)).read_text().split()) == 1
        assert standing_claims(fake, number) == []
    logs = "".join(d.log() for d in daemons)
    assert "github_rate_limited" in logs
    limited = [r for r in fake.requests if r["status"] == 403]
    assert limited, "the fake did refuse requests"
    # Backed off as the headers said: after a 403, that login waited for the reset.
    for login in {r["token_login"] for r in limited}:
        last_refused = max(r["time"] for r in limited if r["token_login"] == login)
        first_refused = min(r["time"] for r in limited if r["token_login"] == login)
        assert last_refused - first_refused < 1, f"{login} hammered a rate-limited API"
    assert all(d.process is not None and d.process.poll() is None for d in daemons)
    assert TOKEN not in logs


def test_commits_pushed_to_the_task_branch_become_a_pull_request(
    cluster: Cluster, fake: FakeGitHub
):
    number = fake.create_issue(REPO, "Add a feature file", labels=["bzzz-task"])
    who = "-c user.name=agent -c user.email=agent@example.invalid"
    script = (
        f"echo feature > feature.txt && git add feature.txt && git {who} commit -qm feature"
        " && git push -q origin HEAD && echo pushed $BZZZ_TASK_BRANCH"
    )
    daemon = cluster.add(
        "a", executor={"command": ["sh", "-c", script], "clone": True}, **github_settings(fake)
    )
    daemon.start()
    [pull] = wait_until(lambda: fake.pulls(REPO), 30, "a pull request")
    branch = f"bzzz/task-{number}-agent-a"
    assert (pull["head"], pull["base"]) == (branch, "main")
    assert f"Closes #{number}" in pull["body"]
    issue = wait_until(
        lambda: (i := fake.issue(REPO, number)) and "completed" in i["labels"] and i,
        15,
        "the issue marked completed",
    )
    assert issue["state"] == "open", "the pull request closes it when merged"
    result = fake.comments(REPO, number)[-1]["body"]
    assert "Pull request:" in result and f"pushed {branch}" in result


def test_a_finished_task_shows_finished_until_its_issue_is_reopened(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    number = fake.create_issue(REPO, "Write the widget file", labels=["bzzz-task"])
    daemon = cluster.add(
        "a", executor={"command": recorder(tmp_path / "ran")}, **github_settings(fake)
    )
    daemon.start()
    key = f"{REPO}#{number}"

    def phase() -> str:
        rows = [t for t in daemon.cli("tasks", "--json") if t["task"] == key]
        return rows[0]["phase"] if rows else ""

    wait_until(lambda: phase() == "completed", 30, "the task completed")
    fake.update_issue(REPO, number, state="open", labels=["bzzz-task"])
    wait_until(lambda: phase() not in ("completed", ""), 30, "the board saw it reopened")
