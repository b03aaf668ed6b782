"""GitHub's REST API as GitHub documents it, faults included; PyGithub does the HTTP.

Every call is one request (PyGithub's `requester`, its own retries off) run in a worker thread,
so the rules live here, where they can be seen and tested:

- **Retries** (tenacity): 5xx answers, timeouts and dropped connections are retried with
  jittered exponential backoff. Such a failure does not mean the request failed ("a write may
  have happened"), so a write that is not idempotent by nature (a new comment, a branch, a pull
  request) is retried only after reading whether it already happened.
- **Rate limits**, per "Rate limits for the REST API": a 403 or 429 with `retry-after` waits
  that long; with `x-ratelimit-remaining: 0` until `x-ratelimit-reset`; otherwise (a secondary
  limit without either) at least a minute, doubling while it goes on. The pause is one gate that
  every call of the node waits at, in the event loop. Polls stop while only 5 % of the hourly
  budget is left. GitHub Enterprise Server with rate limiting off sends no rate headers at all.
- **GitHub's clock**: each answer's `Date` header tells GitHub's time; leases are measured on it
  (`now()`), not on this machine's clock.
- **Lists** are read page by page, each page with its own ETag, so an unchanged list costs only
  304s (which GitHub does not count), however many pages it has.
- **Moved and gone issues**: PyGithub follows a 301 silently, so an issue read back is checked
  to be the one asked for (a transferred issue is `Moved`); 404 and 410 are `Gone`.

The token goes only into PyGithub's auth and into the environment of the daemon's own git
commands (`git_env`); every message this module produces passes through `redact`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bzzz.tasks.model import Task

log = structlog.get_logger(__name__)

T = TypeVar("T")

PER_PAGE = 100
TIMEOUT_S = 15
WORKERS = 4
ATTEMPTS = 5  # per call; reporting loops over calls until it is done
# Keep this share of the hourly budget for claims and results: polls stop before it is spent.
POLL_RESERVE = 0.05
SECONDARY_PAUSE_S = 60.0  # GitHub: "wait at least one minute", then exponentially longer
MAX_PAUSE_S = 3600.0
PAGES_KEPT = 2000  # cached list pages (ETag and items)
TOKEN_CREDENTIAL = "github-token"


class GitHubError(Exception):
    """GitHub did not do what was asked; safe to log (the token is redacted)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Transient(GitHubError):
    """A 5xx answer, a timeout or a dropped connection: it may or may not have happened."""


class RateLimited(GitHubError):
    """GitHub asked us to wait; every call waits at the gate until then."""


class Gone(GitHubError):
    """404 or 410: the issue (or what was asked for) is not there."""


class Moved(GitHubError):
    """The issue was transferred to another repository."""

    def __init__(self, message: str, repository: str, number: int) -> None:
        super().__init__(message, 301)
        self.repository = repository
        self.number = number


class Refused(GitHubError):
    """401, 403 (not a rate limit), 422: asking again will not help."""


RETRIED = (Transient, RateLimited)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    data: Any


@dataclass(frozen=True)
class Comment:
    id: int
    body: str
    user: str
    association: str  # GitHub's author_association: OWNER, MEMBER, COLLABORATOR, NONE, ...
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Comment:
        return cls(
            int(data["id"]),
            str(data.get("body") or ""),
            str((data.get("user") or {}).get("login") or ""),
            str(data.get("author_association") or "NONE"),
            _time(data["created_at"]),
            _time(data.get("updated_at") or data["created_at"]),
        )


@dataclass(frozen=True)
class Review:
    id: int
    user: str
    association: str
    state: str  # APPROVED, CHANGES_REQUESTED, COMMENTED
    body: str
    submitted_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Review:
        return cls(
            int(data["id"]),
            str((data.get("user") or {}).get("login") or ""),
            str(data.get("author_association") or "NONE"),
            str(data.get("state") or ""),
            str(data.get("body") or ""),
            _time(data.get("submitted_at") or "1970-01-01T00:00:00Z"),
        )


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


@dataclass
class _Page:
    etag: str
    items: list[dict[str, Any]]


