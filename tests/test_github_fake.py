"""Tests of tests/fakes/github.py, driven through PyGithub exactly as a client would."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

import github
import pytest
from github import Auth, Github
from github.GithubException import (
    BadCredentialsException,
    GithubException,
    RateLimitExceededException,
    UnknownObjectException,
)

from tests.fakes.github import FakeGitHub

REPO = "acme/widgets"
ISSUES = f"/repos/{REPO}/issues"


@pytest.fixture
def fake(tmp_path: pathlib.Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path) as server:
        server.create_repo(REPO)
        yield server
        assert server.internal_errors == []


def client(fake: FakeGitHub, token: str | None = "test-token") -> Github:
    auth = Auth.Token(token) if token is not None else None
    # retry=None so faults are visible; PyGithub's own client-side pacing (0.25 s between requests,
    # 1 s between writes by default) is switched off only to keep the suite fast.
    return Github(
        base_url=fake.url,
        auth=auth,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )


@pytest.fixture
def gh(fake: FakeGitHub) -> Iterator[Github]:
    with client(fake) as api:
        yield api


@pytest.fixture
def repo(gh: Github) -> github.Repository.Repository:
    return gh.get_repo(REPO)


def git(*args: str, cwd: pathlib.Path | None = None) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    identity = ["-c", "user.name=Test Agent", "-c", "user.email=agent@example.invalid"]
    proc = subprocess.run(
        ["git", *identity, *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


# ------------------------------------------------------------------------ users, repos, headers


def test_user_repository_and_common_headers(fake: FakeGitHub, gh: Github) -> None:
    me = gh.get_user()
    assert (me.login, me.id) == ("bzzz-bot", 1)

    repo = gh.get_repo(REPO)
    assert repo.full_name == REPO
    assert repo.name == "widgets"
    assert repo.owner.login == "acme"
    assert repo.default_branch == "main"
    assert repo.clone_url == fake.git_dir(REPO).as_uri()
    assert repo.clone_url.startswith("file:///")
    assert repo.html_url == f"{fake.url}/{REPO}"

    status, first, _ = gh.requester.requestJson("GET", f"/repos/{REPO}")
    status2, second, _ = gh.requester.requestJson("GET", f"/repos/{REPO}")
    assert status == status2 == 200
    assert parsedate_to_datetime(first["date"]).tzinfo is not None
    assert first["x-ratelimit-limit"] == "5000"
    assert first["x-ratelimit-resource"] == "core"
    assert int(first["x-ratelimit-reset"]) > time.time()
    assert int(second["x-ratelimit-remaining"]) == int(first["x-ratelimit-remaining"]) - 1
    assert int(second["x-ratelimit-used"]) == int(first["x-ratelimit-used"]) + 1
    assert first["etag"] == second["etag"]

    with pytest.raises(UnknownObjectException):
        gh.get_repo("acme/missing")


def test_unknown_routes_answer_404(gh: Github, repo: github.Repository.Repository) -> None:
    status, headers, body = gh.requester.requestJson("GET", "/no/such/endpoint")
    assert status == 404
    assert "Not Found" in body and "documentation_url" in body
    assert "date" in headers and "x-ratelimit-remaining" in headers
    with pytest.raises(UnknownObjectException):
        repo.get_issue(999)
    with pytest.raises(UnknownObjectException):
        repo.get_git_ref("heads/missing")
    with pytest.raises(UnknownObjectException):
        repo.get_branch("missing")


def test_bad_credentials_are_401_and_do_not_count(fake: FakeGitHub, gh: Github) -> None:
    gh.get_user().login  # noqa: B018 - one counted request for contrast
    counted = fake.counted_requests()

    with client(fake, "wrong-token") as bad, pytest.raises(BadCredentialsException) as exc:
        bad.get_repo(REPO)
    assert exc.value.status == 401
    assert exc.value.data["message"] == "Bad credentials"
    assert fake.requests[-1]["status"] == 401
    assert fake.requests[-1]["counted"] is False
    assert fake.requests[-1]["token_login"] is None

    with client(fake, None) as anonymous:
        with pytest.raises(BadCredentialsException):
            anonymous.get_repo(REPO)
        status, headers, _ = anonymous.requester.requestJson("GET", "/user")
        assert status == 401
        assert "date" in headers and "x-ratelimit-limit" in headers
        # "Bearer" works as well as "token".
        status, headers, _ = anonymous.requester.requestJson(
            "GET", "/user", headers={"Authorization": "Bearer test-token"}
        )
    assert status == 200
    assert "date" in headers
    assert fake.counted_requests() == counted + 1


# ---------------------------------------------------------------------------- issues and labels


def test_issue_fields_and_edits_round_trip(
    fake: FakeGitHub, repo: github.Repository.Repository
) -> None:
    number = fake.create_issue(REPO, "Task one", "Do the thing", labels=["bzzz-task"])
    issue = repo.get_issue(number)
    assert issue.number == number == 1
    assert (issue.title, issue.body, issue.state) == ("Task one", "Do the thing", "open")
    assert [label.name for label in issue.labels] == ["bzzz-task"]
    assert issue.labels[0].color == "ededed"
    assert issue.user.login == "acme"  # the owner, unless another user is named
    assert issue.assignees == []
    assert issue.comments == 0
    assert issue.pull_request is None
    assert issue.html_url == f"{fake.url}/{REPO}/issues/1"
    assert issue.created_at.tzinfo is not None
    assert issue.created_at == issue.updated_at
    assert issue.closed_at is None

    issue.edit(title="Task 1", body="Do it now", labels=["bzzz-task", "bzzz-claimed"])
    issue.edit(assignees=["bzzz-bot"])
    snap = fake.issue(REPO, number)
    assert snap["title"] == "Task 1"
    assert snap["body"] == "Do it now"
    assert snap["labels"] == ["bzzz-task", "bzzz-claimed"]
    assert snap["assignees"] == ["bzzz-bot"]
    assert issue.updated_at >= issue.created_at  # PyGithub updated the object from the response

    issue.edit(state="closed", state_reason="completed")
    snap = fake.issue(REPO, number)
    assert (snap["state"], snap["state_reason"], snap["closed_by"]) == (
        "closed",
        "completed",
        "bzzz-bot",
    )
    assert snap["closed_at"] is not None
    assert issue.closed_at is not None
    assert issue.closed_at.strftime("%Y-%m-%dT%H:%M:%SZ") == snap["closed_at"]

    issue.edit(state="open")
    snap = fake.issue(REPO, number)
    assert (snap["state"], snap["closed_at"], snap["state_reason"]) == ("open", None, "reopened")

    with pytest.raises(GithubException) as exc:
        issue.edit(state="finished")
    assert exc.value.status == 422


def test_labels_round_trip(
    fake: FakeGitHub, gh: Github, repo: github.Repository.Repository
) -> None:
    number = fake.create_issue(REPO, "Task", labels=["bzzz-task"])
    issue = repo.get_issue(number)

    issue.add_to_labels("bzzz-claimed", "area/p2p")
    issue.add_to_labels("bzzz-claimed")  # adding twice is a no-op
    assert fake.issue(REPO, number)["labels"] == ["bzzz-task", "bzzz-claimed", "area/p2p"]
    created = repo.get_label("bzzz-claimed")  # auto-created on first use
    assert (created.name, created.color) == ("bzzz-claimed", "ededed")
    assert repo.get_label("area/p2p").name == "area/p2p"

    gh.requester.requestJsonAndCheck(
        "POST", f"{ISSUES}/{number}/labels", input={"labels": ["Bzzz-Task"]}
    )  # the object form, and names match case-insensitively
    assert fake.issue(REPO, number)["labels"] == ["bzzz-task", "bzzz-claimed", "area/p2p"]

    issue.remove_from_labels("bzzz-task")
    issue.remove_from_labels("area/p2p")  # a slash in the name, as PyGithub sends it
    assert fake.issue(REPO, number)["labels"] == ["bzzz-claimed"]

    with pytest.raises(GithubException) as exc:
        issue.remove_from_labels("bzzz-task")
    assert exc.value.status == 404
    assert exc.value.data["message"] == "Label does not exist"

    issue.set_labels("needs review", "bzzz-done")
    assert fake.issue(REPO, number)["labels"] == ["needs review", "bzzz-done"]
    assert [label.name for label in issue.get_labels()] == ["needs review", "bzzz-done"]

    issue.delete_labels()
    assert fake.issue(REPO, number)["labels"] == []
    assert {label.name for label in repo.get_labels()} >= {"bzzz-task", "needs review"}
    with pytest.raises(UnknownObjectException):
        repo.get_label("never-used")


def test_assignees_round_trip(fake: FakeGitHub, repo: github.Repository.Repository) -> None:
    number = fake.create_issue(REPO, "Task")
    issue = repo.get_issue(number)
    issue.add_to_assignees("bzzz-bot", "alice")
    assert fake.issue(REPO, number)["assignees"] == ["bzzz-bot", "alice"]
    assert [user.login for user in issue.assignees] == ["bzzz-bot", "alice"]
    assert repo.get_issue(number).raw_data["assignee"]["login"] == "bzzz-bot"

    issue.remove_from_assignees("bzzz-bot")
    assert fake.issue(REPO, number)["assignees"] == ["alice"]
    assert [user.login for user in repo.get_issue(number).assignees] == ["alice"]


# ------------------------------------------------------------------------------------ comments


def test_comments_round_trip_and_ordering(
    fake: FakeGitHub, repo: github.Repository.Repository
) -> None:
    number = fake.create_issue(REPO, "Task")
    issue = repo.get_issue(number)
    first = issue.create_comment("claimed by bzzz-bot")
    human = fake.add_comment(REPO, number, "please hurry")
    last = issue.create_comment("done")

    assert first.user.login == "bzzz-bot"
    assert first.body == "claimed by bzzz-bot"
    assert first.html_url == f"{fake.url}/{REPO}/issues/{number}#issuecomment-{first.id}"
    assert first.created_at == first.updated_at

    snap = fake.comments(REPO, number)
    assert [c["id"] for c in snap] == [first.id, human, last.id]
    assert first.id < human < last.id
    created = [c["created_at"] for c in snap]
    # One-second stamps, as GitHub's: in order, but three comments in one second tie.
    assert created == sorted(created)
    assert [c["user"] for c in snap] == ["bzzz-bot", "someone", "bzzz-bot"]

    listed = list(repo.get_issue(number).get_comments())
    assert [(c.id, c.body, c.user.login) for c in listed] == [
        (first.id, "claimed by bzzz-bot", "bzzz-bot"),
        (human, "please hurry", "someone"),
        (last.id, "done", "bzzz-bot"),
    ]
    fresh = repo.get_issue(number)
    assert fresh.comments == 3
    assert fresh.updated_at == listed[-1].created_at  # a new comment bumps the issue

    fake.clock_offset = 2.0  # GitHub's clock moved on
    first.edit("claimed by bzzz-bot (edited)")
    assert first.updated_at > first.created_at
    edited = fake.comments(REPO, number)[0]
    assert edited["body"] == "claimed by bzzz-bot (edited)"
    assert edited["updated_at"] > edited["created_at"]
    assert issue.get_comment(first.id).body == "claimed by bzzz-bot (edited)"

    last.delete()
    assert [c["id"] for c in fake.comments(REPO, number)] == [first.id, human]
    assert repo.get_issue(number).comments == 2
    with pytest.raises(UnknownObjectException):
        issue.get_comment(last.id)
    assert issue.create_comment("again").id > last.id  # ids never reused


def test_concurrent_clients_get_unique_increasing_ids(fake: FakeGitHub) -> None:
    number = fake.create_issue(REPO, "Busy task")
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            with client(fake) as api:
                issue = api.get_repo(REPO).get_issue(number)
                for round_ in range(5):
                    issue.create_comment(f"worker {index} round {round_}")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert errors == []

    snap = fake.comments(REPO, number)
    assert len(snap) == 40
    ids = [c["id"] for c in snap]
    assert ids == sorted(set(ids))
    created = [c["created_at"] for c in snap]
    assert created == sorted(created)  # ties allowed: ids, not stamps, order comments
    assert fake.issue(REPO, number)["comments"] == 40
    with client(fake) as api:
        listed = api.get_repo(REPO).get_issue(number).get_comments()  # two pages of 30
        assert [c.id for c in listed] == ids


# ---------------------------------------------------------------------------------- pagination


def test_pagination_over_120_issues(
    fake: FakeGitHub, gh: Github, repo: github.Repository.Repository
) -> None:
    for n in range(1, 121):
        labels = ["bzzz-task", "urgent"] if n % 7 == 0 else ["bzzz-task"]
        assert fake.create_issue(REPO, f"Task {n}", labels=labels) == n

    before = len(fake.requests)
    issues = list(repo.get_issues(state="open"))
    assert [i.number for i in issues] == list(range(120, 0, -1))  # created, newest first
    pages = [r for r in fake.requests[before:] if r["path"] == ISSUES]
    assert len(pages) == 4  # 30 per page
    assert [r["query"].get("page") for r in pages] == [None, "2", "3", "4"]

    oldest_first = repo.get_issues(state="open", sort="created", direction="asc")
    assert [i.number for i in oldest_first] == list(range(1, 121))
    assert repo.get_issues(state="open").totalCount == 120

    urgent = repo.get_issues(labels=["bzzz-task", "urgent"])
    assert [i.number for i in urgent] == [n for n in range(120, 0, -1) if n % 7 == 0]

    fake.clock_offset = 2.0  # a later second: the edit's stamp is the newest
    fake.update_issue(REPO, 5, state="closed")
    assert 5 not in {i.number for i in repo.get_issues(state="open")}
    assert [i.number for i in repo.get_issues(state="closed")] == [5]
    recently = repo.get_issues(state="all", sort="updated", direction="desc")
    assert recently[0].number == 5
    assert [i.number for i in repo.get_issues(state="all", since=recently[0].updated_at)] == [5]

    status, headers, _ = gh.requester.requestJson(
        "GET", ISSUES, parameters={"per_page": 50, "page": 2}
    )
    assert status == 200
    links = {}
    for part in headers["link"].split(", "):
        url, rel = part.split("; ")
        links[rel.removeprefix('rel="').removesuffix('"')] = url.strip("<>")
    assert set(links) == {"prev", "next", "last", "first"}
    assert all(url.startswith(f"{fake.url}{ISSUES}?") for url in links.values())
    last_query = urllib.parse.parse_qs(urllib.parse.urlsplit(links["last"]).query)
    assert last_query == {"per_page": ["50"], "page": ["3"]}


# ------------------------------------------------------------------------ conditional requests


def test_issue_update_is_a_free_conditional_request(
    fake: FakeGitHub, repo: github.Repository.Repository
) -> None:
    number = fake.create_issue(REPO, "Task")
    issue = repo.get_issue(number)
    assert issue.etag is not None
    counted = fake.counted_requests()

    assert issue.update() is False
    assert fake.requests[-1]["status"] == 304
    assert fake.requests[-1]["if_none_match"] == issue.etag
    assert fake.counted_requests() == counted

    fake.add_comment(REPO, number, "new information")
    assert issue.update() is True
    assert issue.comments == 1
    assert fake.counted_requests() == counted + 1
    assert issue.update() is False
    assert fake.counted_requests() == counted + 1


def test_conditional_list_request(fake: FakeGitHub, gh: Github) -> None:
    task = fake.create_issue(REPO, "Task", labels=["bzzz-task"])
    other = fake.create_issue(REPO, "Unrelated")
    params = {"state": "open", "labels": "bzzz-task"}

    status, headers, body = gh.requester.requestJson("GET", ISSUES, parameters=params)
    assert status == 200 and f'"number":{task}' in body.replace(" ", "")
    etag = headers["etag"]
    remaining = headers["x-ratelimit-remaining"]
    counted = fake.counted_requests()

    status, headers, body = gh.requester.requestJson(
        "GET", ISSUES, parameters=params, headers={"If-None-Match": etag}
    )
    assert status == 304
    assert body == ""
    assert headers["etag"] == etag
    assert headers["x-ratelimit-remaining"] == remaining
    assert "date" in headers
    assert fake.counted_requests() == counted

    fake.add_comment(REPO, other, "not part of the filtered list")
    status, _, _ = gh.requester.requestJson(
        "GET", ISSUES, parameters=params, headers={"If-None-Match": etag}
    )
    assert status == 304

    gh.get_repo(REPO).get_issue(task).add_to_labels("bzzz-claimed")
    status, headers, body = gh.requester.requestJson(
        "GET", ISSUES, parameters=params, headers={"If-None-Match": etag}
    )
    assert status == 200
    assert headers["etag"] != etag
    assert "bzzz-claimed" in body
    assert int(headers["x-ratelimit-remaining"]) < int(remaining)


# ---------------------------------------------------------------------- rate limits and faults


def test_rate_limit_until(fake: FakeGitHub, gh: Github, repo: github.Repository.Repository) -> None:
    number = fake.create_issue(REPO, "Task")
    issue = repo.get_issue(number)
    reset = int(time.time()) + 120
    fake.rate_limit_until(reset)
    counted = fake.counted_requests()

    with pytest.raises(RateLimitExceededException) as exc:
        repo.get_issue(number)
    assert exc.value.status == 403
    assert exc.value.data["message"].startswith("API rate limit exceeded")
    assert exc.value.headers["x-ratelimit-reset"] == str(reset)
    assert exc.value.headers["x-ratelimit-remaining"] == "0"
    assert gh.rate_limiting_resettime == reset

    with pytest.raises(RateLimitExceededException):
        issue.create_comment("refused before any side effect")
    assert fake.comments(REPO, number) == []

    core = gh.get_rate_limit().resources.core
    assert core.remaining == 0
    assert int(core.reset.timestamp()) == reset
    assert issue.update() is False  # a 304 is still served: it would not count
    assert fake.counted_requests() == counted

    fake.rate_limit_until(int(time.time()) - 1)
    assert repo.get_issue(number).title == "Task"
    assert fake.counted_requests() == counted + 1


def test_quota_runs_out(fake: FakeGitHub, gh: Github) -> None:
    fake.rate_limit_total = 3
    number = fake.create_issue(REPO, "Task")
    repo = gh.get_repo(REPO)
    assert gh.rate_limiting == (2, 3)
    issue = repo.get_issue(number)
    assert gh.rate_limiting == (1, 3)
    assert issue.update() is False
    assert gh.rate_limiting == (1, 3)  # the 304 was free
    repo.get_issue(number)
    assert gh.rate_limiting == (0, 3)

    with pytest.raises(RateLimitExceededException) as exc:
        repo.get_issue(number)
    window_reset = int(exc.value.headers["x-ratelimit-reset"])
    assert time.time() < window_reset <= time.time() + 3600
    assert fake.rate_limit_remaining("bzzz-bot") == 0
    assert fake.counted_requests() == 3


def test_fail_next(fake: FakeGitHub, repo: github.Repository.Repository) -> None:
    number = fake.create_issue(REPO, "Task")
    issue = repo.get_issue(number)
    counted = fake.counted_requests()
    fake.fail_next(2, 502)
    for _ in range(2):
        with pytest.raises(GithubException) as exc:
            repo.get_issue(number)
        assert exc.value.status == 502
        assert exc.value.data == {"message": "Server Error"}
    assert repo.get_issue(number).title == "Task"
    assert fake.counted_requests() == counted + 3
    assert [r["status"] for r in fake.requests[-3:]] == [502, 502, 200]

    fake.fail_next(1, 503)
    with pytest.raises(GithubException) as exc:
        issue.create_comment("lost")
    assert exc.value.status == 503
    assert fake.comments(REPO, number) == []


def test_secondary_limit(fake: FakeGitHub, repo: github.Repository.Repository) -> None:
    number = fake.create_issue(REPO, "Task")
    fake.secondary_limit_next(1, 7)
    with pytest.raises(RateLimitExceededException) as exc:
        repo.get_issue(number)
    assert exc.value.status == 403
    assert exc.value.headers["retry-after"] == "7"
    assert int(exc.value.headers["x-ratelimit-remaining"]) > 0  # not the primary limit
    assert exc.value.data["message"].startswith("You have exceeded a secondary rate limit")
    assert repo.get_issue(number).title == "Task"


def test_slow_next(fake: FakeGitHub, repo: github.Repository.Repository) -> None:
    number = fake.create_issue(REPO, "Task")
    fake.slow_next(1, 0.4)
    started = time.monotonic()
    repo.get_issue(number)
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    repo.get_issue(number)
    assert time.monotonic() - started < 0.4


# ----------------------------------------------------------------------- git, refs and pulls


def test_branch_push_compare_and_pull_request(
    fake: FakeGitHub, repo: github.Repository.Repository, tmp_path: pathlib.Path
) -> None:
    bare = fake.git_dir(REPO)
    main_sha = git("--git-dir", str(bare), "rev-parse", "refs/heads/main")
    main = repo.get_git_ref("heads/main")
    assert (main.ref, main.object.sha, main.object.type) == ("refs/heads/main", main_sha, "commit")

    task = fake.create_issue(REPO, "Task", labels=["bzzz-task"])
    branch = f"bzzz/task-{task}-abc"
    created = repo.create_git_ref(f"refs/heads/{branch}", main_sha)
    assert (created.ref, created.object.sha) == (f"refs/heads/{branch}", main_sha)
    assert git("--git-dir", str(bare), "rev-parse", f"refs/heads/{branch}") == main_sha
    with pytest.raises(GithubException) as exc:
        repo.create_git_ref(f"refs/heads/{branch}", main_sha)
    assert exc.value.status == 422
    assert exc.value.data["message"] == "Reference already exists"

    with pytest.raises(GithubException) as exc:
        repo.create_pull(title="Empty", body="", head=branch, base="main")
    assert exc.value.status == 422
    assert exc.value.data["errors"][0]["message"] == f"No commits between main and {branch}"

    work = tmp_path / "work"
    git("clone", "--quiet", repo.clone_url, str(work))
    git("checkout", "--quiet", branch, cwd=work)
    (work / "fix.txt").write_text("fixed\n")
    git("add", "fix.txt", cwd=work)
    git("commit", "--quiet", "-m", f"Fix task {task}", cwd=work)
    git("push", "--quiet", "origin", branch, cwd=work)
    head_sha = git("rev-parse", "HEAD", cwd=work)

    assert repo.get_git_ref(f"heads/{branch}").object.sha == head_sha
    _, legacy = repo.requester.requestJsonAndCheck("GET", f"/repos/{REPO}/git/refs/heads/{branch}")
    assert legacy["ref"] == f"refs/heads/{branch}"
    assert legacy["object"] == {"sha": head_sha, "type": "commit", "url": legacy["object"]["url"]}
    assert repo.get_branch(branch).commit.sha == head_sha
    assert repo.get_branch(branch).name == branch

    ahead = repo.compare("main", branch)
    assert (ahead.ahead_by, ahead.behind_by, ahead.total_commits) == (1, 0, 1)
    assert ahead.status == "ahead"
    assert [commit.sha for commit in ahead.commits] == [head_sha]
    behind = repo.compare(branch, "main")
    assert (behind.status, behind.ahead_by, behind.behind_by) == ("behind", 0, 1)

    pr = repo.create_pull(
        title=f"Fix task {task}", body=f"Closes #{task}", head=branch, base="main"
    )
    assert pr.number == task + 1  # one number sequence for issues and pull requests
    assert pr.html_url == f"{fake.url}/{REPO}/pull/{pr.number}"
    assert (pr.head.ref, pr.head.sha, pr.base.ref) == (branch, head_sha, "main")
    assert (pr.state, pr.title, pr.body) == ("open", f"Fix task {task}", f"Closes #{task}")
    assert pr.user.login == "bzzz-bot"
    snap = fake.pulls(REPO)
    assert [(p["number"], p["head"], p["base"], p["state"]) for p in snap] == [
        (pr.number, branch, "main", "open")
    ]
    assert snap[0]["head_sha"] == head_sha

    with pytest.raises(GithubException) as exc:
        repo.create_pull(title="Again", body="", head=f"acme:{branch}", base="main")
    assert exc.value.status == 422
    assert "already exists" in exc.value.data["errors"][0]["message"]

    assert [p.number for p in repo.get_pulls(state="open")] == [pr.number]
    assert [p.number for p in repo.get_pulls(head=f"acme:{branch}")] == [pr.number]
    assert list(repo.get_pulls(head="acme:other")) == []
    assert repo.get_pull(pr.number).head.ref == branch
    assert repo.get_issue(pr.number).pull_request is not None
    listed = {i.number: i.pull_request is not None for i in repo.get_issues()}
    assert listed == {task: False, pr.number: True}


# ---------------------------------------------------------------------------------- lifecycle


def test_stop_closes_connections_and_threads(tmp_path: pathlib.Path) -> None:
    threads_before = set(threading.enumerate())
    fake = FakeGitHub(tmp_path)
    outcome: list[object] = []
    with fake:
        fake.create_repo(REPO)
        port = int(fake.url.rsplit(":", 1)[1])
        idle = client(fake)
        idle.get_repo(REPO)  # leaves a keep-alive connection open
        fake.slow_next(1, 30)

        def slow_request() -> None:
            with client(fake) as api:
                try:
                    outcome.append(api.get_user().login)
                except Exception as error:
                    outcome.append(error)

        waiter = threading.Thread(target=slow_request)
        waiter.start()
        deadline = time.monotonic() + 5
        while fake._slow_queue and time.monotonic() < deadline:  # until the delay has begun
            time.sleep(0.01)
        assert not fake._slow_queue
        started = time.monotonic()
    assert time.monotonic() - started < 5  # stop() cut the 30 s delay short
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    assert len(outcome) == 1
    fake.stop()  # idempotent

    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    idle.close()
    leftover = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert leftover == []


# ------------------------------------------------------------ as strict as GitHub: faults, clock


def test_a_lost_answer_leaves_the_write_standing(
    fake: FakeGitHub, repo: github.Repository.Repository
) -> None:
    number = fake.create_issue(REPO, "Task")
    issue = repo.get_issue(number)
    fake.lose_answers(1, method="POST", path=r"/comments$")
    with pytest.raises(GithubException) as exc:
        issue.create_comment("written, answer lost")
    assert exc.value.status == 502
    assert [c["body"] for c in fake.comments(REPO, number)] == ["written, answer lost"]
    # Only that method and path: a GET meanwhile is untouched, and the rule is used up.
    fake.lose_answers(1, method="PATCH", status=None)
    assert repo.get_issue(number).title == "Task"
    with pytest.raises(Exception) as dropped:  # the connection closes without an answer
        issue.edit(title="Renamed")
    assert not isinstance(dropped.value, GithubException)
    assert fake.issue(REPO, number)["title"] == "Renamed"
    assert [r["status"] for r in fake.requests[-2:]] == [200, None]


def test_secondary_limits_come_as_429_or_a_bare_403(
    fake: FakeGitHub, repo: github.Repository.Repository
) -> None:
    number = fake.create_issue(REPO, "Task")
    fake.secondary_limit_next(1, retry_after=None, status=429)
    fake.secondary_limit_next(1, retry_after=None, status=403)
    for status in (429, 403):
        with pytest.raises(GithubException) as exc:
            repo.get_issue(number)
        assert exc.value.status == status
        assert "retry-after" not in exc.value.headers
        assert exc.value.data["message"].startswith("You have exceeded a secondary rate limit")


def test_dates_come_from_githubs_clock_with_one_second_ties(
    fake: FakeGitHub, gh: Github, repo: github.Repository.Repository
) -> None:
    fake.clock_offset = -3600.0  # GitHub an hour behind this machine
    number = fake.create_issue(REPO, "Task")
    status, headers, _ = gh.requester.requestJson("GET", f"{ISSUES}/{number}")
    assert status == 200
    told = parsedate_to_datetime(headers["date"]).timestamp()
    assert abs(told - (time.time() - 3600)) < 2
    issue = repo.get_issue(number)
    assert abs(issue.created_at.timestamp() - (time.time() - 3600)) < 2
    a, b = issue.create_comment("one"), issue.create_comment("two")
    assert a.id < b.id and b.created_at - a.created_at < datetime.timedelta(seconds=2)


def test_enterprise_server_without_rate_limiting(
    fake: FakeGitHub, gh: Github, repo: github.Repository.Repository
) -> None:
    fake.ghes = True
    status, headers, _ = gh.requester.requestJson("GET", f"/repos/{REPO}")
    assert status == 200 and not any(h.startswith("x-ratelimit") for h in headers)
    status, _, _ = gh.requester.requestJson("GET", "/rate_limit")
    assert status == 404


def test_transferred_deleted_and_locked_issues(
    fake: FakeGitHub, gh: Github, repo: github.Repository.Repository
) -> None:
    fake.create_repo("acme/elsewhere")
    fake.create_issue("acme/elsewhere", "Someone else's issue")
    moved = fake.create_issue(REPO, "Moving")
    fake.add_comment(REPO, moved, "a comment travels along")
    new_number = fake.transfer_issue(REPO, moved, "acme/elsewhere")
    status, _, _ = gh.requester.requestJson("GET", f"{ISSUES}/{moved}")
    assert status == 200  # PyGithub followed the 301 ...
    assert fake.requests[-2]["status"] == 301
    followed = repo.get_issue(moved)  # ... to the issue in its new home, with its new number
    assert followed.number == new_number == 2
    assert followed.url.endswith(f"/repos/acme/elsewhere/issues/{new_number}")
    assert [c["body"] for c in fake.comments("acme/elsewhere", new_number)] == [
        "a comment travels along"
    ]

    gone = fake.create_issue(REPO, "Deleted")
    fake.delete_issue(REPO, gone)
    with pytest.raises(GithubException) as exc:
        repo.get_issue(gone)
    assert exc.value.status == 410

    locked = fake.create_issue(REPO, "Heated")
    fake.lock_issue(REPO, locked)
    assert repo.get_issue(locked).locked is True
    fake.set_permission(REPO, "bzzz-bot", "triage")
    with pytest.raises(GithubException) as exc:
        repo.get_issue(locked).create_comment("may I?")
    assert exc.value.status == 403
    fake.set_permission(REPO, "bzzz-bot", "write")
    repo.get_issue(locked).create_comment("with write access, yes")


def test_roles_decide_who_may_create_labels_and_how_authors_are_associated(
    fake: FakeGitHub, repo: github.Repository.Repository
) -> None:
    number = fake.create_issue(REPO, "Task", labels=["bzzz-task"])
    fake.set_permission(REPO, "bzzz-bot", "triage")
    issue = repo.get_issue(number)
    issue.add_to_labels("bzzz-task")  # an existing label: triage may add it
    with pytest.raises(GithubException) as exc:
        issue.add_to_labels("brand-new")  # creating one needs write access
    assert exc.value.status == 403
    fake.set_permission(REPO, "bzzz-bot", "read")
    with pytest.raises(GithubException) as exc:
        issue.add_to_assignees("bzzz-bot")
    assert exc.value.status == 403
    fake.add_comment(REPO, number, "drive-by", user="stranger")
    fake.set_permission(REPO, "maintainer", "write")
    fake.add_comment(REPO, number, "on it", user="maintainer")
    by = {c.user.login: c.raw_data["author_association"] for c in issue.get_comments()}
    assert by == {"stranger": "NONE", "maintainer": "COLLABORATOR"}
    assert repo.get_issue(number).raw_data["author_association"] == "OWNER"
    outsider = fake.create_issue(REPO, "Drive-by", user="stranger", labels=["bzzz-task"])
    assert repo.get_issue(outsider).raw_data["author_association"] == "NONE"
    (event,) = [e for e in repo.get_issue(outsider).get_events() if e.event == "labeled"]
    assert event.actor.login == "stranger" and event.label.name == "bzzz-task"
    fake.update_issue(REPO, outsider, labels=["bzzz-task", "triaged"], user="maintainer")
    labelled = [e for e in repo.get_issue(outsider).get_events() if e.event == "labeled"]
    assert [(e.actor.login, e.label.name) for e in labelled] == [
        ("stranger", "bzzz-task"),
        ("maintainer", "triaged"),
    ]
    status, _, body = repo.requester.requestJson(
        "GET", f"/repos/{REPO}/collaborators/maintainer/permission"
    )
    assert status == 200 and json.loads(body)["role_name"] == "write"


def test_comment_threads_beyond_one_page(fake: FakeGitHub, gh: Github) -> None:
    number = fake.create_issue(REPO, "Busy")
    for n in range(130):
        fake.add_comment(REPO, number, f"comment {n}")
    path = f"{ISSUES}/{number}/comments"
    status, headers, body = gh.requester.requestJson("GET", path, parameters={"per_page": 100})
    assert status == 200 and 'rel="next"' in headers["link"]
    status, _, second = gh.requester.requestJson(
        "GET", path, parameters={"per_page": 100, "page": 2}
    )
    assert len(json.loads(body)) == 100 and len(json.loads(second)) == 30
