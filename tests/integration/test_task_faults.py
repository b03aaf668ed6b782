"""Exactly once under GitHub's real faults: one test per failure found against a GitHub that
answers like the real one (the issue "Tasks: exactly once under GitHub's real faults" numbers
them). Each one broke a task on the earlier code."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from bzzz.messages import COORDINATION_TOPIC
from bzzz.tasks.executor import processes_with
from tests.fakes.github import FakeGitHub
from tests.integration.github_world import (
    REPO,
    TOKEN,
    entries,
    gated_recorder,
    github_settings,
    markers,
    recorder,
    runs,
    standing_claims,
    start_agents,
)
from tests.integration.harness import Cluster, Daemon, await_until, wait_until
from tests.integration.testpeer import TestPeer


def closed(fake: FakeGitHub, number: int) -> bool:
    return fake.issue(REPO, number)["state"] == "closed"


def held(daemon: Daemon) -> int:
    return int(daemon.status()["tasks"]["held"])


def test_errors_after_the_work_ran_never_release_or_rerun_it(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    """Failures 1, 2 and 3: a rate limit on the result comment, 502s on the re-read and on the
    closing PATCH, while the lease keeps running: the result is reported, once, the task is
    never released or cancelled, the command runs once."""
    number = fake.create_issue(REPO, "Report despite faults", labels=["bzzz-task"])
    ran, gate = tmp_path / "ran", tmp_path / "go"
    daemon = cluster.add(
        "a",
        executor={"command": gated_recorder(ran, gate)},
        **github_settings(fake, lease_timeout=6),
    )
    daemon.start()
    wait_until(lambda: runs(ran, number, ".start"), 30, "the command started")
    fake.secondary_limit_next(1, retry_after=2, method="POST", path=r"/comments$")
    fake.fault(3, 502, method="GET", path=rf"/issues/{number}/comments$")
    fake.secondary_limit_next(1, retry_after=1, status=429, method="DELETE", path=r"/labels/")
    fake.fault(1, 502, method="PATCH", path=rf"/issues/{number}$")
    gate.touch()
    wait_until(lambda: closed(fake, number), 60, "the issue closed")
    assert runs(ran, number) == [daemon.peer_id] and runs(ran, number, ".start") == [daemon.peer_id]
    issue = fake.issue(REPO, number)
    assert "completed" in issue["labels"] and "in-progress" not in issue["labels"]
    assert len(markers(fake, number, "claim")) == 1
    assert [m.split()[3] for m in markers(fake, number, "done")] == ["success"]
    assert markers(fake, number, "release") == []
    assert standing_claims(fake, number) == []
    assert not [e for e in entries(daemon, "task_phase") if e["data"]["phase"] == "lost"]
    assert [e["data"]["phase"] for e in entries(daemon, "task_phase")][-3:] == [
        "running",
        "reporting",
        "done",
    ]


def test_answers_lost_after_the_write_never_write_twice(cluster: Cluster, fake: FakeGitHub):
    """Failure 4: a claim comment, a branch, a pull request and a result comment whose answers
    were lost (a 502 after the write, or a dropped connection) are each found, not written
    again; the task is done once."""
    number = fake.create_issue(REPO, "Add a feature file", labels=["bzzz-task"])
    who = "-c user.name=agent -c user.email=agent@example.invalid"
    script = (
        f"echo feature > feature.txt && git add feature.txt && git {who} commit -qm feature"
        " && git push -q origin HEAD"
    )
    fake.lose_answers(2, method="POST", path=r"/comments$")  # the claim, then the result
    fake.lose_answers(1, method="POST", path=r"/git/refs$", status=None)
    fake.lose_answers(1, method="POST", path=r"/pulls$")
    daemon = cluster.add(
        "a", executor={"command": ["sh", "-c", script], "clone": True}, **github_settings(fake)
    )
    daemon.start()
    wait_until(lambda: "completed" in fake.issue(REPO, number)["labels"], 60, "the task completed")
    assert len(fake.pulls(REPO)) == 1
    assert len(markers(fake, number, "claim")) == 1
    assert len(markers(fake, number, "done")) == 1
    assert standing_claims(fake, number) == []
    lost = [r for r in fake.requests if r["status"] is None or r["status"] == 502]
    assert len(lost) >= 4, "the faults did hit"


def test_a_claim_that_cannot_be_prepared_is_given_back_at_once(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    """Failure 5: labels can only be created with push access; a won claim whose label-add is
    refused was held and renewed forever without running. Now it is released at once, not
    claimed again for a while, and done once the permission is fixed."""
    number = fake.create_issue(REPO, "Needs a new label", labels=["bzzz-task"])
    fake.set_permission(REPO, "bzzz-bot", "triage")  # "in-progress" does not exist yet
    daemon = cluster.add(
        "a", executor={"command": recorder(tmp_path / "ran")}, **github_settings(fake)
    )
    daemon.start()
    wait_until(lambda: markers(fake, number, "release"), 30, "the claim given back")
    wait_until(lambda: held(daemon) == 0, 10, "the task no longer held")
    assert standing_claims(fake, number) == []
    assert not (tmp_path / "ran").exists() or runs(tmp_path / "ran", number) == []
    claims_so_far = len(markers(fake, number, "claim"))
    time.sleep(3)
    assert len(markers(fake, number, "claim")) == claims_so_far, "cooling down, not looping"
    fake.set_permission(REPO, "bzzz-bot", "write")
    wait_until(lambda: closed(fake, number), 40, "done once it may label")
    assert runs(tmp_path / "ran", number) == [daemon.peer_id]


def test_a_run_that_ends_as_its_node_dies_is_reported_not_run_again(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    """The command ends while its daemon is frozen, then the daemon is killed before it could
    note the end: the next start reports that run (its exit status was kept beside the work
    tree) instead of giving the task back to be run a second time."""
    number = fake.create_issue(REPO, "Ends unseen", labels=["bzzz-task"])
    ran, gate = tmp_path / "ran", tmp_path / "go"
    daemon = cluster.add(
        "a", executor={"command": gated_recorder(ran, gate)}, **github_settings(fake)
    )
    daemon.start()
    wait_until(lambda: runs(ran, number, ".start"), 30, "the command started")
    daemon.signal(signal.SIGSTOP)
    gate.touch()
    wait_until(lambda: runs(ran, number), 10, "the command ran to its end")
    its_run = f"BZZZ_PEER_ID={daemon.peer_id}"
    wait_until(lambda: not processes_with(its_run), 10, "the run's processes ended")
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit(5)
    daemon.start()
    wait_until(lambda: closed(fake, number), 30, "the issue closed")
    assert runs(ran, number) == [daemon.peer_id] and runs(ran, number, ".start") == [daemon.peer_id]
    assert markers(fake, number, "release") == []
    assert len(markers(fake, number, "claim")) == 1
    assert [m.split()[3] for m in markers(fake, number, "done")] == ["success"]
    result = fake.comments(REPO, number)[-1]["body"]
    assert "exit status 0 (its output was lost in a restart)" in result
    assert "task_ran_unseen" in daemon.log()


def test_a_holder_cut_off_from_github_stops_and_another_takes_over(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    """Failure 6: a holder that cannot reach GitHub for longer than its lease stops its work
    for good; the agent that takes over names the lapsed claim, so the old holder's claim can
    never stand again; the work is finished once, by the live holder."""
    number = fake.create_issue(REPO, "Long task", labels=["bzzz-task"])
    ran, gate = tmp_path / "ran", tmp_path / "go"
    a = cluster.add(
        "a",
        executor={"command": gated_recorder(ran, gate)},
        **github_settings(fake, f"{TOKEN}-0", lease_timeout=6),
    )
    a.start()
    wait_until(lambda: runs(ran, number, ".start"), 30, "a runs it")
    (a_claim,) = markers(fake, number, "claim")
    fake.fault(100_000, 502, login="bot-0")  # a cannot reach GitHub from now on
    b = cluster.add(
        "b",
        executor={"command": gated_recorder(ran, gate)},
        **github_settings(fake, f"{TOKEN}-1", lease_timeout=6),
    )
    b.start()
    wait_until(lambda: len(runs(ran, number, ".start")) == 2, 40, "b takes over")
    wait_until(
        lambda: any(e["data"]["phase"] == "lost" for e in entries(a, "task_phase")),
        20,
        "a stopped its work",
    )
    gate.touch()
    fake.clear_faults()
    wait_until(lambda: closed(fake, number), 40, "b completes")
    assert runs(ran, number) == [b.peer_id], "finished once, by the live holder"
    claims = markers(fake, number, "claim")
    assert claims[0] == a_claim and f"takes-over:{a_claim.split()[2]}" in claims[1].split()
    assert standing_claims(fake, number) == []
    assert a.process.poll() is None


async def test_a_transferred_or_deleted_issue_is_dropped_not_confused(
    cluster: Cluster, fake: FakeGitHub
):
    """Failure 7: PyGithub follows a transferred issue's 301; the daemon then worked on the
    issue of the *old* repository's name with the *new* number, an unrelated one."""
    fake.create_repo("acme/elsewhere")
    fake.create_issue("acme/elsewhere", "Theirs")
    moved = fake.create_issue(REPO, "Moves away", labels=["bzzz-task"])
    unrelated = fake.create_issue(REPO, "Unrelated")  # number 2, like the moved one's new one
    deleted = fake.create_issue(REPO, "Deleted", labels=["bzzz-task"])
    assert fake.transfer_issue(REPO, moved, "acme/elsewhere") == unrelated == 2
    fake.delete_issue(REPO, deleted)
    settings = github_settings(fake)
    (daemon,) = cluster.full_mesh(["a"], executor={"command": ["true"]}, **settings)
    async with TestPeer() as peer:
        await peer.join(daemon.address)
        for number in (moved, deleted):  # an old announcement, from a peer's stale poll
            body = {
                "type": "task_announcement",
                "from": peer.peer_id,
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                "data": {"repository": REPO, "task_id": number, "title": "stale"},
            }
            await peer.publish(COORDINATION_TOPIC, json.dumps(body).encode())
        await await_until(
            lambda: daemon.log().count("task_dropped") >= 2, 20, "both dropped with a log line"
        )
    assert fake.comments(REPO, unrelated) == [] and fake.issue(REPO, unrelated)["labels"] == []
    assert fake.comments("acme/elsewhere", 2) == []
    assert daemon.process.poll() is None


