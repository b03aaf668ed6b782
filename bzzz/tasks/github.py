"""GitHub through PyGithub: blocking calls in worker threads, one request per operation.

PyGithub's retry (urllib3) backs off with jitter on 5xx answers, timeouts and connection errors.
Rate limits are ours to honour: a 403 with `X-RateLimit-Reset` or `Retry-After` closes a gate
that every later call waits at (in the event loop, never in a thread) until GitHub allows again,
and polls stop while the remaining budget is at its reserve. Polls are conditional
(`If-None-Match`): an unchanged answer is a 304, which GitHub does not count.

The token goes only into PyGithub's auth and into the clone URL given to git; every message this
module produces passes through `redact`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import structlog

from bzzz.tasks.model import Task

if TYPE_CHECKING:
    pass

log = structlog.get_logger(__name__)

T = TypeVar("T")

PER_PAGE = 100
TIMEOUT_S = 15
WORKERS = 4
# Keep this share of the hourly budget for claims and results: polls stop before it is spent.
POLL_RESERVE = 0.05
TOKEN_CREDENTIAL = "github-token"


class GitHubError(Exception):
    """GitHub did not do what was asked (outage, rate limit, refusal); safe to log."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Comment:
    id: int
    body: str
    user: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RepoInfo:
    default_branch: str
    clone_url: str


def load_token(
    credentials_dir: Path | None, token_file: str, env: Mapping[str, str]
) -> tuple[str, str] | None:
    """The token and where it came from: systemd's credential, `token_file`, or
    $BZZZ_GITHUB_TOKEN, in that order. A blank token is no token."""
    candidates: list[tuple[str, Callable[[], str]]] = []
    if credentials_dir is not None:
        path = credentials_dir / TOKEN_CREDENTIAL
        candidates.append((str(path), lambda: path.read_text() if path.exists() else ""))
    if token_file:
        candidates.append((token_file, lambda: Path(token_file).read_text()))
    candidates.append(("$BZZZ_GITHUB_TOKEN", lambda: env.get("BZZZ_GITHUB_TOKEN", "")))
    for source, read in candidates:
        token = read().strip()
        if token:
            return token, source
    return None


