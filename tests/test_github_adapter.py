"""Our GitHub adapter against the strict fake over HTTP: GitHub's documented faults, one by one
(each of these once broke exactly-once, see "Tasks: exactly once under GitHub's real faults")."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bzzz.tasks.github import GitHub, Gone, Moved, RateLimited, Refused, Transient
from tests.fakes.github import FakeGitHub

REPO = "acme/widgets"
TOKEN = "ghp_adapter_0123456789"


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeGitHub]:
    with FakeGitHub(tmp_path / "github", users={TOKEN: "bzzz-bot"}) as server:
        server.create_repo(REPO)
        yield server
        assert server.internal_errors == []


@pytest.fixture
async def github(fake: FakeGitHub) -> AsyncIterator[GitHub]:
    client = GitHub(fake.url, TOKEN, request_interval=0, write_interval=0)
    yield client
    client.close()


def push_a_commit(origin: Path, branch: str, clone: Path) -> None:
    subprocess.run(["git", "clone", "-q", "-b", branch, str(origin), str(clone)], check=True)
    (clone / "f.txt").write_text("x\n")
    who = ["-c", "user.name=a", "-c", "user.email=a@example.invalid"]
    subprocess.run(["git", "-C", str(clone), "add", "f.txt"], check=True)
    subprocess.run(["git", "-C", str(clone), *who, "commit", "-qm", "f"], check=True)
    subprocess.run(["git", "-C", str(clone), "push", "-q", "origin", "HEAD"], check=True)


def requests(fake: FakeGitHub, method: str, suffix: str) -> list[dict]:
    return [r for r in fake.requests if r["method"] == method and r["path"].endswith(suffix)]


async def test_a_comment_whose_answer_was_lost_is_found_not_written_again(
    fake: FakeGitHub, github: GitHub
) -> None:
    number = fake.create_issue(REPO, "Task")
    fake.lose_answers(1, method="POST", path=r"/comments$")  # a 502 after the write
    fake.lose_answers(1, method="POST", path=r"/comments$", status=None)  # a dropped answer
    first = await github.comment(REPO, number, "bzzz-claim: A n1")
    second = await github.comment(REPO, number, "bzzz-done: A n1 success")
    bodies = [c["body"] for c in fake.comments(REPO, number)]
    assert bodies == ["bzzz-claim: A n1", "bzzz-done: A n1 success"]
    assert (first.body, second.body) == tuple(bodies)
    assert len(requests(fake, "POST", "/comments")) == 2, "read, never posted twice"


async def test_a_pull_request_whose_answer_was_lost_is_found(
    fake: FakeGitHub, github: GitHub, tmp_path: Path
) -> None:
    base = await github.branch_sha(REPO, "main")
    assert base is not None
    await github.create_branch(REPO, "bzzz/task-1-a", base)
    await github.create_branch(REPO, "bzzz/task-1-a", base)  # 422 "already exists": done
    await asyncio.to_thread(push_a_commit, fake.git_dir(REPO), "bzzz/task-1-a", tmp_path / "c")
    fake.lose_answers(1, method="POST", path=r"/pulls$")
    url = await github.create_pull(REPO, "Task", "Closes #1", "bzzz/task-1-a", "main")
    again = await github.create_pull(REPO, "Task", "Closes #1", "bzzz/task-1-a", "main")
    assert url == again and len(fake.pulls(REPO)) == 1


async def test_rate_limits_pause_every_call_as_github_documents(
    fake: FakeGitHub, github: GitHub
) -> None:
    number = fake.create_issue(REPO, "Task")
    fake.secondary_limit_next(1, retry_after=7)
    with pytest.raises(RateLimited):
        await github.request("GET", f"/repos/{REPO}/issues/{number}", "read")
    assert 6 <= github.paused_for() <= 7
    github._resume_at = 0.0  # (the test does not wait the pause out)

    for status in (429, 403):  # no Retry-After, remaining above 0: a minute, then doubling
        fake.secondary_limit_next(1, retry_after=None, status=status)
        with pytest.raises(RateLimited):
            await github.request("GET", f"/repos/{REPO}/issues/{number}", "read")
        github._resume_at = 0.0
    assert github.budget()["rate_limited"] == 3
    fake.secondary_limit_next(1, retry_after=None)
    with pytest.raises(RateLimited):
        await github.request("GET", f"/repos/{REPO}/issues/{number}", "read")
    assert 230 <= github.paused_for() <= 240, "60, 120, then 240 s"
    github._resume_at = 0.0

    fake.rate_limit_until(int(time.time()) + 900)  # primary: remaining 0 until the reset
    with pytest.raises(RateLimited):
        await github.request("GET", f"/repos/{REPO}/issues/{number}", "read")
    assert 890 <= github.paused_for() <= 901
    assert not github.can_poll()
    before = len(fake.requests)
    github._resume_at = time.monotonic() + 0.3
    fake.rate_limit_until(0)
    started = time.monotonic()
    await github.request("GET", f"/repos/{REPO}/issues/{number}", "read")
    assert time.monotonic() - started >= 0.25, "the call waited at the gate"
    assert len(fake.requests) == before + 1


async def test_a_plain_forbidden_is_refused_not_a_pause(fake: FakeGitHub, github: GitHub) -> None:
    number = fake.create_issue(REPO, "Task")
    fake.set_permission(REPO, "bzzz-bot", "read")
    with pytest.raises(Refused) as refused:
        await github.add_labels(REPO, number, "in-progress")
    assert refused.value.status == 403 and github.paused_for() == 0


async def test_enterprise_server_without_rate_limiting_works(
    fake: FakeGitHub, github: GitHub
) -> None:
    fake.ghes = True
    fake.create_issue(REPO, "Task", labels=["bzzz-task"])
    tasks = await github.poll(REPO, "bzzz-task")
    assert tasks is not None and [t.title for t in tasks] == ["Task"]
    assert github.can_poll() and github.budget()["remaining"] is None


async def test_each_page_keeps_its_own_etag(fake: FakeGitHub, github: GitHub) -> None:
    for n in range(150):
        fake.create_issue(REPO, f"Task {n}", labels=["bzzz-task"])
    first = await github.poll(REPO, "bzzz-task")
    assert first is not None and len(first) == 150
    counted = fake.counted_requests()
    assert await github.poll(REPO, "bzzz-task") is None, "nothing changed"
    assert fake.counted_requests() == counted, "two pages, two free 304s"
    assert [r["status"] for r in fake.requests[-2:]] == [304, 304]
    fake.update_issue(REPO, 140, title="Renamed")  # on the second page only
    changed = await github.poll(REPO, "bzzz-task")
    assert changed is not None and changed[139].title == "Renamed"
    assert [r["status"] for r in fake.requests[-2:]] == [304, 200]


async def test_a_long_comment_thread_is_read_whole(fake: FakeGitHub, github: GitHub) -> None:
    number = fake.create_issue(REPO, "Busy")
    for n in range(130):
        fake.add_comment(REPO, number, f"comment {n}")
    fake.add_comment(REPO, number, "bzzz-claim: A n1")
    comments = await github.comments(REPO, number)
    assert len(comments) == 131 and comments[-1].body == "bzzz-claim: A n1"


async def test_moved_and_gone_issues_are_not_mistaken_for_others(
    fake: FakeGitHub, github: GitHub
) -> None:
    fake.create_repo("acme/elsewhere")
    fake.create_issue("acme/elsewhere", "Theirs")
    task = fake.create_issue(REPO, "Ours")
    fake.create_issue(REPO, "Unrelated, number 2")
    fake.transfer_issue(REPO, task, "acme/elsewhere")  # becomes acme/elsewhere#2
    with pytest.raises(Moved) as moved:
        await github.issue(REPO, task)
    assert (moved.value.repository, moved.value.number) == ("acme/elsewhere", 2)
    gone = fake.create_issue(REPO, "Deleted")
    fake.delete_issue(REPO, gone)
    with pytest.raises(Gone):
        await github.issue(REPO, gone)
    assert fake.comments(REPO, 2) == [] and fake.issue(REPO, 2)["labels"] == []


async def test_githubs_clock_is_read_from_its_answers(fake: FakeGitHub, github: GitHub) -> None:
    fake.clock_offset = -7200.0
    await github.request("GET", f"/repos/{REPO}", "read")
    assert abs(github.now().timestamp() - (time.time() - 7200)) < 2


async def test_a_login_named_in_the_config_needs_no_get_user(fake: FakeGitHub) -> None:
    fake.fault(
        50, 403, method="GET", path="^/user$", message="Resource not accessible by integration"
    )
    app = GitHub(fake.url, TOKEN, 0, 0)
    try:
        with pytest.raises(Refused):
            await app.login()
    finally:
        app.close()
    named = GitHub(fake.url, TOKEN, 0, 0, login="acme-bot[bot]")
    try:
        assert await named.login() == "acme-bot[bot]"
    finally:
        named.close()


async def test_server_errors_are_retried_with_backoff(fake: FakeGitHub, github: GitHub) -> None:
    number = fake.create_issue(REPO, "Task")
    fake.fail_next(2, 502)
    fake.fault(1, 502, method="PATCH")
    await github.close_issue(REPO, number)  # a 502 on the closing PATCH: asked again
    assert fake.issue(REPO, number)["state"] == "closed"
    fake.fail_next(10, 503)
    with pytest.raises(Transient):
        await github.request("GET", f"/repos/{REPO}/issues/{number}", "read")