def test_github_enterprise_without_rate_limiting(cluster: Cluster, fake: FakeGitHub, tmp_path):
    """Failure 8: no X-RateLimit headers and GET /rate_limit 404: the daemon exited 1."""
    fake.ghes = True
    number = fake.create_issue(REPO, "On GHES", labels=["bzzz-task"])
    daemon = cluster.add(
        "a", executor={"command": recorder(tmp_path / "ran")}, **github_settings(fake)
    )
    daemon.start()
    wait_until(lambda: closed(fake, number), 30, "done on GHES")
    assert daemon.status()["tasks"]["github"]["remaining"] is None
    assert daemon.process.poll() is None


def test_a_rate_limit_longer_than_the_lease_hands_the_task_back(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    """Failure 9: a pause longer than what is left of the lease let the lease lapse while the
    work went on. Now the work stops at once, and the claim is given back when GitHub lets us."""
    number = fake.create_issue(REPO, "Held through a rate limit", labels=["bzzz-task"])
    ran, gate = tmp_path / "ran", tmp_path / "go"
    daemon = cluster.add(
        "a",
        executor={"command": gated_recorder(ran, gate)},
        **github_settings(fake, lease_timeout=12),
    )
    daemon.start()
    wait_until(lambda: runs(ran, number, ".start"), 30, "the command started")
    fake.rate_limit_until(int(time.time()) + 15)
    wait_until(
        lambda: any(e["data"]["phase"] == "released" for e in entries(daemon, "task_phase")),
        20,
        "the work handed back",
    )
    gate.touch()
    time.sleep(1)
    assert runs(ran, number) == [], "the command was stopped"
    wait_until(lambda: markers(fake, number, "release"), 30, "the release, once allowed")
    limited = [r for r in fake.requests if r["status"] == 403]
    assert limited and max(r["time"] for r in limited) - min(r["time"] for r in limited) < 2, (
        "one pause for the whole node, not one per call"
    )


def test_one_tasks_crash_gives_its_claim_back_and_the_node_lives(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    """Failure 11: a NotADirectoryError from the work directory stopped the whole daemon and
    left its claim standing, the issue assigned and labelled in progress."""
    number = fake.create_issue(REPO, "Crashes", labels=["bzzz-task"])
    daemon = cluster.add(
        "a",
        executor={"command": recorder(tmp_path / "ran")},
        **github_settings(fake, poll_interval=0.5),
    )
    (daemon.dir / "state").mkdir(parents=True, exist_ok=True)
    (daemon.dir / "state" / "work").write_text("not a directory")
    daemon.start()
    wait_until(lambda: markers(fake, number, "release"), 30, "the claim given back")
    issue = wait_until(
        lambda: (i := fake.issue(REPO, number)) and not i["assignees"] and i, 10, "given back"
    )
    assert "in-progress" not in issue["labels"] and issue["assignees"] == []
    assert standing_claims(fake, number) == []
    assert "task_work_crashed" in daemon.log() and "NotADirectoryError" in daemon.log()
    assert daemon.process.poll() is None
    (daemon.dir / "state" / "work").unlink()
    wait_until(lambda: closed(fake, number), 30, "done once the directory is fixed")


def test_an_app_token_without_get_user_says_why_and_a_named_login_works(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    """Failure 11, second part: App installation tokens get 403 on GET /user; the login was
    retried forever, silently. `github.login` names the account."""
    fake.fault(100_000, 403, method="GET", path="^/user$", message="Resource not accessible")
    number = fake.create_issue(REPO, "For an App", labels=["bzzz-task"])
    stuck = cluster.add("a", **github_settings(fake))
    stuck.start()
    error = wait_until(
        lambda: stuck.status()["tasks"]["github"]["login_error"], 15, "the reason in status"
    )
    assert "403" in error
    assert "github.login" in stuck.log()
    stuck.stop()
    settings = github_settings(fake, login="acme-app[bot]")
    app = cluster.add("b", executor={"command": recorder(tmp_path / "ran")}, **settings)
    app.start()
    wait_until(lambda: closed(fake, number), 30, "done with the named login")
    assert fake.issue(REPO, number)["assignees"] == ["acme-app[bot]"]


def test_a_second_daemon_on_the_same_state_dir_refuses_to_start(cluster: Cluster):
    """Failure 12: two daemons on one state dir ran with one peer id and broke the audit
    log's chain for good."""
    first = cluster.add("a")
    first.start()
    second = cluster.add("b")
    second.config_path.write_text(
        second.config_path.read_text().replace(str(second.dir / "state"), str(first.dir / "state"))
    )
    second.start(wait=False)
    assert second.wait_exit(20) == 1
    assert str(first.dir / "state") in second.log() and f"PID {first.pid}" in second.log()
    assert first.process.poll() is None
    verify = subprocess.run(
        [sys.executable, "-m", "bzzz", "--config", str(first.config_path), "log", "verify"],
        capture_output=True,
        timeout=30,
    )
    assert verify.returncode == 0


def test_sigterm_gives_every_held_task_back(cluster: Cluster, fake: FakeGitHub, tmp_path):
    """On any way out of the daemon, what it holds goes back."""
    numbers = [fake.create_issue(REPO, f"Held {n}", labels=["bzzz-task"]) for n in range(2)]
    ran, gate = tmp_path / "ran", tmp_path / "go"
    daemons = start_agents(cluster, fake, 2, executor={"command": gated_recorder(ran, gate)})
    wait_until(lambda: all(runs(ran, n, ".start") for n in numbers), 30, "both running")
    for daemon in daemons:
        daemon.signal(signal.SIGTERM)
    for daemon in daemons:
        assert daemon.wait_exit(30) == 0
    for number in numbers:
        assert standing_claims(fake, number) == []
        assert "in-progress" not in fake.issue(REPO, number)["labels"]