class GitHub:
    def __init__(
        self,
        base_url: str,
        token: str,
        request_interval: float = 0.25,
        write_interval: float = 1.0,
    ) -> None:
        # Imported here: PyGithub (and requests) cost a node without a token ~6 MB for nothing.
        import github

        self._pygithub = github
        self._token = token
        self._gh = github.Github(
            base_url=base_url.rstrip("/"),
            auth=github.Auth.Token(token),
            timeout=TIMEOUT_S,
            per_page=PER_PAGE,
            lazy=True,
            seconds_between_requests=request_interval or None,
            seconds_between_writes=write_interval or None,
            retry=github.GithubRetry(
                total=4, backoff_factor=0.5, backoff_jitter=0.5, max_rate_limit_wait=0
            ),
        )
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="github")
        self._resume_at = 0.0  # monotonic: no calls before (rate limited)
        self._etags: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self._repos: dict[str, RepoInfo] = {}
        self.requests = 0
        self.not_modified = 0
        self.limited = 0

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._gh.close()

    # ---- the gate --------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def budget(self) -> dict[str, Any]:
        remaining, limit = self._gh.rate_limiting
        return {
            "remaining": remaining,
            "limit": limit,
            "reset": self._gh.rate_limiting_resettime,
            "paused_s": max(0.0, round(self._resume_at - time.monotonic(), 1)),
            "requests": self.requests,
            "not_modified": self.not_modified,
            "rate_limited": self.limited,
        }

    def can_poll(self) -> bool:
        """False while only the reserve of the hourly budget is left (claims still go)."""
        remaining, limit = self._gh.rate_limiting
        return limit <= 0 or remaining > limit * POLL_RESERVE

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        delay = self._resume_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self.requests += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except self._pygithub.RateLimitExceededException as exc:
            self._pause(exc.headers or {})
            raise GitHubError(f"{what}: rate limited", 403) from None
        except self._pygithub.GithubException as exc:
            message = exc.data.get("message") if isinstance(exc.data, dict) else exc.data
            raise GitHubError(self.redact(f"{what}: {exc.status} {message}"), exc.status) from None
        except Exception as exc:  # connection errors, timeouts after PyGithub's retries
            raise GitHubError(self.redact(f"{what}: {type(exc).__name__}: {exc}")) from None

    def _pause(self, headers: Mapping[str, Any]) -> None:
        lowered = {str(k).lower(): v for k, v in headers.items()}
        if "retry-after" in lowered:
            wait = float(lowered["retry-after"])
        else:
            wait = float(lowered.get("x-ratelimit-reset", time.time() + 60)) - time.time()
        wait = min(max(wait, 1.0), 3600.0)
        self._resume_at = max(self._resume_at, time.monotonic() + wait)
        self.limited += 1
        log.warning("github_rate_limited", resume_in_s=round(wait))

    # ---- reading ---------------------------------------------------------------------------

    async def poll(self, repository: str, label: str) -> list[Task] | None:
        """Open issues with `label`, oldest first; None when nothing changed since last time."""
        url = f"/repos/{repository}/issues"
        params = {
            "state": "open",
            "labels": label,
            "sort": "created",
            "direction": "asc",
            "per_page": PER_PAGE,
        }
        pages = await self._conditional_list(f"poll {repository}", url, params)
        if pages is None:
            return None
        return [
            Task.from_issue(repository, issue) for issue in pages if "pull_request" not in issue
        ]

    async def _conditional_list(
        self, what: str, url: str, params: dict[str, Any]
    ) -> list[dict[str, Any]] | None:
        cached = self._etags.get(url + repr(sorted(params.items())))
        headers = {"If-None-Match": cached[0]} if cached else {}

        def fetch() -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
            requester = self._gh.requester
            status, head, body = requester.requestJson(
                "GET", url, parameters=params, headers=headers
            )
            if status == 304:
                return status, head, []
            data = json.loads(body) if body else None
            if status >= 400:
                raise requester.createException(status, head, data or {})
            items = list(data or [])
            next_url = _next_link(head)
            while next_url:  # further pages only when the first one changed
                head, data = requester.requestJsonAndCheck("GET", next_url)
                items += list(data)
                next_url = _next_link(head)
            return status, head, items

        status, head, items = await self._call(what, fetch)
        if status == 304 and cached is not None:
            self.not_modified += 1
            return None
        etag = {str(k).lower(): v for k, v in head.items()}.get("etag")
        if etag:
            self._etags[url + repr(sorted(params.items()))] = (etag, items)
        return items

    async def issue(self, repository: str, number: int) -> Task:
        def fetch() -> dict[str, Any]:
            return dict(self._gh.get_repo(repository).get_issue(number).raw_data)

        return Task.from_issue(repository, await self._call(f"issue {repository}#{number}", fetch))

    async def comments(self, repository: str, number: int) -> list[Comment]:
        """All comments, oldest first (conditional: unchanged lists cost nothing)."""
        url = f"/repos/{repository}/issues/{number}/comments"
        params = {"per_page": PER_PAGE}
        items = await self._conditional_list(f"comments {repository}#{number}", url, params)
        if items is None:
            items = self._etags[url + repr(sorted(params.items()))][1]
        return [
            Comment(
                int(c["id"]),
                str(c.get("body") or ""),
                str((c.get("user") or {}).get("login")),
                _time(c["created_at"]),
                _time(c.get("updated_at") or c["created_at"]),
            )
            for c in items
        ]

    async def login(self) -> str:
        return await self._call("user", lambda: str(self._gh.get_user().login))

    async def repo_info(self, repository: str) -> RepoInfo:
        if repository not in self._repos:

            def fetch() -> RepoInfo:
                repo = self._gh.get_repo(repository)
                return RepoInfo(str(repo.default_branch), str(repo.clone_url))

            self._repos[repository] = await self._call(f"repo {repository}", fetch)
        return self._repos[repository]

    def authenticated_clone_url(self, clone_url: str) -> str:
        """The clone URL with the token in it for https (git needs it to push); as is else."""
        parts = urlsplit(clone_url)
        if parts.scheme != "https":
            return clone_url
        netloc = f"x-access-token:{quote(self._token, safe='')}@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def branch_sha(self, repository: str, branch: str) -> str | None:
        def fetch() -> str | None:
            try:  # lazy objects: the request happens on attribute access
                return str(self._gh.get_repo(repository).get_git_ref(f"heads/{branch}").object.sha)
            except self._pygithub.GithubException as exc:
                if exc.status == 404:
                    return None
                raise

        return await self._call(f"read branch {repository} {branch}", fetch)

    async def ahead_by(self, repository: str, base: str, head: str) -> int:
        return await self._call(
            f"compare {repository}",
            lambda: int(self._gh.get_repo(repository).compare(base, head).ahead_by),
        )

    # ---- writing ---------------------------------------------------------------------------

    async def comment(self, repository: str, number: int, body: str) -> Comment:
        def post() -> Comment:
            made = self._gh.get_repo(repository).get_issue(number).create_comment(body)
            return Comment(made.id, made.body, made.user.login, made.created_at, made.updated_at)

        return await self._call(f"comment on {repository}#{number}", post)

    async def edit_comment(self, repository: str, comment_id: int, body: str) -> None:
        url = f"/repos/{repository}/issues/comments/{comment_id}"
        await self._call(
            f"edit comment {comment_id}",
            lambda: self._gh.requester.requestJsonAndCheck("PATCH", url, input={"body": body}),
        )

    async def delete_comment(self, repository: str, comment_id: int) -> None:
        url = f"/repos/{repository}/issues/comments/{comment_id}"
        await self._call(
            f"delete comment {comment_id}",
            lambda: self._gh.requester.requestJsonAndCheck("DELETE", url),
        )

    async def add_labels(self, repository: str, number: int, *labels: str) -> None:
        await self._call(
            f"label {repository}#{number}",
            lambda: self._gh.get_repo(repository).get_issue(number).add_to_labels(*labels),
        )

    async def remove_label(self, repository: str, number: int, label: str) -> None:
        def remove() -> None:
            try:
                self._gh.get_repo(repository).get_issue(number).remove_from_labels(label)
            except self._pygithub.GithubException as exc:
                if exc.status != 404:  # not there: fine
                    raise

        await self._call(f"unlabel {repository}#{number}", remove)

    async def assign(self, repository: str, number: int, login: str) -> None:
        await self._call(
            f"assign {repository}#{number}",
            lambda: self._gh.get_repo(repository).get_issue(number).add_to_assignees(login),
        )

    async def unassign(self, repository: str, number: int, login: str) -> None:
        await self._call(
            f"unassign {repository}#{number}",
            lambda: self._gh.get_repo(repository).get_issue(number).remove_from_assignees(login),
        )

    async def close_issue(self, repository: str, number: int) -> None:
        await self._call(
            f"close {repository}#{number}",
            lambda: (
                self._gh.get_repo(repository)
                .get_issue(number)
                .edit(state="closed", state_reason="completed")
            ),
        )

    async def create_branch(self, repository: str, branch: str, sha: str) -> None:
        await self._call(
            f"create branch {repository} {branch}",
            lambda: self._gh.get_repo(repository).create_git_ref(f"refs/heads/{branch}", sha),
        )

    async def create_pull(
        self, repository: str, title: str, body: str, head: str, base: str
    ) -> str:
        return await self._call(
            f"pull request {repository} {head}",
            lambda: str(
                self._gh.get_repo(repository)
                .create_pull(title=title, body=body, head=head, base=base)
                .html_url
            ),
        )


def _next_link(headers: Mapping[str, Any]) -> str | None:
    link = {str(k).lower(): v for k, v in headers.items()}.get("link", "")
    for part in str(link).split(","):
        url, _, rel = part.partition(";")
        if 'rel="next"' in rel:
            return url.strip().strip("<>")
    return None


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
