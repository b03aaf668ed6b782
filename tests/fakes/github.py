"""A stateful fake of the GitHub REST API for tests.

``FakeGitHub`` serves HTTP on 127.0.0.1 (a free port) from threads inside the test process, so
PyGithub and any other client (including code under test running in another process) talk to it
unchanged with ``Github(base_url=fake.url, auth=github.Auth.Token(token))``, while tests drive
and inspect it directly through the Python admin API.  Standard library only.

Choices the fake makes where GitHub leaves room, or where it deliberately simplifies:

* Clock: timestamps are the fake's UTC time at one-second resolution, as GitHub's are, so two
  writes in the same second carry the same stamp (ties happen; ids still order objects).  The
  fake's clock is the real clock plus ``clock_offset`` seconds (GitHub's clock is not the
  node's); the ``Date`` header of every answer tells it, as GitHub's does.
* Issue and pull request numbers share one sequence per repository.  ``GET .../issues`` lists
  pull requests too, marked with a ``pull_request`` key, exactly as GitHub does.
* Issue, comment, label and repository ids are global counters that only increase.
* ``ETag`` is a weak validator (``W/"<sha256 of the body>"``) on every 200 GET; there is no
  ``Last-Modified``, so PyGithub's conditional requests use ``If-None-Match`` only.  A 304 does not
  count against the rate limit and is served even while the primary rate limit is exhausted
  (only requests that would count are refused).
* Rate limits are per user (token login): ``rate_limit_total`` per window, a window lasting one hour
  of real time from the first counted request.  A request refused by the primary rate limit does not
  count (it cannot consume quota that is not there); 401s, 304s and ``GET /rate_limit`` never count;
  injected 5xx faults and secondary-limit 403s do count.
* Faults are rules (``fault``) consumed in arrival order by the requests they match (method and
  path pattern).  A fault either answers instead of GitHub (nothing happened) or, with
  ``after=True``, lets GitHub do the work and then loses the answer: the client sees a 502 or a
  dropped connection while the write stands, as GitHub's docs warn can happen on timeouts
  ("Troubleshooting the REST API": a 5xx or timeout does not mean the request failed).  Rate
  limits follow "Rate limits for the REST API": a primary limit is a 403 (or 429) with
  ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset``; a secondary limit a 403 or 429 with the
  secondary message and maybe ``retry-after``, maybe nothing at all.
* GitHub Enterprise Server with rate limiting off (its default, "Configuring rate limits"):
  ``ghes=True`` sends no ``X-RateLimit-*`` headers and answers ``GET /rate_limit`` with 404.
* Moved and gone issues ("Transferring an issue"; REST "Get an issue"): a transferred issue
  answers 301 with the ``Location`` of its new home (PyGithub follows it, whatever the verb); a
  deleted one 410; a locked one refuses comments from users without write access (403).
* Permissions ("Repository roles"): each login has a role per repository, ``admin`` for the
  owner, ``write`` for the fake's token users unless set otherwise (``set_permission``), ``read``
  for everyone else.  Creating a label (explicitly, or by adding one that does not exist) needs
  write; adding labels and assignees needs triage.  ``author_association`` is OWNER, COLLABORATOR
  (an explicit role) or NONE.
* Users are created on first mention; any login is accepted as an assignee (GitHub would require a
  collaborator).  Repository owners are reported as ``type: "User"``.  Label names match
  case-insensitively; labels are auto-created with colour ``ededed`` (by users who may).
* Git data (refs, branches, compare, commits, pull request heads) is read live from a real bare
  repository per fake repository, so branches pushed with ``git push`` to ``clone_url``
  (``file://...``) are visible at once.  Forks, merging pull requests, reviews and the Contents API
  are not implemented (404).
* ``html_url`` values live on the fake's own host (``{url}/{owner}/{repo}/issues/{n}``), as on
  GitHub Enterprise, but the fake serves no HTML.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import hashlib
import http.server
import json
import math
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

__all__ = ["FakeGitHub"]

DOCS_URL = "https://docs.github.com/rest"
RATE_LIMIT_DOCS_URL = (
    "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"
)
SECONDARY_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
ANONYMOUS_LIMIT = 60
WINDOW_SECONDS = 3600
DEFAULT_LABEL_COLOR = "ededed"

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Fake GitHub",
    "GIT_AUTHOR_EMAIL": "fake-github@example.invalid",
    "GIT_COMMITTER_NAME": "Fake GitHub",
    "GIT_COMMITTER_EMAIL": "fake-github@example.invalid",
}


# --------------------------------------------------------------------------------------- helpers


def _iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: str) -> int | None:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return math.floor(parsed.timestamp())


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="/")


def _git_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(_GIT_IDENTITY)
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    return env


def _git(
    git_dir: pathlib.Path | None,
    *args: str,
    stdin: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    cmd = ["git"]
    if git_dir is not None:
        cmd += ["--git-dir", str(git_dir)]
    cmd += args
    proc = subprocess.run(
        cmd,
        input=stdin,
        capture_output=True,
        text=True,
        env=_git_env(),
        timeout=60,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    wanted = etag.removeprefix("W/")
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


class _HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}

    def response(self) -> _Resp:
        body: dict[str, Any] = {"message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        body["documentation_url"] = DOCS_URL
        return _Resp(self.status, body, dict(self.headers))


def _not_found() -> _HttpError:
    return _HttpError(404, "Not Found")


def _validation(*errors: dict[str, Any]) -> _HttpError:
    return _HttpError(422, "Validation Failed", errors=list(errors))


@dataclasses.dataclass
class _Resp:
    status: int
    body: Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Ctx:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    login: str


@dataclasses.dataclass
class _Label:
    id: int
    name: str
    color: str
    description: str | None = None


@dataclasses.dataclass
class _Pull:
    id: int
    head: str
    base: str
    head_sha: str  # at creation; the live ref wins while it exists
    draft: bool = False
    reviews: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Issue:
    id: int
    number: int
    title: str
    body: str | None
    user: str
    created_at: int
    updated_at: int
    state: str = "open"
    state_reason: str | None = None
    labels: list[str] = dataclasses.field(default_factory=list)
    assignees: list[str] = dataclasses.field(default_factory=list)
    closed_at: int | None = None
    closed_by: str | None = None
    comment_ids: list[int] = dataclasses.field(default_factory=list)
    pull: _Pull | None = None
    locked: bool = False
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # labeled, ...


@dataclasses.dataclass
class _Comment:
    id: int
    repo: str  # full name, lower case key
    number: int
    body: str
    user: str
    created_at: int
    updated_at: int


@dataclasses.dataclass
class _Repo:
    id: int
    owner: str
    name: str
    default_branch: str
    git_dir: pathlib.Path
    created_at: int
    labels: dict[str, _Label] = dataclasses.field(default_factory=dict)  # lower-case name -> label
    issues: dict[int, _Issue] = dataclasses.field(default_factory=dict)
    next_number: int = 1
    moved: dict[int, tuple[str, int]] = dataclasses.field(default_factory=dict)  # -> (repo, n)
    deleted: set[int] = dataclasses.field(default_factory=set)
    roles: dict[str, str] = dataclasses.field(default_factory=dict)  # login (lower) -> role

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclasses.dataclass
class _Fault:
    """Answer `status` (or drop the connection when None) to the next `count` matching
    requests; with `after`, only once GitHub has done what they asked."""

    count: int
    status: int | None
    method: str | None = None
    path: re.Pattern[str] | None = None
    after: bool = False
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: dict[str, Any] | None = None
    login: str | None = None  # only this user's requests

    def matches(self, method: str, path: str, login: str) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.path is None or self.path.search(path) is not None)
            and (self.login is None or self.login == login)
        )


class _DropConnection(Exception):
    """The answer is lost: the connection closes without one."""


ROLES = ("none", "read", "triage", "write", "maintain", "admin")


@dataclasses.dataclass
class _Bucket:
    reset: int
    used: int = 0


_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
_ROUTES: list[tuple[str, str, str]] = [
    ("GET", r"/user", "_get_user"),
    ("GET", r"/users/(?P<login>[^/]+)", "_get_named_user"),
    ("GET", r"/rate_limit", "_get_rate_limit"),
    ("GET", _REPO, "_get_repo"),
    ("GET", _REPO + r"/issues", "_list_issues"),
    ("POST", _REPO + r"/issues", "_create_issue"),
    ("GET", _REPO + r"/issues/comments", "_list_repo_comments"),
    ("GET", _REPO + r"/issues/comments/(?P<cid>\d+)", "_get_comment"),
    ("PATCH", _REPO + r"/issues/comments/(?P<cid>\d+)", "_edit_comment"),
    ("DELETE", _REPO + r"/issues/comments/(?P<cid>\d+)", "_delete_comment"),
    ("GET", _REPO + r"/issues/(?P<number>\d+)", "_get_issue"),
    ("PATCH", _REPO + r"/issues/(?P<number>\d+)", "_edit_issue"),
    ("GET", _REPO + r"/issues/(?P<number>\d+)/comments", "_list_comments"),
    ("POST", _REPO + r"/issues/(?P<number>\d+)/comments", "_create_comment"),
    ("GET", _REPO + r"/issues/(?P<number>\d+)/labels", "_list_issue_labels"),
    ("GET", _REPO + r"/issues/(?P<number>\d+)/events", "_list_issue_events"),
    ("GET", _REPO + r"/collaborators/(?P<login>[^/]+)/permission", "_get_permission"),
    ("POST", _REPO + r"/issues/(?P<number>\d+)/labels", "_add_issue_labels"),
    ("PUT", _REPO + r"/issues/(?P<number>\d+)/labels", "_set_issue_labels"),
    ("DELETE", _REPO + r"/issues/(?P<number>\d+)/labels", "_clear_issue_labels"),
    ("DELETE", _REPO + r"/issues/(?P<number>\d+)/labels/(?P<name>.+)", "_remove_issue_label"),
    ("POST", _REPO + r"/issues/(?P<number>\d+)/assignees", "_add_assignees"),
    ("DELETE", _REPO + r"/issues/(?P<number>\d+)/assignees", "_remove_assignees"),
    ("GET", _REPO + r"/labels", "_list_labels"),
    ("POST", _REPO + r"/labels", "_create_label"),
    ("GET", _REPO + r"/labels/(?P<name>.+)", "_get_label"),
    ("GET", _REPO + r"/git/ref/(?P<ref>.+)", "_get_ref"),
    ("GET", _REPO + r"/git/refs", "_list_refs"),
    ("POST", _REPO + r"/git/refs", "_create_ref"),
    ("GET", _REPO + r"/git/refs/(?P<ref>.+)", "_get_refs_legacy"),
    ("PATCH", _REPO + r"/git/refs/(?P<ref>.+)", "_update_ref"),
    ("DELETE", _REPO + r"/git/refs/(?P<ref>.+)", "_delete_ref"),
    ("GET", _REPO + r"/git/matching-refs/(?P<ref>.*)", "_matching_refs"),
    ("GET", _REPO + r"/branches", "_list_branches"),
    ("GET", _REPO + r"/branches/(?P<branch>.+)", "_get_branch"),
    ("GET", _REPO + r"/commits/(?P<rev>.+)", "_get_commit"),
    ("GET", _REPO + r"/compare/(?P<spec>.+)", "_compare"),
    ("GET", _REPO + r"/pulls", "_list_pulls"),
    ("GET", _REPO + r"/pulls/(?P<number>\d+)/reviews", "_list_reviews"),
    ("POST", _REPO + r"/pulls", "_create_pull"),
    ("GET", _REPO + r"/pulls/(?P<number>\d+)", "_get_pull"),
    ("PATCH", _REPO + r"/pulls/(?P<number>\d+)", "_edit_pull"),
]
_COMPILED = [(method, re.compile(pattern), name) for method, pattern, name in _ROUTES]
_ISSUE_PATH = re.compile(_REPO + r"/issues/(?P<number>\d+)(?P<rest>/.*)?")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # FakeGitHub.stop() shuts connections down and joins with a timeout


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GitHub.com"
    sys_version = ""
    fake: FakeGitHub  # set on a per-instance subclass

    def setup(self) -> None:
        super().setup()
        # Keep-alive plus Nagle's algorithm and delayed ACKs would stall every request ~40 ms.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fake._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.fake._track_connection(self.connection, add=False)

    def _any(self) -> None:
        self.fake._serve(self)

    def date_time_string(self, timestamp: float | None = None) -> str:
        # GitHub's clock, not ours: clients measure leases by it.
        return email.utils.formatdate(self.fake.now(), usegmt=True)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

    def log_message(self, format: str, *args: Any) -> None:
        pass


# ------------------------------------------------------------------------------------- the fake


class FakeGitHub:
    """A GitHub REST API server on 127.0.0.1 with a Python admin API.  See the module docstring."""

    def __init__(self, tmp_dir: pathlib.Path, users: dict[str, str] | None = None) -> None:
        self.tmp_dir = pathlib.Path(tmp_dir)
        self._lock = threading.RLock()
        self._tokens: dict[str, str] = dict(
            users if users is not None else {"test-token": "bzzz-bot"}
        )
        self._user_ids: dict[str, int] = {}
        for login in self._tokens.values():
            self._user_id(login)
        self._repos: dict[str, _Repo] = {}
        self._comments: dict[int, _Comment] = {}
        self._next_repo_id = 1
        self._next_issue_id = 1_000_001
        self._next_pull_id = 5_000_001
        self._next_comment_id = 2_000_001
        self._next_label_id = 3_000_001
        self._next_event_id = 4_000_001
        self._next_review_id = 6_000_001
        self._last_stamp = 0
        self._buckets: dict[str, _Bucket] = {}
        self._limited_until = 0
        self._faults: list[_Fault] = []
        self._slow_queue: deque[float] = deque()
        self.rate_limit_total = 5000
        self.clock_offset = 0.0  # seconds GitHub's clock runs ahead of ours
        self.ghes = False  # GitHub Enterprise Server with rate limiting off
        self.default_role = "write"  # of the logins that have a token here
        self.requests: list[dict[str, Any]] = []
        self.internal_errors: list[str] = []  # tracebacks of bugs in the fake itself (answered 500)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()

    # ------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeGitHub:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("FakeGitHub already started")
        handler = type("FakeGitHubHandler", (_Handler,), {"fake": self})
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), handler)
        try:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-github",
                daemon=True,
            )
            thread.start()
        except BaseException:
            server.server_close()
            raise
        self._server, self._thread = server, thread

    def stop(self) -> None:
        """Stop serving, drop every open connection, join the threads.  Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        with self._conn_lock:
            self._stopping.set()  # also cuts short slow_next() delays
            connections = list(self._connections)
        try:
            server.shutdown()
        finally:
            for conn in connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            server.server_close()
            if thread is not None:
                thread.join(timeout=5)
            with self._conn_lock:
                handlers = list(self._handler_threads)
            for handler_thread in handlers:
                if handler_thread is not threading.current_thread():
                    handler_thread.join(timeout=5)
            self._server = self._thread = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeGitHub is not running; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _base(self) -> str:
        # JSON built by admin calls before start() still needs some base.
        return self.url if self._server is not None else "http://127.0.0.1"

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._handler_threads.add(threading.current_thread())
                self._connections.add(conn)
                if self._stopping.is_set():
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
            else:
                self._connections.discard(conn)
                self._handler_threads.discard(threading.current_thread())

    # ------------------------------------------------------------------------------ admin API

    def add_user(self, token: str, login: str) -> None:
        """Accept another token, authenticating as ``login``."""
        with self._lock:
            self._tokens[token] = login
            self._user_id(login)

    def create_repo(self, full_name: str, default_branch: str = "main") -> None:
        """Create a repository backed by a bare git repository with one commit on the default
        branch.  ``clone_url`` is ``file://`` to it, so clone and push work offline."""
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"repository name must be owner/name, got {full_name!r}")
        with self._lock:
            if full_name.lower() in self._repos:
                raise ValueError(f"repository {full_name} already exists")
            git_dir = self.tmp_dir / "fake-github" / owner / f"{name}.git"
            git_dir.parent.mkdir(parents=True, exist_ok=True)
            _git(
                None,
                "init",
                "--quiet",
                "--bare",
                f"--initial-branch={default_branch}",
                str(git_dir),
            )
            blob = _git(git_dir, "hash-object", "-w", "--stdin", stdin=f"# {full_name}\n").stdout
            tree = _git(git_dir, "mktree", stdin=f"100644 blob {blob.strip()}\tREADME.md\n").stdout
            commit = _git(git_dir, "commit-tree", tree.strip(), "-m", "Initial commit").stdout
            _git(git_dir, "update-ref", f"refs/heads/{default_branch}", commit.strip())
            repo = _Repo(
                id=self._next_repo_id,
                owner=owner,
                name=name,
                default_branch=default_branch,
                git_dir=git_dir,
                created_at=self._stamp(),
            )
            self._next_repo_id += 1
            self._user_id(owner)
            self._repos[full_name.lower()] = repo

    def git_dir(self, full_name: str) -> pathlib.Path:
        with self._lock:
            return self._repo_admin(full_name).git_dir

    def create_issue(
        self,
        full_name: str,
        title: str,
        body: str = "",
        labels: Iterable[str] = (),
        user: str | None = None,
    ) -> int:
        """Open an issue as ``user`` would (default: the repository's owner; the labels are
        applied by the same user); returns its number."""
        with self._lock:
            repo = self._repo_admin(full_name)
            user = user or repo.owner
            issue = self._new_issue(repo, title, body, user)
            self._set_labels(issue, self._resolve_labels(repo, list(labels)), user)
            return issue.number

    def update_issue(
        self,
        full_name: str,
        number: int,
        *,
        title: str | None = None,
        body: str | None = None,
        state: str | None = None,
        state_reason: str | None = None,
        labels: Sequence[str] | None = None,
        assignees: Sequence[str] | None = None,
        user: str = "someone",
    ) -> None:
        """Edit an issue as a human would (``None`` leaves a field alone)."""
        payload: dict[str, Any] = {}
        for key, value in (
            ("title", title),
            ("body", body),
            ("state", state),
            ("state_reason", state_reason),
            ("labels", None if labels is None else list(labels)),
            ("assignees", None if assignees is None else list(assignees)),
        ):
            if value is not None:
                payload[key] = value
        with self._lock:
            repo = self._repo_admin(full_name)
            self._apply_issue_edit(repo, self._issue_of(repo, number), payload, user)

    def issue(self, full_name: str, number: int) -> dict[str, Any]:
        """A snapshot of one issue (or pull request, by its issue number)."""
        with self._lock:
            repo = self._repo_admin(full_name)
            issue = self._issue_of(repo, number)
            return {
                "number": issue.number,
                "title": issue.title,
                "body": issue.body,
                "state": issue.state,
                "state_reason": issue.state_reason,
                "labels": list(issue.labels),
                "assignees": list(issue.assignees),
                "user": issue.user,
                "comments": len(issue.comment_ids),
                "created_at": _iso(issue.created_at),
                "updated_at": _iso(issue.updated_at),
                "closed_at": _iso(issue.closed_at),
                "closed_by": issue.closed_by,
                "is_pull_request": issue.pull is not None,
            }

    def comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        """The comments on an issue, oldest first."""
        with self._lock:
            repo = self._repo_admin(full_name)
            issue = self._issue_of(repo, number)
            return [
                {
                    "id": comment.id,
                    "body": comment.body,
                    "user": comment.user,
                    "created_at": _iso(comment.created_at),
                    "updated_at": _iso(comment.updated_at),
                }
                for comment in (self._comments[cid] for cid in issue.comment_ids)
            ]

    def pulls(self, full_name: str) -> list[dict[str, Any]]:
        """Every pull request, in number order."""
        with self._lock:
            repo = self._repo_admin(full_name)
            refs = self._refs(repo)
            out = []
            for issue in sorted(repo.issues.values(), key=lambda i: i.number):
                if issue.pull is None:
                    continue
                out.append(
                    {
                        "number": issue.number,
                        "head": issue.pull.head,
                        "base": issue.pull.base,
                        "head_sha": self._pull_head_sha(issue.pull, refs),
                        "title": issue.title,
                        "body": issue.body,
                        "state": issue.state,
                        "user": issue.user,
                        "labels": list(issue.labels),
                    }
                )
            return out

    def add_review(
        self, full_name: str, number: int, state: str, body: str = "", user: str = "reviewer"
    ) -> int:
        """Review a pull request as a human would: APPROVED, CHANGES_REQUESTED or COMMENTED
        ("Reviews"); returns the review's id."""
        if state not in ("APPROVED", "CHANGES_REQUESTED", "COMMENTED"):
            raise ValueError(f"unknown review state {state!r}")
        with self._lock:
            repo = self._repo_admin(full_name)
            issue = self._issue_of(repo, number)
            if issue.pull is None:
                raise ValueError(f"#{number} is not a pull request")
            self._next_review_id += 1
            issue.pull.reviews.append(
                {
                    "id": self._next_review_id,
                    "user": self._user_json(user),
                    "body": body,
                    "state": state,
                    "author_association": self._association(repo, user),
                    "submitted_at": _iso(self._stamp()),
                    "commit_id": self._pull_head_sha(issue.pull, self._refs(repo)),
                }
            )
            return self._next_review_id

    def add_comment(self, full_name: str, number: int, body: str, user: str = "someone") -> int:
        """Comment on an issue as a human would; returns the comment id."""
        with self._lock:
            repo = self._repo_admin(full_name)
            return self._new_comment(repo, self._issue_of(repo, number), body, user).id

    # faults ------------------------------------------------------------------------------

    def fault(
        self,
        count: int = 1,
        status: int | None = 502,
        *,
        method: str | None = None,
        path: str | None = None,
        after: bool = False,
        headers: dict[str, str] | None = None,
        message: str | None = None,
        login: str | None = None,
    ) -> None:
        """The next ``count`` requests matching ``method`` and the ``path`` pattern (a regular
        expression searched in the path), and made by ``login`` if given, get ``status`` (None:
        the connection is dropped without an answer).  With ``after`` the request is carried
        out first: the write stands and only its answer is lost.  Faults count against the rate
        limit."""
        if status is not None and status < 400:
            raise ValueError("a fault needs an error status")
        body = None
        if status is not None:
            default = "Server Error" if status >= 500 else HTTPStatus(status).phrase
            body = {"message": message or default}
        with self._lock:
            self._faults.append(
                _Fault(
                    count,
                    status,
                    method,
                    re.compile(path) if path else None,
                    after,
                    dict(headers or {}),
                    body,
                    login,
                )
            )

    def fail_next(self, count: int, status: int = 502) -> None:
        """The next ``count`` authenticated requests answer ``status`` (they count)."""
        self.fault(count, status)

    def lose_answers(
        self,
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int | None = 502,
        login: str | None = None,
    ) -> None:
        """GitHub does the next ``count`` matching requests, but their answers are lost: the
        client sees ``status`` (None: the connection dropped) although the write was made."""
        self.fault(count, status, method=method, path=path, after=True, login=login)

    def slow_next(self, count: int, seconds: float) -> None:
        """The next ``count`` requests are delayed by ``seconds`` before being processed."""
        with self._lock:
            self._slow_queue.extend([seconds] * count)

    def rate_limit_until(self, reset_epoch: int) -> None:
        """Refuse every counted request with a primary rate limit 403 until ``time.time()`` reaches
        ``reset_epoch``.  A past epoch lifts the limit."""
        with self._lock:
            self._limited_until = int(reset_epoch)

    def secondary_limit_next(
        self,
        count: int,
        retry_after: int | None = 60,
        status: int = 403,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """The next ``count`` API requests answer a secondary rate limit: ``status`` 403 or 429,
        with ``Retry-After`` when given (GitHub does not always send it)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self.fault(
            count,
            status,
            method=method,
            path=path,
            headers=headers,
            message=SECONDARY_LIMIT_MESSAGE,
        )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._slow_queue.clear()
            self._limited_until = 0

    # moved, gone, locked, roles ----------------------------------------------------------

    def transfer_issue(self, full_name: str, number: int, to_full_name: str) -> int:
        """Move an issue with its comments to another repository; the old address answers 301
        to the new one from now on.  Returns its new number."""
        with self._lock:
            source, target = self._repo_admin(full_name), self._repo_admin(to_full_name)
            issue = self._issue_of(source, number)
            del source.issues[number]
            issue.number = target.next_number
            target.next_number += 1
            # Labels the new home does not have are not carried over.
            issue.labels = [name for name in issue.labels if name.lower() in target.labels]
            target.issues[issue.number] = issue
            for cid in issue.comment_ids:
                self._comments[cid].repo = target.full_name.lower()
                self._comments[cid].number = issue.number
            source.moved[number] = (target.full_name, issue.number)
            return issue.number

    def delete_issue(self, full_name: str, number: int) -> None:
        """Delete an issue: its address answers 410 Gone from now on."""
        with self._lock:
            repo = self._repo_admin(full_name)
            issue = self._issue_of(repo, number)
            for cid in issue.comment_ids:
                del self._comments[cid]
            del repo.issues[number]
            repo.deleted.add(number)

    def lock_issue(self, full_name: str, number: int, locked: bool = True) -> None:
        """Lock an issue's conversation: only users with write access may comment."""
        with self._lock:
            repo = self._repo_admin(full_name)
            self._issue_of(repo, number).locked = locked

    def set_permission(self, full_name: str, login: str, role: str) -> None:
        """Give ``login`` a role on the repository: none, read, triage, write, maintain, admin."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        with self._lock:
            self._repo_admin(full_name).roles[login.lower()] = role
            self._user_id(login)

    # accounting --------------------------------------------------------------------------

    def counted_requests(self) -> int:
        """How many requests counted against a rate limit so far."""
        with self._lock:
            return sum(1 for request in self.requests if request["counted"])

    def rate_limit_remaining(self, login: str = "bzzz-bot") -> int:
        with self._lock:
            return self._rate_numbers(login)[1]

    # ------------------------------------------------------------------------------ internals

    def now(self) -> float:
        """GitHub's clock: ours plus ``clock_offset``."""
        return time.time() + self.clock_offset

    def _stamp(self) -> int:
        # One-second resolution, as GitHub's timestamps: two writes in one second tie.
        return int(self.now())

    def _role(self, repo: _Repo, login: str) -> str:
        if login.lower() == repo.owner.lower():
            return "admin"
        if login.lower() in repo.roles:
            return repo.roles[login.lower()]
        return self.default_role if login in self._tokens.values() else "read"

    def _require(self, repo: _Repo, login: str, role: str, message: str) -> None:
        if ROLES.index(self._role(repo, login)) < ROLES.index(role):
            raise _HttpError(403, message)

    def _user_id(self, login: str) -> int:
        if login not in self._user_ids:
            self._user_ids[login] = len(self._user_ids) + 1
        return self._user_ids[login]

    def _repo_admin(self, full_name: str) -> _Repo:
        repo = self._repos.get(full_name.lower())
        if repo is None:
            raise KeyError(f"no repository {full_name}")
        return repo

    def _repo(self, owner: str, name: str) -> _Repo:
        repo = self._repos.get(f"{owner}/{name}".lower())
        if repo is None:
            raise _not_found()
        return repo

    def _issue_of(self, repo: _Repo, number: int) -> _Issue:
        issue = repo.issues.get(int(number))
        if issue is None:
            raise _not_found()
        return issue

    def _new_issue(self, repo: _Repo, title: str, body: str | None, user: str) -> _Issue:
        stamp = self._stamp()
        issue = _Issue(
            id=self._next_issue_id,
            number=repo.next_number,
            title=title,
            body=body,
            user=user,
            created_at=stamp,
            updated_at=stamp,
        )
        self._next_issue_id += 1
        repo.next_number += 1
        repo.issues[issue.number] = issue
        self._user_id(user)
        return issue

    def _new_comment(self, repo: _Repo, issue: _Issue, body: str, user: str) -> _Comment:
        stamp = self._stamp()
        comment = _Comment(
            id=self._next_comment_id,
            repo=repo.full_name.lower(),
            number=issue.number,
            body=body,
            user=user,
            created_at=stamp,
            updated_at=stamp,
        )
        self._next_comment_id += 1
        self._comments[comment.id] = comment
        issue.comment_ids.append(comment.id)
        issue.updated_at = stamp  # GitHub bumps the issue's updated_at on a new comment
        self._user_id(user)
        return comment

    def _label(self, repo: _Repo, name: str, color: str = DEFAULT_LABEL_COLOR) -> _Label:
        label = repo.labels.get(name.lower())
        if label is None:
            label = _Label(id=self._next_label_id, name=name, color=color)
            self._next_label_id += 1
            repo.labels[name.lower()] = label
        return label

    def _resolve_labels(
        self, repo: _Repo, names: Iterable[Any], login: str | None = None
    ) -> list[str]:
        """Label names (or {"name": ...} objects) -> canonical names, deduplicated, created
        (a label that does not exist yet only by a user with write access)."""
        out: list[str] = []
        for item in names:
            name = item.get("name") if isinstance(item, dict) else item
            if not isinstance(name, str) or not name.strip():
                raise _validation({"resource": "Label", "field": "name", "code": "invalid"})
            if login is not None and name.strip().lower() not in repo.labels:
                self._require(repo, login, "write", "Must have push access to create a label")
            canonical = self._label(repo, name.strip()).name
            if canonical not in out:
                out.append(canonical)
        return out

    def _apply_issue_edit(
        self, repo: _Repo, issue: _Issue, payload: dict[str, Any], login: str
    ) -> None:
        changed = False
        if "title" in payload:
            title = payload["title"]
            if not isinstance(title, str | int) or not str(title).strip():
                raise _validation({"resource": "Issue", "field": "title", "code": "missing_field"})
            if str(title) != issue.title:
                issue.title, changed = str(title), True
        if "body" in payload:
            body = payload["body"]
            if body is not None and not isinstance(body, str):
                raise _validation({"resource": "Issue", "field": "body", "code": "invalid"})
            if body != issue.body:
                issue.body, changed = body, True
        if "labels" in payload:
            if not isinstance(payload["labels"], list):
                raise _validation({"resource": "Issue", "field": "labels", "code": "invalid"})
            labels = self._resolve_labels(repo, payload["labels"], login)
            if labels != issue.labels:
                self._set_labels(issue, labels, login)
                changed = True
        assignees: list[str] | None = None
        if "assignees" in payload:
            assignees = self._logins(payload["assignees"], "assignees")
        elif "assignee" in payload:
            value = payload["assignee"]
            assignees = [] if value is None else self._logins([value], "assignee")
        if assignees is not None and assignees != issue.assignees:
            issue.assignees, changed = assignees, True
        stamp: int | None = None
        state = payload.get("state")
        reason = payload.get("state_reason")
        if reason is not None and reason not in ("completed", "not_planned", "reopened"):
            raise _validation({"resource": "Issue", "field": "state_reason", "code": "invalid"})
        if state is not None:
            if state not in ("open", "closed"):
                raise _validation({"resource": "Issue", "field": "state", "code": "invalid"})
            if state != issue.state:
                stamp = self._stamp()
                issue.state, changed = state, True
                if state == "closed":
                    issue.closed_at, issue.closed_by = stamp, login
                    issue.state_reason = reason or "completed"
                else:
                    issue.closed_at, issue.closed_by = None, None
                    issue.state_reason = "reopened"
            elif reason is not None and issue.state == "closed" and reason != issue.state_reason:
                issue.state_reason, changed = reason, True
        if changed:
            issue.updated_at = stamp if stamp is not None else self._stamp()

    def _set_labels(self, issue: _Issue, labels: list[str], actor: str) -> None:
        """New labels, each change an event of the issue, by `actor` ("Timeline events")."""
        before = {name.lower() for name in issue.labels}
        after = {name.lower() for name in labels}
        for name in labels:
            if name.lower() not in before:
                self._event(issue, "labeled", actor, label={"name": name, "color": "ededed"})
        for name in issue.labels:
            if name.lower() not in after:
                self._event(issue, "unlabeled", actor, label={"name": name, "color": "ededed"})
        issue.labels = labels

    def _event(self, issue: _Issue, kind: str, actor: str, **extra: Any) -> None:
        self._next_event_id += 1
        issue.events.append(
            {
                "id": self._next_event_id,
                "event": kind,
                "actor": self._user_json(actor),
                "created_at": _iso(self._stamp()),
                **extra,
            }
        )

    def _logins(self, value: Any, field: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise _validation({"resource": "Issue", "field": field, "code": "invalid"})
        out: list[str] = []
        for login in value:
            if login not in out:
                out.append(login)
                self._user_id(login)
        if len(out) > 10:
            raise _validation({"resource": "Issue", "field": field, "code": "invalid"})
        return out

    # rate limiting -----------------------------------------------------------------------

    def _bucket(self, login: str) -> _Bucket:
        now = time.time()
        bucket = self._buckets.get(login)
        if bucket is None or now >= bucket.reset:
            bucket = _Bucket(reset=int(now) + WINDOW_SECONDS)
            self._buckets[login] = bucket
        return bucket

    def _rate_numbers(self, login: str) -> tuple[int, int, int, int]:
        """(limit, remaining, used, reset) for ``login``."""
        bucket = self._bucket(login)
        limit = self.rate_limit_total
        if time.time() < self._limited_until:
            return limit, 0, max(bucket.used, limit), self._limited_until
        return limit, max(0, limit - bucket.used), bucket.used, bucket.reset

    def _primary_limited(self, login: str) -> bool:
        return self._rate_numbers(login)[1] == 0

    def _rate_headers(self, login: str | None) -> dict[str, str]:
        if self.ghes:
            return {}  # rate limiting off: GitHub Enterprise Server sends none
        if login is None:
            limit, remaining, used, reset = (
                ANONYMOUS_LIMIT,
                ANONYMOUS_LIMIT,
                0,
                int(time.time()) + WINDOW_SECONDS,
            )
        else:
            limit, remaining, used, reset = self._rate_numbers(login)
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Used": str(used),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Resource": "core",
        }

    def _primary_limit_response(self, login: str) -> _Resp:
        reset = self._rate_numbers(login)[3]
        body = {
            "message": f"API rate limit exceeded for user ID {self._user_id(login)}.",
            "documentation_url": RATE_LIMIT_DOCS_URL,
        }
        return _Resp(403, body, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})

    # request pipeline --------------------------------------------------------------------

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        arrival = time.time()
        method = handler.command
        split = urllib.parse.urlsplit(handler.path)
        path = split.path or "/"
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        raw = self._read_body(handler)

        with self._lock:
            delay = self._slow_queue.popleft() if self._slow_queue else 0.0
        if delay > 0:
            self._stopping.wait(delay)

        token = None
        authorization = handler.headers.get("Authorization") or ""
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() in ("token", "bearer") and credential.strip():
            token = credential.strip()

        with self._lock:
            login = self._tokens.get(token) if token is not None else None
            try:
                resp, counted = self._process(method, path, query, handler, raw, login)
            except Exception:
                self.internal_errors.append(traceback.format_exc())
                print(self.internal_errors[-1], file=sys.stderr)
                resp, counted = _Resp(500, {"message": "fake GitHub internal error"}), False
            if counted and login is not None and not self.ghes:
                bucket = self._bucket(login)
                if bucket.used < self.rate_limit_total:
                    bucket.used += 1
            headers = self._rate_headers(login)
            headers.update(resp.headers)
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "query": query,
                    "status": resp.status if resp.status else None,  # None: answer lost
                    "counted": counted,
                    "token_login": login,
                    "time": arrival,
                    "if_none_match": handler.headers.get("If-None-Match"),
                    "body": self._try_json(raw),
                }
            )
        if not resp.status:
            handler.close_connection = True  # the answer is lost: the client sees the drop
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(handler, resp.status, resp.body, headers)

    @staticmethod
    def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
        if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length > 0 else b""

    @staticmethod
    def _try_json(raw: bytes) -> Any:
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _process(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        handler: http.server.BaseHTTPRequestHandler,
        raw: bytes,
        login: str | None,
    ) -> tuple[_Resp, bool]:
        """Answer one request (under the lock): (response, counts against the rate limit)."""
        if login is None:
            return _HttpError(401, "Bad credentials").response(), False
        is_rate_endpoint = method == "GET" and path.rstrip("/") == "/rate_limit"
        if is_rate_endpoint and self.ghes:
            return _not_found().response(), False
        fault = self._take_fault(method, path, login)
        if fault is not None and not fault.after:
            return self._fault_response(fault), True
        limited = not is_rate_endpoint and not self.ghes and self._primary_limited(login)
        if limited and method != "GET":
            return self._primary_limit_response(login), False  # refused before any side effect

        try:
            body: Any = None
            if method != "GET" and raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise _HttpError(400, "Problems parsing JSON") from None
            resp = self._route(_Ctx(method, path, query, body, login))
        except _HttpError as error:
            resp = error.response()

        if fault is not None:  # done; the answer is lost
            return self._fault_response(fault), True
        if method == "GET" and resp.status == 200:
            etag = 'W/"' + hashlib.sha256(self._encode(resp.body)).hexdigest() + '"'
            resp.headers["ETag"] = etag
            if _etag_matches(handler.headers.get("If-None-Match"), etag):
                return _Resp(304, None, {"ETag": etag}), False
        if limited:
            return self._primary_limit_response(login), False
        return resp, not is_rate_endpoint

    def _take_fault(self, method: str, path: str, login: str) -> _Fault | None:
        for fault in self._faults:
            if fault.count > 0 and fault.matches(method, path, login):
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_response(fault: _Fault) -> _Resp:
        if fault.status is None:
            return _Resp(0)  # no answer at all
        body = dict(fault.body or {})
        if fault.status in (403, 429) and body.get("message") == SECONDARY_LIMIT_MESSAGE:
            body["documentation_url"] = RATE_LIMIT_DOCS_URL
        return _Resp(fault.status, body, dict(fault.headers))

    def _route(self, ctx: _Ctx) -> _Resp:
        path = ctx.path.rstrip("/") or "/"
        gone = _ISSUE_PATH.fullmatch(path)
        if gone is not None:
            repo = self._repos.get(f"{gone['owner']}/{gone['repo']}".lower())
            number = int(gone["number"])
            if repo is not None and number in repo.deleted:
                raise _HttpError(410, "This issue was deleted")
            if repo is not None and number in repo.moved:
                target, new_number = repo.moved[number]
                location = f"{self.url}/repos/{target}/issues/{new_number}{gone['rest'] or ''}"
                raise _HttpError(301, "Moved Permanently", headers={"Location": location})
        for method, pattern, name in _COMPILED:
            if method != ctx.method:
                continue
            match = pattern.fullmatch(path)
            if match is None:
                continue
            params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            handler: Callable[..., _Resp] = getattr(self, name)
            return handler(ctx, **params)
        raise _not_found()

    @staticmethod
    def _encode(body: Any) -> bytes:
        if body is None:
            return b""
        return json.dumps(body, separators=(",", ":")).encode()

    def _send(
        self,
        handler: http.server.BaseHTTPRequestHandler,
        status: int,
        body: Any,
        headers: dict[str, str],
    ) -> None:
        payload = b"" if status in (204, 304) else self._encode(body)
        try:
            handler.send_response(status)  # also sends Date and Server
            handler.send_header("X-GitHub-Media-Type", "github.v3; format=json")
            handler.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
            handler.send_header("X-GitHub-Request-Id", f"FAKE:{len(self.requests)}")
            handler.send_header("Cache-Control", "private, max-age=60, s-maxage=60")
            handler.send_header("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP")
            handler.send_header("X-OAuth-Scopes", "repo")
            for key, value in headers.items():
                handler.send_header(key, value)
            if status not in (204, 304):
                handler.send_header("Content-Type", "application/json; charset=utf-8")
                handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True

    # pagination --------------------------------------------------------------------------

    def _paginate(
        self, ctx: _Ctx, count: int, default: int = 30, maximum: int = 100
    ) -> tuple[slice, dict[str, str]]:
        def number(key: str, fallback: int) -> int:
            try:
                return int(ctx.query.get(key, fallback))
            except ValueError:
                return fallback

        per_page = min(max(number("per_page", default), 1), maximum)
        page = max(number("page", 1), 1)
        last = max(1, math.ceil(count / per_page))

        def link(target: int) -> str:
            query = urllib.parse.urlencode({**ctx.query, "page": str(target)})
            return f"<{self.url}{ctx.path}?{query}>"

        links = []
        if page > 1:
            links.append(f'{link(page - 1)}; rel="prev"')
        if page < last:
            links.append(f'{link(page + 1)}; rel="next"')
            links.append(f'{link(last)}; rel="last"')
        if page > 1:
            links.append(f'{link(1)}; rel="first"')
        headers = {"Link": ", ".join(links)} if links else {}
        return slice((page - 1) * per_page, page * per_page), headers

    def _page(self, ctx: _Ctx, items: list[Any], default: int = 30) -> _Resp:
        window, headers = self._paginate(ctx, len(items), default)
        return _Resp(200, items[window], headers)

    # JSON shapes -------------------------------------------------------------------------

    def _user_json(self, login: str) -> dict[str, Any]:
        uid = self._user_id(login)
        api = f"{self._base()}/users/{_quote(login)}"
        return {
            "login": login,
            "id": uid,
            "node_id": f"U_fake{uid}",
            "avatar_url": f"{self._base()}/avatars/u/{uid}",
            "gravatar_id": "",
            "url": api,
            "html_url": f"{self._base()}/{_quote(login)}",
            "followers_url": f"{api}/followers",
            "repos_url": f"{api}/repos",
            "type": "User",
            "user_view_type": "public",
            "site_admin": False,
        }

    def _api(self, repo: _Repo) -> str:
        return f"{self._base()}/repos/{repo.full_name}"

    def _html(self, repo: _Repo) -> str:
        return f"{self._base()}/{repo.full_name}"

    def _repo_json(self, repo: _Repo) -> dict[str, Any]:
        api, html = self._api(repo), self._html(repo)
        open_count = sum(1 for i in repo.issues.values() if i.state == "open")
        clone_url = repo.git_dir.as_uri()
        return {
            "id": repo.id,
            "node_id": f"R_fake{repo.id}",
            "name": repo.name,
            "full_name": repo.full_name,
            "private": False,
            "owner": self._user_json(repo.owner),
            "html_url": html,
            "description": None,
            "fork": False,
            "url": api,
            "issues_url": f"{api}/issues{{/number}}",
            "issue_comment_url": f"{api}/issues/comments{{/number}}",
            "labels_url": f"{api}/labels{{/name}}",
            "pulls_url": f"{api}/pulls{{/number}}",
            "git_refs_url": f"{api}/git/refs{{/sha}}",
            "branches_url": f"{api}/branches{{/branch}}",
            "compare_url": f"{api}/compare/{{base}}...{{head}}",
            "clone_url": clone_url,
            "git_url": clone_url,
            "ssh_url": clone_url,
            "svn_url": html,
            "homepage": None,
            "size": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "forks_count": 0,
            "open_issues_count": open_count,
            "open_issues": open_count,
            "forks": 0,
            "watchers": 0,
            "default_branch": repo.default_branch,
            "has_issues": True,
            "has_projects": False,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": False,
            "archived": False,
            "disabled": False,
            "visibility": "public",
            "topics": [],
            "created_at": _iso(repo.created_at),
            "updated_at": _iso(repo.created_at),
            "pushed_at": _iso(repo.created_at),
            "permissions": {
                "admin": True,
                "maintain": True,
                "push": True,
                "triage": True,
                "pull": True,
            },
            "allow_merge_commit": True,
            "allow_squash_merge": True,
            "allow_rebase_merge": True,
            "delete_branch_on_merge": False,
        }

    def _label_json(self, repo: _Repo, name: str) -> dict[str, Any]:
        label = repo.labels[name.lower()]
        return {
            "id": label.id,
            "node_id": f"LA_fake{label.id}",
            "url": f"{self._api(repo)}/labels/{urllib.parse.quote(label.name, safe='')}",
            "name": label.name,
            "color": label.color,
            "default": False,
            "description": label.description,
        }

    def _association(self, repo: _Repo, login: str) -> str:
        if login.lower() == repo.owner.lower():
            return "OWNER"
        if self._role(repo, login) not in ("none", "read") or login.lower() in repo.roles:
            return "COLLABORATOR"
        return "NONE"

    def _issue_json(self, repo: _Repo, issue: _Issue) -> dict[str, Any]:
        api, html, n = self._api(repo), self._html(repo), issue.number
        kind = "pull" if issue.pull is not None else "issues"
        data: dict[str, Any] = {
            "url": f"{api}/issues/{n}",
            "repository_url": api,
            "labels_url": f"{api}/issues/{n}/labels{{/name}}",
            "comments_url": f"{api}/issues/{n}/comments",
            "events_url": f"{api}/issues/{n}/events",
            "html_url": f"{html}/{kind}/{n}",
            "id": issue.id,
            "node_id": f"I_fake{issue.id}",
            "number": n,
            "title": issue.title,
            "user": self._user_json(issue.user),
            "labels": [self._label_json(repo, name) for name in issue.labels],
            "state": issue.state,
            "locked": issue.locked,
            "assignee": self._user_json(issue.assignees[0]) if issue.assignees else None,
            "assignees": [self._user_json(login) for login in issue.assignees],
            "milestone": None,
            "comments": len(issue.comment_ids),
            "created_at": _iso(issue.created_at),
            "updated_at": _iso(issue.updated_at),
            "closed_at": _iso(issue.closed_at),
            "author_association": self._association(repo, issue.user),
            "active_lock_reason": None,
            "body": issue.body,
            "closed_by": self._user_json(issue.closed_by) if issue.closed_by else None,
            "state_reason": issue.state_reason,
            "timeline_url": f"{api}/issues/{n}/timeline",
            "performed_via_github_app": None,
        }
        if issue.pull is not None:
            data["draft"] = issue.pull.draft
            data["pull_request"] = {
                "url": f"{api}/pulls/{n}",
                "html_url": f"{html}/pull/{n}",
                "diff_url": f"{html}/pull/{n}.diff",
                "patch_url": f"{html}/pull/{n}.patch",
                "merged_at": None,
            }
        return data

    def _comment_json(self, comment: _Comment) -> dict[str, Any]:
        repo = self._repos[comment.repo]
        api, html = self._api(repo), self._html(repo)
        kind = "pull" if repo.issues[comment.number].pull is not None else "issues"
        return {
            "id": comment.id,
            "node_id": f"IC_fake{comment.id}",
            "url": f"{api}/issues/comments/{comment.id}",
            "html_url": f"{html}/{kind}/{comment.number}#issuecomment-{comment.id}",
            "body": comment.body,
            "user": self._user_json(comment.user),
            "created_at": _iso(comment.created_at),
            "updated_at": _iso(comment.updated_at),
            "issue_url": f"{api}/issues/{comment.number}",
            "author_association": self._association(repo, comment.user),
            "performed_via_github_app": None,
        }

    # git -----------------------------------------------------------------------------------

    def _refs(self, repo: _Repo) -> dict[str, tuple[str, str]]:
        """Every ref in the bare repository: name -> (sha, object type)."""
        out = _git(
            repo.git_dir, "for-each-ref", "--format=%(refname)%00%(objectname)%00%(objecttype)"
        ).stdout
        refs: dict[str, tuple[str, str]] = {}
        for line in out.splitlines():
            name, sha, kind = line.split("\0")
            refs[name] = (sha, kind)
        return refs

    def _ref_json(self, repo: _Repo, name: str, sha: str, kind: str) -> dict[str, Any]:
        api = self._api(repo)
        return {
            "ref": name,
            "node_id": f"REF_fake{hashlib.sha1(name.encode()).hexdigest()[:12]}",
            "url": f"{api}/git/{_quote(name)}",
            "object": {"sha": sha, "type": kind, "url": f"{api}/git/{kind}s/{sha}"},
        }

    def _resolve(self, repo: _Repo, rev: str) -> str | None:
        """A branch, tag or commit sha -> commit sha, or None."""
        if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
            return None
        refs = self._refs(repo)
        candidates = [f"refs/heads/{rev}", f"refs/tags/{rev}"]
        if re.fullmatch(r"[0-9a-fA-F]{4,40}", rev):
            candidates.append(rev)
        for candidate in candidates:
            if candidate.startswith("refs/") and candidate not in refs:
                continue
            proc = _git(
                repo.git_dir,
                "rev-parse",
                "--verify",
                "--quiet",
                f"{candidate}^{{commit}}",
                check=False,
            )
            if proc.returncode == 0:
                return proc.stdout.strip()
        return None

    def _commit_shapes(self, repo: _Repo, *rev_args: str) -> list[dict[str, Any]]:
        fields = "%H%x00%T%x00%P%x00%an%x00%ae%x00%at%x00%cn%x00%ce%x00%ct%x00%B%x1e"
        out = _git(repo.git_dir, "log", f"--format={fields}", *rev_args).stdout
        api, html = self._api(repo), self._html(repo)
        commits = []
        for record in out.split("\x1e"):
            record = record.strip("\n")
            if not record:
                continue
            sha, tree, parents, an, ae, at, cn, ce, ct, message = record.split("\0")
            commits.append(
                {
                    "sha": sha,
                    "node_id": f"C_fake{sha[:12]}",
                    "url": f"{api}/commits/{sha}",
                    "html_url": f"{html}/commit/{sha}",
                    "comments_url": f"{api}/commits/{sha}/comments",
                    "commit": {
                        "url": f"{api}/git/commits/{sha}",
                        "message": message.rstrip("\n"),
                        "author": {"name": an, "email": ae, "date": _iso(int(at))},
                        "committer": {"name": cn, "email": ce, "date": _iso(int(ct))},
                        "tree": {"sha": tree, "url": f"{api}/git/trees/{tree}"},
                        "comment_count": 0,
                    },
                    "author": None,
                    "committer": None,
                    "parents": [
                        {"sha": p, "url": f"{api}/commits/{p}", "html_url": f"{html}/commit/{p}"}
                        for p in parents.split()
                    ],
                }
            )
        return commits

    def _commit_shape(self, repo: _Repo, sha: str) -> dict[str, Any]:
        return self._commit_shapes(repo, "-1", sha)[0]

    def _pull_head_sha(self, pull: _Pull, refs: dict[str, tuple[str, str]]) -> str:
        live = refs.get(f"refs/heads/{pull.head}")
        return live[0] if live else pull.head_sha

    def _ahead_behind(self, repo: _Repo, base_sha: str, head_sha: str) -> tuple[int, int]:
        out = _git(
            repo.git_dir, "rev-list", "--left-right", "--count", f"{base_sha}...{head_sha}"
        ).stdout
        behind, ahead = (int(x) for x in out.split())
        return ahead, behind

    # ---------------------------------------------------------------------------- endpoints

    def _get_user(self, ctx: _Ctx) -> _Resp:
        data = self._user_json(ctx.login)
        data.update(
            name=ctx.login,
            company=None,
            blog="",
            location=None,
            email=None,
            hireable=None,
            bio=None,
            twitter_username=None,
            public_repos=sum(1 for r in self._repos.values() if r.owner == ctx.login),
            public_gists=0,
            followers=0,
            following=0,
            created_at=_iso(1_700_000_000),
            updated_at=_iso(1_700_000_000),
        )
        return _Resp(200, data)

    def _get_named_user(self, ctx: _Ctx, login: str) -> _Resp:
        known = {name.lower(): name for name in self._user_ids}
        if login.lower() not in known:
            raise _not_found()
        return _Resp(200, self._user_json(known[login.lower()]))

    def _get_rate_limit(self, ctx: _Ctx) -> _Resp:
        limit, remaining, used, reset = self._rate_numbers(ctx.login)
        core = {"limit": limit, "used": used, "remaining": remaining, "reset": reset}
        other_reset = int(time.time()) + 60
        resources = {
            "core": {**core, "resource": "core"},
            "search": {"limit": 30, "used": 0, "remaining": 30, "reset": other_reset},
            "graphql": {"limit": 5000, "used": 0, "remaining": 5000, "reset": reset},
            "integration_manifest": {
                "limit": 5000,
                "used": 0,
                "remaining": 5000,
                "reset": reset,
            },
            "code_search": {"limit": 10, "used": 0, "remaining": 10, "reset": other_reset},
        }
        return _Resp(200, {"resources": resources, "rate": core})

    def _get_repo(self, ctx: _Ctx, owner: str, repo: str) -> _Resp:
        return _Resp(200, self._repo_json(self._repo(owner, repo)))

    # issues ------------------------------------------------------------------------------

    def _enum(self, ctx: _Ctx, key: str, allowed: tuple[str, ...], default: str) -> str:
        value = ctx.query.get(key, default) or default
        if value not in allowed:
            raise _validation({"resource": "Search", "field": key, "code": "invalid"})
        return value

    def _since(self, ctx: _Ctx) -> int | None:
        if "since" not in ctx.query:
            return None
        since = _parse_iso(ctx.query["since"])
        if since is None:
            raise _validation({"resource": "Issue", "field": "since", "code": "invalid"})
        return since

    def _list_issues(self, ctx: _Ctx, owner: str, repo: str) -> _Resp:
        r = self._repo(owner, repo)
        state = self._enum(ctx, "state", ("open", "closed", "all"), "open")
        sort = self._enum(ctx, "sort", ("created", "updated", "comments"), "created")
        direction = self._enum(ctx, "direction", ("asc", "desc"), "desc")
        since = self._since(ctx)
        wanted = {n.strip().lower() for n in ctx.query.get("labels", "").split(",") if n.strip()}
        assignee = ctx.query.get("assignee")
        creator = ctx.query.get("creator")
        items = []
        for issue in r.issues.values():
            if state != "all" and issue.state != state:
                continue
            if not wanted <= {name.lower() for name in issue.labels}:
                continue
            if since is not None and issue.updated_at < since:
                continue
            if creator is not None and issue.user.lower() != creator.lower():
                continue
            if assignee == "none" and issue.assignees:
                continue
            if assignee == "*" and not issue.assignees:
                continue
            if assignee not in (None, "none", "*") and assignee.lower() not in {
                a.lower() for a in issue.assignees
            }:
                continue
            items.append(issue)

        def key(issue: _Issue) -> tuple[int, int]:
            if sort == "updated":
                return issue.updated_at, issue.number
            if sort == "comments":
                return len(issue.comment_ids), issue.number
            return issue.created_at, issue.number

        items.sort(key=key, reverse=direction == "desc")
        return self._page(ctx, [self._issue_json(r, issue) for issue in items])

    def _create_issue(self, ctx: _Ctx, owner: str, repo: str) -> _Resp:
        r = self._repo(owner, repo)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        title = body.get("title")
        if not isinstance(title, str | int) or not str(title).strip():
            raise _validation({"resource": "Issue", "field": "title", "code": "missing_field"})
        text = body.get("body")
        labels = self._resolve_labels(r, body.get("labels") or [], ctx.login)
        assignees = self._logins(body.get("assignees") or [], "assignees")
        issue = self._new_issue(r, str(title), text if isinstance(text, str) else None, ctx.login)
        self._set_labels(issue, labels, ctx.login)
        issue.assignees = assignees
        data = self._issue_json(r, issue)
        return _Resp(201, data, {"Location": data["url"]})

    def _get_issue(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        return _Resp(200, self._issue_json(r, self._issue_of(r, int(number))))

    def _edit_issue(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        issue = self._issue_of(r, int(number))
        if not isinstance(ctx.body, dict):
            raise _HttpError(400, "Problems parsing JSON")
        self._apply_issue_edit(r, issue, ctx.body, ctx.login)
        return _Resp(200, self._issue_json(r, issue))

    # comments ----------------------------------------------------------------------------

    def _list_comments(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        issue = self._issue_of(r, int(number))
        since = self._since(ctx)
        comments = [self._comments[cid] for cid in issue.comment_ids]
        if since is not None:
            comments = [c for c in comments if c.updated_at >= since]
        return self._page(ctx, [self._comment_json(c) for c in comments])

    def _list_repo_comments(self, ctx: _Ctx, owner: str, repo: str) -> _Resp:
        r = self._repo(owner, repo)
        sort = self._enum(ctx, "sort", ("created", "updated"), "created")
        direction = self._enum(ctx, "direction", ("asc", "desc"), "asc")
        since = self._since(ctx)
        key = r.full_name.lower()
        comments = [c for c in self._comments.values() if c.repo == key]
        if since is not None:
            comments = [c for c in comments if c.updated_at >= since]
        if sort == "updated":
            comments.sort(key=lambda c: (c.updated_at, c.id), reverse=direction == "desc")
        else:
            comments.sort(key=lambda c: (c.created_at, c.id), reverse=direction == "desc")
        return self._page(ctx, [self._comment_json(c) for c in comments])

    def _comment_body(self, ctx: _Ctx) -> str:
        body = ctx.body.get("body") if isinstance(ctx.body, dict) else None
        if not isinstance(body, str) or not body:
            raise _validation(
                {"resource": "IssueComment", "field": "body", "code": "missing_field"}
            )
        return body

    def _create_comment(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        issue = self._issue_of(r, int(number))
        if issue.locked:
            self._require(
                r, ctx.login, "write", "Unable to create comment because issue is locked."
            )
        comment = self._new_comment(r, issue, self._comment_body(ctx), ctx.login)
        data = self._comment_json(comment)
        return _Resp(201, data, {"Location": data["url"]})

    def _comment_of(self, owner: str, repo: str, cid: str) -> _Comment:
        r = self._repo(owner, repo)
        comment = self._comments.get(int(cid))
        if comment is None or comment.repo != r.full_name.lower():
            raise _not_found()
        return comment

    def _get_comment(self, ctx: _Ctx, owner: str, repo: str, cid: str) -> _Resp:
        return _Resp(200, self._comment_json(self._comment_of(owner, repo, cid)))

    def _edit_comment(self, ctx: _Ctx, owner: str, repo: str, cid: str) -> _Resp:
        comment = self._comment_of(owner, repo, cid)
        comment.body = self._comment_body(ctx)
        comment.updated_at = self._stamp()
        return _Resp(200, self._comment_json(comment))

    def _delete_comment(self, ctx: _Ctx, owner: str, repo: str, cid: str) -> _Resp:
        comment = self._comment_of(owner, repo, cid)
        del self._comments[comment.id]
        self._repos[comment.repo].issues[comment.number].comment_ids.remove(comment.id)
        return _Resp(204)

    # labels ------------------------------------------------------------------------------

    @staticmethod
    def _label_payload(body: Any) -> list[Any]:
        if isinstance(body, dict):
            body = body.get("labels")
        if not isinstance(body, list):
            raise _validation({"resource": "Label", "field": "labels", "code": "invalid"})
        return body

    def _issue_labels_resp(self, r: _Repo, issue: _Issue) -> _Resp:
        return _Resp(200, [self._label_json(r, name) for name in issue.labels])

    def _list_issue_events(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        return self._page(ctx, list(self._issue_of(r, int(number)).events))

    def _get_permission(self, ctx: _Ctx, owner: str, repo: str, login: str) -> _Resp:
        r = self._repo(owner, repo)
        role = self._role(r, login)
        legacy = {"maintain": "write", "triage": "read"}.get(role, role)
        return _Resp(200, {"permission": legacy, "role_name": role, "user": self._user_json(login)})

    def _list_issue_labels(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        issue = self._issue_of(r, int(number))
        return self._page(ctx, [self._label_json(r, name) for name in issue.labels])

    def _add_issue_labels(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        issue = self._issue_of(r, int(number))
        self._require(r, ctx.login, "triage", "Must have triage access to add labels")
        added = self._resolve_labels(r, self._label_payload(ctx.body), ctx.login)
        labels = issue.labels + [name for name in added if name not in issue.labels]
        self._apply_issue_edit(r, issue, {"labels": labels}, ctx.login)
        return self._issue_labels_resp(r, issue)

    def _set_issue_labels(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        issue = self._issue_of(r, int(number))
        self._require(r, ctx.login, "triage", "Must have triage access to set labels")
        self._apply_issue_edit(r, issue, {"labels": self._label_payload(ctx.body)}, ctx.login)
        return self._issue_labels_resp(r, issue)

    def _clear_issue_labels(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        self._apply_issue_edit(r, self._issue_of(r, int(number)), {"labels": []}, ctx.login)
        return _Resp(204)

    def _remove_issue_label(
        self, ctx: _Ctx, owner: str, repo: str, number: str, name: str
    ) -> _Resp:
        r = self._repo(owner, repo)
        issue = self._issue_of(r, int(number))
        remaining = [label for label in issue.labels if label.lower() != name.lower()]
        if len(remaining) == len(issue.labels):
            raise _HttpError(404, "Label does not exist")
        self._apply_issue_edit(r, issue, {"labels": remaining}, ctx.login)
        return self._issue_labels_resp(r, issue)

    def _list_labels(self, ctx: _Ctx, owner: str, repo: str) -> _Resp:
        r = self._repo(owner, repo)
        labels = sorted(r.labels.values(), key=lambda label: label.id)
        return self._page(ctx, [self._label_json(r, label.name) for label in labels])

    def _create_label(self, ctx: _Ctx, owner: str, repo: str) -> _Resp:
        r = self._repo(owner, repo)
        self._require(r, ctx.login, "write", "Must have push access to create a label")
        body = ctx.body if isinstance(ctx.body, dict) else {}
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _validation({"resource": "Label", "field": "name", "code": "missing_field"})
        if name.strip().lower() in r.labels:
            raise _validation({"resource": "Label", "field": "name", "code": "already_exists"})
        color = str(body.get("color") or DEFAULT_LABEL_COLOR).removeprefix("#")
        label = self._label(r, name.strip(), color)
        description = body.get("description")
        label.description = description if isinstance(description, str) else None
        data = self._label_json(r, label.name)
        return _Resp(201, data, {"Location": data["url"]})

    def _get_label(self, ctx: _Ctx, owner: str, repo: str, name: str) -> _Resp:
        r = self._repo(owner, repo)
        if name.lower() not in r.labels:
            raise _not_found()
        return _Resp(200, self._label_json(r, name))

    # assignees ---------------------------------------------------------------------------

    def _assignee_payload(self, ctx: _Ctx) -> list[str]:
        value = ctx.body.get("assignees") if isinstance(ctx.body, dict) else None
        return self._logins(value if value is not None else [], "assignees")

    def _add_assignees(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        issue = self._issue_of(r, int(number))
        self._require(r, ctx.login, "triage", "Must have triage access to assign")
        new = issue.assignees + [a for a in self._assignee_payload(ctx) if a not in issue.assignees]
        self._apply_issue_edit(r, issue, {"assignees": new[:10]}, ctx.login)
        return _Resp(201, self._issue_json(r, issue))

    def _remove_assignees(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        issue = self._issue_of(r, int(number))
        gone = {a.lower() for a in self._assignee_payload(ctx)}
        kept = [a for a in issue.assignees if a.lower() not in gone]
        self._apply_issue_edit(r, issue, {"assignees": kept}, ctx.login)
        return _Resp(200, self._issue_json(r, issue))

    # git refs ----------------------------------------------------------------------------

    def _get_ref(self, ctx: _Ctx, owner: str, repo: str, ref: str) -> _Resp:
        r = self._repo(owner, repo)
        name = f"refs/{ref}"
        found = self._refs(r).get(name)
        if found is None:
            raise _not_found()
        return _Resp(200, self._ref_json(r, name, *found))

    def _get_refs_legacy(self, ctx: _Ctx, owner: str, repo: str, ref: str) -> _Resp:
        # As GitHub: an exact match is one object; otherwise the refs under that prefix, a list.
        r = self._repo(owner, repo)
        name = f"refs/{ref}"
        refs = self._refs(r)
        if name in refs:
            return _Resp(200, self._ref_json(r, name, *refs[name]))
        under = [(n, v) for n, v in sorted(refs.items()) if n.startswith(name.rstrip("/") + "/")]
        if not under:
            raise _not_found()
        return self._page(ctx, [self._ref_json(r, n, *v) for n, v in under])

    def _list_refs(self, ctx: _Ctx, owner: str, repo: str) -> _Resp:
        r = self._repo(owner, repo)
        refs = sorted(self._refs(r).items())
        return self._page(ctx, [self._ref_json(r, n, *v) for n, v in refs])

    def _matching_refs(self, ctx: _Ctx, owner: str, repo: str, ref: str) -> _Resp:
        r = self._repo(owner, repo)
        prefix = f"refs/{ref}"
        refs = [(n, v) for n, v in sorted(self._refs(r).items()) if n.startswith(prefix)]
        return self._page(ctx, [self._ref_json(r, n, *v) for n, v in refs])

    def _valid_ref_name(self, name: Any) -> bool:
        if not isinstance(name, str) or not name.startswith("refs/") or name.count("/") < 2:
            return False
        return _git(None, "check-ref-format", name, check=False).returncode == 0

    def _object_type(self, r: _Repo, sha: Any) -> str | None:
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{40}", sha):
            return None
        proc = _git(r.git_dir, "cat-file", "-t", sha, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def _create_ref(self, ctx: _Ctx, owner: str, repo: str) -> _Resp:
        r = self._repo(owner, repo)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        name, sha = body.get("ref"), body.get("sha")
        if not self._valid_ref_name(name):
            raise _HttpError(422, "Reference name is not valid")  # GitHub's wording
        kind = self._object_type(r, sha)
        if kind is None:
            raise _HttpError(422, "Object does not exist")
        if name in self._refs(r):
            raise _HttpError(422, "Reference already exists")
        proc = _git(r.git_dir, "update-ref", name, sha, "", check=False)
        if proc.returncode != 0:
            raise _HttpError(422, "Reference already exists")
        data = self._ref_json(r, name, sha, kind)
        return _Resp(201, data, {"Location": data["url"]})

    def _update_ref(self, ctx: _Ctx, owner: str, repo: str, ref: str) -> _Resp:
        r = self._repo(owner, repo)
        name = f"refs/{ref}"
        body = ctx.body if isinstance(ctx.body, dict) else {}
        current = self._refs(r).get(name)
        if current is None:
            raise _HttpError(422, "Reference does not exist")
        sha = body.get("sha")
        kind = self._object_type(r, sha)
        if kind is None:
            raise _HttpError(422, "Object does not exist")
        if not body.get("force"):
            ff = _git(r.git_dir, "merge-base", "--is-ancestor", current[0], sha, check=False)
            if ff.returncode != 0:
                raise _HttpError(422, "Update is not a fast forward")
        _git(r.git_dir, "update-ref", name, sha, current[0])
        return _Resp(200, self._ref_json(r, name, sha, kind))

    def _delete_ref(self, ctx: _Ctx, owner: str, repo: str, ref: str) -> _Resp:
        r = self._repo(owner, repo)
        name = f"refs/{ref}"
        current = self._refs(r).get(name)
        if current is None:
            raise _HttpError(422, "Reference does not exist")
        _git(r.git_dir, "update-ref", "-d", name, current[0])
        return _Resp(204)

    def _branch_json(self, r: _Repo, name: str, sha: str, *, full: bool) -> dict[str, Any]:
        api, html = self._api(r), self._html(r)
        commit = self._commit_shape(r, sha) if full else {"sha": sha, "url": f"{api}/commits/{sha}"}
        data: dict[str, Any] = {"name": name, "commit": commit, "protected": False}
        if full:
            data["_links"] = {
                "self": f"{api}/branches/{_quote(name)}",
                "html": f"{html}/tree/{_quote(name)}",
            }
            data["protection"] = {
                "enabled": False,
                "required_status_checks": {
                    "enforcement_level": "off",
                    "contexts": [],
                    "checks": [],
                },
            }
            data["protection_url"] = f"{api}/branches/{_quote(name)}/protection"
        return data

    def _list_branches(self, ctx: _Ctx, owner: str, repo: str) -> _Resp:
        r = self._repo(owner, repo)
        heads = [
            (name.removeprefix("refs/heads/"), sha)
            for name, (sha, _) in sorted(self._refs(r).items())
            if name.startswith("refs/heads/")
        ]
        return self._page(ctx, [self._branch_json(r, n, sha, full=False) for n, sha in heads])

    def _get_branch(self, ctx: _Ctx, owner: str, repo: str, branch: str) -> _Resp:
        r = self._repo(owner, repo)
        found = self._refs(r).get(f"refs/heads/{branch}")
        if found is None:
            raise _HttpError(404, "Branch not found")
        return _Resp(200, self._branch_json(r, branch, found[0], full=True))

    def _get_commit(self, ctx: _Ctx, owner: str, repo: str, rev: str) -> _Resp:
        r = self._repo(owner, repo)
        sha = self._resolve(r, rev)
        if sha is None:
            raise _HttpError(422, f"No commit found for SHA: {rev}")
        data = self._commit_shape(r, sha)
        data.update(stats={"total": 0, "additions": 0, "deletions": 0}, files=[])
        return _Resp(200, data)

    def _strip_owner(self, r: _Repo, rev: str) -> str:
        owner, sep, rest = rev.partition(":")
        if not sep:
            return rev
        if owner.lower() != r.owner.lower():
            raise _not_found()  # forks are not modelled
        return rest

    def _compare(self, ctx: _Ctx, owner: str, repo: str, spec: str) -> _Resp:
        r = self._repo(owner, repo)
        base, sep, head = spec.partition("...")
        if not sep:
            base, sep, head = spec.partition("..")
        if not sep:
            raise _not_found()
        base, head = self._strip_owner(r, base), self._strip_owner(r, head)
        base_sha, head_sha = self._resolve(r, base), self._resolve(r, head)
        if base_sha is None or head_sha is None:
            raise _not_found()
        merge_base = _git(r.git_dir, "merge-base", base_sha, head_sha, check=False)
        if merge_base.returncode != 0:
            raise _HttpError(404, f"No common ancestor between {base} and {head}.")
        ahead, behind = self._ahead_behind(r, base_sha, head_sha)
        if ahead == 0 and behind == 0:
            status = "identical"
        elif behind == 0:
            status = "ahead"
        elif ahead == 0:
            status = "behind"
        else:
            status = "diverged"
        commits = self._commit_shapes(r, "--reverse", f"{base_sha}..{head_sha}")
        window, headers = self._paginate(ctx, len(commits), default=250, maximum=1000)
        api, html = self._api(r), self._html(r)
        data = {
            "url": f"{api}/compare/{_quote(base)}...{_quote(head)}",
            "html_url": f"{html}/compare/{_quote(base)}...{_quote(head)}",
            "permalink_url": f"{html}/compare/{base_sha}...{head_sha}",
            "diff_url": f"{html}/compare/{_quote(base)}...{_quote(head)}.diff",
            "patch_url": f"{html}/compare/{_quote(base)}...{_quote(head)}.patch",
            "base_commit": self._commit_shape(r, base_sha),
            "merge_base_commit": self._commit_shape(r, merge_base.stdout.strip()),
            "status": status,
            "ahead_by": ahead,
            "behind_by": behind,
            "total_commits": ahead,
            "commits": commits[window],
            "files": [],
        }
        return _Resp(200, data, headers)

    # pull requests -----------------------------------------------------------------------

    def _part_json(self, r: _Repo, ref: str, sha: str) -> dict[str, Any]:
        return {
            "label": f"{r.owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": self._user_json(r.owner),
            "repo": self._repo_json(r),
        }

    def _pull_json(
        self, r: _Repo, issue: _Issue, refs: dict[str, tuple[str, str]]
    ) -> dict[str, Any]:
        assert issue.pull is not None
        pull = issue.pull
        api, html, n = self._api(r), self._html(r), issue.number
        head_sha = self._pull_head_sha(pull, refs)
        base_found = refs.get(f"refs/heads/{pull.base}")
        base_sha = base_found[0] if base_found else head_sha
        commits = self._ahead_behind(r, base_sha, head_sha)[0] if base_found else 0
        return {
            "url": f"{api}/pulls/{n}",
            "id": pull.id,
            "node_id": f"PR_fake{pull.id}",
            "html_url": f"{html}/pull/{n}",
            "diff_url": f"{html}/pull/{n}.diff",
            "patch_url": f"{html}/pull/{n}.patch",
            "issue_url": f"{api}/issues/{n}",
            "commits_url": f"{api}/pulls/{n}/commits",
            "review_comments_url": f"{api}/pulls/{n}/comments",
            "review_comment_url": f"{api}/pulls/comments{{/number}}",
            "comments_url": f"{api}/issues/{n}/comments",
            "statuses_url": f"{api}/statuses/{head_sha}",
            "number": n,
            "state": issue.state,
            "locked": issue.locked,
            "title": issue.title,
            "user": self._user_json(issue.user),
            "body": issue.body,
            "labels": [self._label_json(r, name) for name in issue.labels],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": _iso(issue.created_at),
            "updated_at": _iso(issue.updated_at),
            "closed_at": _iso(issue.closed_at),
            "merged_at": None,
            "merge_commit_sha": None,
            "assignee": self._user_json(issue.assignees[0]) if issue.assignees else None,
            "assignees": [self._user_json(login) for login in issue.assignees],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": self._part_json(r, pull.head, head_sha),
            "base": self._part_json(r, pull.base, base_sha),
            "_links": {
                "self": {"href": f"{api}/pulls/{n}"},
                "html": {"href": f"{html}/pull/{n}"},
                "issue": {"href": f"{api}/issues/{n}"},
                "comments": {"href": f"{api}/issues/{n}/comments"},
            },
            "author_association": self._association(r, issue.user),
            "auto_merge": None,
            "draft": pull.draft,
            "merged": False,
            "mergeable": None,
            "rebaseable": None,
            "mergeable_state": "unknown",
            "merged_by": None,
            "comments": len(issue.comment_ids),
            "review_comments": 0,
            "maintainer_can_modify": False,
            "commits": commits,
            "additions": 0,
            "deletions": 0,
            "changed_files": 0,
        }

    def _pull_of(self, r: _Repo, number: str) -> _Issue:
        issue = self._issue_of(r, int(number))
        if issue.pull is None:
            raise _not_found()
        return issue

    def _list_pulls(self, ctx: _Ctx, owner: str, repo: str) -> _Resp:
        r = self._repo(owner, repo)
        state = self._enum(ctx, "state", ("open", "closed", "all"), "open")
        sort = self._enum(
            ctx, "sort", ("created", "updated", "popularity", "long-running"), "created"
        )
        default_direction = "desc" if sort == "created" else "asc"
        direction = self._enum(ctx, "direction", ("asc", "desc"), default_direction)
        head = ctx.query.get("head")
        if head is not None and ":" in head:
            head_owner, _, head = head.partition(":")
            if head_owner.lower() != r.owner.lower():
                head = "\0"  # a fork's branch: nothing matches
        base = ctx.query.get("base")
        pulls = [
            i
            for i in r.issues.values()
            if i.pull is not None
            and (state == "all" or i.state == state)
            and (head is None or i.pull.head == head)
            and (base is None or i.pull.base == base)
        ]
        if sort == "updated":
            pulls.sort(key=lambda i: (i.updated_at, i.number), reverse=direction == "desc")
        else:
            pulls.sort(key=lambda i: (i.created_at, i.number), reverse=direction == "desc")
        refs = self._refs(r)
        return self._page(ctx, [self._pull_json(r, i, refs) for i in pulls])

    def _create_pull(self, ctx: _Ctx, owner: str, repo: str) -> _Resp:
        r = self._repo(owner, repo)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        title, head, base = body.get("title"), body.get("head"), body.get("base")
        if not isinstance(title, str) or not title.strip():
            raise _validation(
                {"resource": "PullRequest", "field": "title", "code": "missing_field"}
            )
        if not isinstance(base, str) or not base:
            raise _validation({"resource": "PullRequest", "field": "base", "code": "missing_field"})
        if not isinstance(head, str) or not head:
            raise _validation({"resource": "PullRequest", "field": "head", "code": "missing_field"})
        if ":" in head:
            head_owner, _, head = head.partition(":")
            if head_owner.lower() != r.owner.lower():
                raise _validation({"resource": "PullRequest", "field": "head", "code": "invalid"})
        refs = self._refs(r)
        base_ref, head_ref = refs.get(f"refs/heads/{base}"), refs.get(f"refs/heads/{head}")
        if base_ref is None:
            raise _validation({"resource": "PullRequest", "field": "base", "code": "invalid"})
        if head_ref is None:
            raise _validation({"resource": "PullRequest", "field": "head", "code": "invalid"})
        for other in r.issues.values():
            if (
                other.pull is not None
                and other.state == "open"
                and (other.pull.head, other.pull.base) == (head, base)
            ):
                message = f"A pull request already exists for {r.owner}:{head}."
                raise _validation({"resource": "PullRequest", "code": "custom", "message": message})
        if self._ahead_behind(r, base_ref[0], head_ref[0])[0] == 0:
            message = f"No commits between {base} and {head}"
            raise _validation({"resource": "PullRequest", "code": "custom", "message": message})
        text = body.get("body")
        issue = self._new_issue(r, title, text if isinstance(text, str) else None, ctx.login)
        issue.pull = _Pull(
            id=self._next_pull_id,
            head=head,
            base=base,
            head_sha=head_ref[0],
            draft=bool(body.get("draft", False)),
        )
        self._next_pull_id += 1
        data = self._pull_json(r, issue, refs)
        return _Resp(201, data, {"Location": data["url"]})

    def _list_reviews(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        pull = self._pull_of(r, number).pull
        assert pull is not None
        return self._page(ctx, list(pull.reviews))

    def _get_pull(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        return _Resp(200, self._pull_json(r, self._pull_of(r, number), self._refs(r)))

    def _edit_pull(self, ctx: _Ctx, owner: str, repo: str, number: str) -> _Resp:
        r = self._repo(owner, repo)
        issue = self._pull_of(r, number)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        assert issue.pull is not None
        base = body.get("base")
        if base is not None and base != issue.pull.base:
            if f"refs/heads/{base}" not in self._refs(r):
                raise _validation({"resource": "PullRequest", "field": "base", "code": "invalid"})
            issue.pull.base = base
            issue.updated_at = self._stamp()
        edit = {k: body[k] for k in ("title", "body", "state") if k in body}
        self._apply_issue_edit(r, issue, edit, ctx.login)
        return _Resp(200, self._pull_json(r, issue, self._refs(r)))