class GitHub:
    def __init__(
        self,
        base_url: str,
        token: str,
        request_interval: float = 0.25,
        write_interval: float = 1.0,
        login: str = "",
    ) -> None:
        # Imported here: PyGithub (and requests) cost a node without a token ~6 MB for nothing.
        import github

        self._token = token
        self._gh = github.Github(
            base_url=base_url.rstrip("/"),
            auth=github.Auth.Token(token),
            timeout=TIMEOUT_S,
            per_page=PER_PAGE,
            # Our retries, not PyGithub's: its own would repeat a POST whose answer was lost.
            retry=None,
            seconds_between_requests=request_interval or None,
            seconds_between_writes=write_interval or None,
        )
        self._requester = self._gh.requester
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="github")
        self._login = login
        self._resume_at = 0.0  # monotonic: no calls before (rate limited)
        self._secondary_pause = SECONDARY_PAUSE_S
        self._clock_offset = 0.0  # GitHub's clock minus ours, from the Date headers
        self._rate: tuple[int, int, int] | None = None  # remaining, limit, reset (epoch)
        self._pages: OrderedDict[tuple[str, str, int], _Page] = OrderedDict()
        self._repos: dict[str, RepoInfo] = {}
        self.requests = 0
        self.not_modified = 0
        self.limited = 0
        self.retried = 0

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._gh.close()

    # ---- what the node tells ---------------------------------------------------------------

    def redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def now(self) -> datetime:
        """GitHub's clock, as its last answer told it."""
        return datetime.fromtimestamp(time.time() + self._clock_offset, UTC)

    def paused_for(self) -> float:
        """Seconds every call still waits at the rate-limit gate."""
        return max(0.0, self._resume_at - time.monotonic())

    def budget(self) -> dict[str, Any]:
        remaining, limit, reset = self._rate or (None, None, None)
        return {
            "remaining": remaining,
            "limit": limit,
            "reset": reset,
            "paused_s": round(self.paused_for(), 1),
            "requests": self.requests,
            "not_modified": self.not_modified,
            "rate_limited": self.limited,
            "retried": self.retried,
            "clock_offset_s": round(self._clock_offset, 1),
        }

    def can_poll(self) -> bool:
        """False while only the reserve of the hourly budget is left (claims still go), or while
        paused; a server without rate limits (GHES) can always poll."""
        if self.paused_for() > 0:
            return False
        if self._rate is None:
            return True
        remaining, limit, _ = self._rate
        return limit <= 0 or remaining > limit * POLL_RESERVE

    # ---- one request -----------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        etag: str | None = None,
    ) -> Answer:
        """One request, after the rate-limit gate; raises the GitHubError its answer means."""
        while (delay := self.paused_for()) > 0:  # noqa: ASYNC110 (a deadline, not an event)
            await asyncio.sleep(delay)
        self.requests += 1
        headers = {"If-None-Match": etag} if etag else {}

        def call() -> tuple[int, dict[str, Any], str]:
            return self._requester.requestJson(
                method, path, parameters=dict(params or {}), headers=headers, input=body
            )

        try:
            status, raw_headers, text = await asyncio.get_running_loop().run_in_executor(
                self._pool, call
            )
        except Exception as exc:  # connection errors, timeouts: nothing came back
            raise Transient(self.redact(f"{what}: {type(exc).__name__}: {exc}")) from None
        answer_headers = {str(k).lower(): str(v) for k, v in raw_headers.items()}
        self._observe(answer_headers)
        data = _json(text)
        if status < 300 or status == 304:
            self._secondary_pause = SECONDARY_PAUSE_S
            if status == 304:
                self.not_modified += 1
            return Answer(status, answer_headers, data)
        message = data.get("message", "") if isinstance(data, dict) else str(data)[:200]
        text = self.redact(f"{what}: {status} {message}")
        if status in (403, 429) and self._limit(status, answer_headers, message):
            raise RateLimited(text, status)
        if status >= 500:
            raise Transient(text, status)
        if status in (404, 410):
            raise Gone(text, status)
        raise Refused(text, status)

    def _observe(self, headers: Mapping[str, str]) -> None:
        """GitHub's clock and budget, from any answer."""
        if "date" in headers:
            try:
                told = parsedate_to_datetime(headers["date"]).timestamp()
            except (TypeError, ValueError):
                pass
            else:
                self._clock_offset = told - time.time()
        if "x-ratelimit-remaining" in headers:
            with contextlib.suppress(ValueError):
                self._rate = (
                    int(headers["x-ratelimit-remaining"]),
                    int(headers.get("x-ratelimit-limit", "0")),
                    int(headers.get("x-ratelimit-reset", "0")),
                )

    def _limit(self, status: int, headers: Mapping[str, str], message: str) -> bool:
        """Close the gate as GitHub documents, if this answer is a rate limit; say if it was."""
        if "retry-after" in headers:
            try:
                wait = float(headers["retry-after"])
            except ValueError:
                wait = SECONDARY_PAUSE_S
        elif headers.get("x-ratelimit-remaining") == "0":
            reset = float(headers.get("x-ratelimit-reset", "0"))
            wait = reset - (time.time() + self._clock_offset)
        elif status == 429 or "rate limit" in message.lower():
            wait = self._secondary_pause
            self._secondary_pause = min(self._secondary_pause * 2, MAX_PAUSE_S)
        else:
            return False  # a plain 403: forbidden
        wait = min(max(wait, 1.0), MAX_PAUSE_S)
        self._resume_at = max(self._resume_at, time.monotonic() + wait)
        self.limited += 1
        log.warning("github_rate_limited", status=status, resume_in_s=round(wait))
        return True

    async def _retrying(
        self,
        what: str,
        attempt: Callable[[], Awaitable[T]],
        check: Callable[[], Awaitable[T | None]] | None = None,
        attempts: int = ATTEMPTS,
    ) -> T:
        """`attempt` until it succeeds (or fails for good); before repeating a write whose
        answer was lost, `check` whether it happened after all."""

        def said(state: RetryCallState) -> None:
            # One line per retry, ours: PyGithub's urllib3 retries are off (retry=None).
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "github_retry",
                request=what,
                attempt=state.attempt_number,
                retry_in_s=round(state.upcoming_sleep, 1),
                error=str(error),
            )

        async for retry in AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(initial=1, max=30),
            retry=retry_if_exception_type(RETRIED),
            before_sleep=said,
            reraise=True,
        ):
            with retry:
                if retry.retry_state.attempt_number > 1:
                    self.retried += 1
                    if check is not None:
                        done = await check()
                        if done is not None:
                            return done
                return await attempt()
        raise AssertionError("unreachable: tenacity reraises")

    async def _get(self, path: str, what: str, **params: Any) -> Any:
        answer = await self._retrying(what, lambda: self.request("GET", path, what, params=params))
        return answer.data

    # ---- reading ---------------------------------------------------------------------------

    async def _list(
        self, path: str, what: str, params: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], bool]:
        """Every item of a paged list, and whether anything changed since the last read. Each
        page is asked with its own ETag: an unchanged page is a free 304."""
        items: list[dict[str, Any]] = []
        changed = False
        key = json.dumps(sorted(params.items()))
        page = 1
        while True:
            cache_key = (path, key, page)
            cached = self._pages.get(cache_key)
            query = {**params, "per_page": PER_PAGE, "page": page}

            async def fetch(query: dict[str, Any] = query, cached: _Page | None = cached) -> Answer:
                etag = cached.etag if cached else None
                return await self.request("GET", path, what, params=query, etag=etag)

            answer = await self._retrying(what, fetch)
            if answer.status == 304 and cached is not None:
                found = cached.items
                self._pages.move_to_end(cache_key)
            else:
                found = list(answer.data or [])
                changed = True
                self._pages[cache_key] = _Page(answer.headers.get("etag", ""), found)
                while len(self._pages) > PAGES_KEPT:
                    self._pages.popitem(last=False)
            items += found
            if len(found) < PER_PAGE:
                return items, changed
            page += 1

    async def poll(self, repository: str, label: str) -> list[Task] | None:
        """Open issues with `label`, oldest first; None when nothing changed since last time."""
        items, changed = await self._list(
            f"/repos/{repository}/issues",
            f"poll {repository}",
            {"state": "open", "labels": label, "sort": "created", "direction": "asc"},
        )
        if not changed:
            return None
        return [Task.from_issue(repository, i) for i in items if "pull_request" not in i]

    async def issue(self, repository: str, number: int) -> Task:
        """The issue, as it is now; Moved if it was transferred, Gone if deleted."""
        what = f"issue {repository}#{number}"
        data = await self._get(f"/repos/{repository}/issues/{number}", what)
        found = _issue_address(data)
        if found is None or found != (repository.lower(), number):
            where = f"{found[0]}#{found[1]}" if found else "elsewhere"
            raise Moved(
                f"{what}: moved to {where}",
                found[0] if found else "",
                found[1] if found else 0,
            )
        return Task.from_issue(repository, data)

    async def comments(self, repository: str, number: int) -> list[Comment]:
        """All comments, oldest first, however many pages (unchanged pages cost nothing)."""
        items, _ = await self._list(
            f"/repos/{repository}/issues/{number}/comments",
            f"comments {repository}#{number}",
            {},
        )
        return [Comment.from_json(item) for item in items]

    async def labelled_by(self, repository: str, number: int, label: str) -> list[str]:
        """Who applied `label` to the issue (its events), oldest first."""
        items, _ = await self._list(
            f"/repos/{repository}/issues/{number}/events", f"events {repository}#{number}", {}
        )
        return [
            str((event.get("actor") or {}).get("login") or "")
            for event in items
            if event.get("event") == "labeled"
            and str((event.get("label") or {}).get("name", "")).lower() == label.lower()
        ]

    async def role(self, repository: str, login: str) -> str:
        """The user's role on the repository: admin, maintain, write, triage, read or none."""
        try:
            data = await self._get(
                f"/repos/{repository}/collaborators/{quote(login)}/permission",
                f"role of {login} on {repository}",
            )
        except Gone:
            return "none"
        return str(data.get("role_name") or data.get("permission") or "none")

    async def login(self) -> str:
        """The account the token acts as: `github.login` when set (App installation tokens may
        not read GET /user), else GET /user."""
        if not self._login:
            data = await self._get("/user", "GET /user (set github.login for App tokens)")
            self._login = str(data["login"])
        return self._login

    async def repo_info(self, repository: str) -> RepoInfo:
        if repository not in self._repos:
            data = await self._get(f"/repos/{repository}", f"repo {repository}")
            self._repos[repository] = RepoInfo(str(data["default_branch"]), str(data["clone_url"]))
        return self._repos[repository]

    def git_env(self, url: str) -> dict[str, str]:
        """Environment for the daemon's own git commands against `url`: the token as an HTTP
        header, passed through git's environment (GIT_CONFIG_*), never on a command line (any
        user can read those), in a URL or in `.git/config` (the work tree is the command's)."""
        if urlsplit(url).scheme not in ("http", "https"):
            return {}
        credential = base64.b64encode(f"x-access-token:{self._token}".encode()).decode()
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {credential}",
        }

    async def branch_sha(self, repository: str, branch: str) -> str | None:
        try:
            data = await self._get(
                f"/repos/{repository}/git/ref/heads/{quote(branch)}",
                f"read branch {repository} {branch}",
            )
        except Gone:
            return None
        return str(data["object"]["sha"])

    async def ahead_by(self, repository: str, base: str, head: str) -> int:
        data = await self._get(
            f"/repos/{repository}/compare/{quote(base)}...{quote(head)}", f"compare {repository}"
        )
        return int(data["ahead_by"])

    async def reviews(self, repository: str, number: int) -> list[Review]:
        """The reviews of pull request `number`, oldest first."""
        items, _ = await self._list(
            f"/repos/{repository}/pulls/{number}/reviews", f"reviews {repository}#{number}", {}
        )
        return [Review.from_json(item) for item in items]

    async def pull_branch(self, repository: str, number: int) -> str:
        """The head branch of pull request `number`."""
        data = await self._get(f"/repos/{repository}/pulls/{number}", f"pull {repository}#{number}")
        return str(data["head"]["ref"])

    async def find_pull(self, repository: str, head: str) -> str | None:
        """The pull request (any state) from branch `head`, by its page's address."""
        owner = repository.split("/")[0]
        data = await self._get(
            f"/repos/{repository}/pulls",
            f"find pull request {repository} {head}",
            head=f"{owner}:{head}",
            state="all",
        )
        return str(data[0]["html_url"]) if data else None

    # ---- writing ---------------------------------------------------------------------------

    async def comment(self, repository: str, number: int, body: str) -> Comment:
        """A new comment. A lost answer is resolved by reading: our comment with this body is
        looked for before asking again, so it is never written twice."""
        path = f"/repos/{repository}/issues/{number}/comments"
        what = f"comment on {repository}#{number}"

        async def post() -> Comment:
            answer = await self.request("POST", path, what, body={"body": body})
            return Comment.from_json(answer.data)

        async def check() -> Comment | None:
            for existing in reversed(await self.comments(repository, number)):
                if existing.body == body and existing.user == (self._login or existing.user):
                    return existing
            return None

        return await self._retrying(what, post, check)

    async def edit_comment(self, repository: str, comment_id: int, body: str) -> Comment:
        """Edit (idempotent: asked again as is). GitHub stamps `updated_at` on its clock."""
        path = f"/repos/{repository}/issues/comments/{comment_id}"
        what = f"edit comment {comment_id}"

        async def patch() -> Comment:
            answer = await self.request("PATCH", path, what, body={"body": body})
            return Comment.from_json(answer.data)

        return await self._retrying(what, patch)

    async def delete_comment(self, repository: str, comment_id: int) -> None:
        # Gone: deleted already (perhaps by our own first attempt, whose answer was lost).
        with contextlib.suppress(Gone):
            await self._write("DELETE", f"/repos/{repository}/issues/comments/{comment_id}")

    async def add_labels(self, repository: str, number: int, *labels: str) -> None:
        await self._write(
            "POST", f"/repos/{repository}/issues/{number}/labels", {"labels": list(labels)}
        )

    async def remove_label(self, repository: str, number: int, label: str) -> None:
        with contextlib.suppress(Gone):  # not there: fine
            await self._write(
                "DELETE", f"/repos/{repository}/issues/{number}/labels/{quote(label, safe='')}"
            )

    async def assign(self, repository: str, number: int, login: str) -> None:
        await self._write(
            "POST", f"/repos/{repository}/issues/{number}/assignees", {"assignees": [login]}
        )

    async def unassign(self, repository: str, number: int, login: str) -> None:
        await self._write(
            "DELETE", f"/repos/{repository}/issues/{number}/assignees", {"assignees": [login]}
        )

    async def close_issue(self, repository: str, number: int) -> None:
        await self._write(
            "PATCH",
            f"/repos/{repository}/issues/{number}",
            {"state": "closed", "state_reason": "completed"},
        )

    async def create_branch(self, repository: str, branch: str, sha: str) -> None:
        what = f"create branch {repository} {branch}"

        async def post() -> None:
            body = {"ref": f"refs/heads/{branch}", "sha": sha}
            try:
                await self.request("POST", f"/repos/{repository}/git/refs", what, body=body)
            except Refused as exc:
                if exc.status != 422 or await self.branch_sha(repository, branch) is None:
                    raise  # 422 "Reference already exists" is done; anything else is not

        await self._retrying(what, post)

    async def create_pull(
        self, repository: str, title: str, body: str, head: str, base: str, draft: bool = False
    ) -> str:
        """A pull request from `head`, or the one already there (a lost answer, or our own
        earlier attempt): GitHub answers 422 to a second one."""
        what = f"pull request {repository} {head}"

        async def post() -> str:
            payload = {"title": title, "body": body, "head": head, "base": base, "draft": draft}
            try:
                answer = await self.request(
                    "POST", f"/repos/{repository}/pulls", what, body=payload
                )
            except Refused as exc:
                if exc.status == 422 and (found := await self.find_pull(repository, head)):
                    return found
                raise
            return str(answer.data["html_url"])

        async def check() -> str | None:
            return await self.find_pull(repository, head)

        return await self._retrying(what, post, check)

    async def _write(self, method: str, path: str, body: Any = None) -> None:
        """A write that is idempotent by nature (labels, assignees, state): asked again as is."""
        what = f"{method} {path}"
        await self._retrying(what, lambda: self.request(method, path, what, body=body))


def _issue_address(data: Any) -> tuple[str, int] | None:
    """(owner/name in lower case, number) from an issue's JSON."""
    if not isinstance(data, dict):
        return None
    url = str(data.get("repository_url") or "")
    marker = "/repos/"
    if marker not in url or "number" not in data:
        return None
    return url.split(marker, 1)[1].strip("/").lower(), int(data["number"])


def _json(text: Any) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {"message": str(text)[:200]}


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
