"""The web view's HTTP server (aiohttp): pages, /api/, /api/events (server-sent events),
/metrics and the static assets, read-only.

Guards, in the order a request meets them: GET and HEAD only (405); then either the Host header
must name this machine (a loopback bind without a token: a page elsewhere that re-points its
own name at 127.0.0.1, DNS rebinding, must not read the view) or the token must be given
(`Authorization: Bearer`, or `?token=` once, which sets a cookie and redirects to the same URL
without it). Every answer carries a Content-Security-Policy without inline scripts or styles.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from ipaddress import ip_address
from typing import Any

import structlog
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bzzz.config import is_loopback, parse_host_port
from bzzz.metrics import exposition
from bzzz.web import pages, sources
from bzzz.web.events import Busy, EventHub, Subscription
from bzzz.web.pages import Page
from bzzz.web.sources import Cache, Sources, task_key

log = structlog.get_logger(__name__)

HEARTBEAT_S = 15.0
SHUTDOWN_S = 2.0
VERIFY_TTL = 10.0  # seconds a verification is shown before it runs again
READ_TTL = 0.5  # seconds a read of the audit log or a transcript serves every page
AUDIT_SHOWN = 100
COOKIE = "bzzz_view"
ASSETS = {"style.css": "text/css", "app.js": "text/javascript"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenError(ValueError):
    """The token file cannot be used."""


def load_token(path: str) -> str:
    try:
        token = open(path, encoding="utf-8").read().strip()  # noqa: SIM115 (read at once)
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"control.http_token_file: {path}: {exc}") from None
    if not token:
        raise TokenError(f"control.http_token_file: {path}: empty")
    return token


def local_host(header: str) -> bool:
    """Does a Host header name this machine: localhost, 127.x.x.x or [::1], any port?"""
    host = header.strip().lower()
    if host.startswith("["):
        name, bracket, port = host[1:].partition("]")
        if not bracket or (port and not (port[:1] == ":" and port[1:].isdigit())):
            return False
    else:
        name, colon, port = host.partition(":")
        if colon and not port.isdigit():
            return False
    if name == "localhost":
        return True
    try:
        return ip_address(name).is_loopback
    except ValueError:
        return False


class View:
    """The handlers, over one node's `Sources` and `EventHub`."""

    def __init__(self, sources_: Sources, hub: EventHub, token: str | None) -> None:
        self._src = sources_
        self._hub = hub
        self._token = token
        self._session = (
            hmac.new(token.encode(), b"bzzz web view session", hashlib.sha256).hexdigest()
            if token
            else ""
        )
        self._assets = {name: _asset(name) for name in ASSETS}
        self.versions = {
            name: hashlib.sha256(body).hexdigest()[:12] for name, body in self._assets.items()
        }
        self._verify = Cache(VERIFY_TTL, size=1)
        self._reads = Cache(READ_TTL)
        self._streams: set[Subscription] = set()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.on_response_prepare.append(_secure)
        app.on_shutdown.append(self._close_streams)
        get = app.router.add_get
        get("/", self.cluster_page)
        get("/tasks", self.tasks_page)
        get("/tasks/{owner}/{repo}/{number}", self.task_page)
        get("/antennae", self.antennae_page)
        get("/antennae/{owner}/{repo}/{number}", self.conversation_page)
        get("/audit", self.audit_page)
        get("/github", self.github_page)
        get("/static/{name}", self.static)
        get("/metrics", self.metrics)
        for name in ("status", "peers", "tasks", "discuss"):
            get(f"/api/{name}", self._command(name))
        get("/api/task", self.api_task)
        get("/api/audit", self.api_audit)
        get("/api/audit/verify", self.api_verify)
        get("/api/github", self.api_github)
        get("/api/events", self.events)
        return app

    # ---- guards ------------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _text(405, "read-only: GET and HEAD only", {"Allow": "GET, HEAD"})
        if self._token is None:
            if not local_host(request.headers.get("Host", "")):
                return _text(421, "this view answers to localhost, 127.0.0.1 or [::1] only")
            return await handler(request)
        given = request.query.get("token")
        if given is not None:
            if not self._matches(given):
                return _text(401, "wrong token")
            # Once: a cookie from now on, and the token out of the address bar and history.
            target = request.rel_url.with_query(
                [(k, v) for k, v in request.query.items() if k != "token"]
            )
            location = str(target)
            if not location.startswith("/") or location[1:2] in ("/", "\\"):
                location = "/"  # browsers read //x and /\x as another site
            answer = _text(303, "signed in", {"Location": location})
            answer.set_cookie(COOKIE, self._session, httponly=True, samesite="Strict", path="/")
            return answer
        bearer = request.headers.get("Authorization", "")
        cookie = request.cookies.get(COOKIE, "")
        if (bearer.startswith("Bearer ") and self._matches(bearer[7:].strip())) or (
            cookie and hmac.compare_digest(cookie.encode(), self._session.encode())
        ):
            return await handler(request)
        return _text(
            401,
            "token required: open this page once with ?token=<the token in "
            "control.http_token_file>, or send Authorization: Bearer <token>",
            {"WWW-Authenticate": 'Bearer realm="bzzz"'},
        )

    def _matches(self, given: str) -> bool:
        assert self._token is not None
        return hmac.compare_digest(given.encode(), self._token.encode())

    # ---- pages -------------------------------------------------------------------------------

    def _page(self, request: web.Request, page: Page, status: int = 200) -> web.Response:
        """The whole page, or only the inside of its `<main>` for app.js's live refresh."""
        if request.headers.get("X-Bzzz-Fragment") == "1":
            body = str(page.main)
        else:
            body = pages.layout(page, agent=self._src.agent_id, assets=self.versions)
        return web.Response(
            text=body,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={"Vary": "X-Bzzz-Fragment"},
        )

    async def cluster_page(self, request: web.Request) -> web.Response:
        return self._page(request, pages.cluster(await self._src.ask("status")))

    async def tasks_page(self, request: web.Request) -> web.Response:
        return self._page(request, pages.tasks(await self._src.ask("tasks")))

    async def task_page(self, request: web.Request) -> web.Response:
        key = _path_key(request)
        if key is None:
            return self._page(request, pages.problem("No such task", "Not a task name."), 404)
        found = await self._task(key)
        page = pages.task(key, found["task"], found["transcript"], bool(found["conversation"]))
        return self._page(request, page, 200 if found["task"] else 404)

    async def antennae_page(self, request: web.Request) -> web.Response:
        rows = await self._src.ask("discuss", {"task": ""})
        return self._page(request, pages.antennae(rows, await self._names()))

    async def conversation_page(self, request: web.Request) -> web.Response:
        key = _path_key(request)
        if key is None:
            return self._page(request, pages.problem("No such task", "Not a task name."), 404)
        rows = await self._src.ask("discuss", {"task": key})
        row = rows[0] if rows else None
        history = row.get("history", []) if row else []
        hops = {e["id"]: h for e in history if (h := self._src.hops(e["id"])) is not None}
        return self._page(request, pages.conversation(key, row, await self._names(), hops))

    async def audit_page(self, request: web.Request) -> web.Response:
        author = request.query.get("author", "")[:100]
        type_ = request.query.get("type", "")[:64]
        rows = await self._audit(author, type_, AUDIT_SHOWN)
        page = pages.audit(
            rows, await self._verification(), {"author": author, "type": type_}, await self._names()
        )
        return self._page(request, page)

    async def github_page(self, request: web.Request) -> web.Response:
        return self._page(request, pages.github(await self._src.ask("status")))

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._assets:
            raise web.HTTPNotFound()
        current = request.query.get("v") == self.versions[name]
        return web.Response(
            body=self._assets[name],
            headers={
                "Content-Type": f"{ASSETS[name]}; charset=utf-8",
                # A versioned address never changes: cached for good; any other, checked.
                "Cache-Control": "public, max-age=31536000, immutable" if current else "no-cache",
            },
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """The same metrics as the Prometheus endpoint, from the same status snapshot."""
        body = exposition(await self._src.ask("status"))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ---- the API -----------------------------------------------------------------------------

    def _command(self, name: str) -> Handler:
        async def answer(request: web.Request) -> web.StreamResponse:
            args = {"task": request.query.get("task", "")} if name == "discuss" else {}
            return _json(await self._src.ask(name, args))

        return answer

    async def api_task(self, request: web.Request) -> web.Response:
        key = task_key(request.query.get("key", ""))
        if key is None:
            return _json({"error": "key: expected owner/repo#n"}, 400)
        found = await self._task(key)
        return _json(found, 200 if found["task"] else 404)

    async def api_audit(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", str(AUDIT_SHOWN)))
        except ValueError:
            limit = -1
        if not 1 <= limit <= sources.AUDIT_LIMIT:
            return _json({"error": f"limit: 1 to {sources.AUDIT_LIMIT}"}, 400)
        author = request.query.get("author", "")[:100]
        type_ = request.query.get("type", "")[:64]
        return _json(await self._audit(author, type_, limit))

    async def api_verify(self, request: web.Request) -> web.Response:
        return _json(await self._verification())

    async def api_github(self, request: web.Request) -> web.Response:
        return _json(self._src.github())

    # ---- live --------------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: each event of the hub, a comment every HEARTBEAT_S (which also
        finds clients that went away), `resync` when this client fell behind or came back."""
        if request.method == "HEAD":
            return web.Response(headers={"Content-Type": "text/event-stream"})
        try:
            subscription = self._hub.subscribe()
        except Busy:
            return _text(503, "too many live pages open; try again later", {"Retry-After": "10"})
        with subscription:
            self._streams.add(subscription)
            try:
                response = web.StreamResponse(
                    headers={
                        "Content-Type": "text/event-stream",
                        "Cache-Control": "no-store",
                        "X-Accel-Buffering": "no",
                    }
                )
                await response.prepare(request)
                hello = b"retry: 2000\n\n"
                if request.headers.get("Last-Event-ID"):
                    # Back after a break: what it missed is gone, so it reads everything again.
                    hello += b'event: resync\ndata: {"kind":"resync","data":{}}\n\n'
                await response.write(hello)
                with contextlib.suppress(ConnectionError):
                    await self._stream(subscription, response)
            finally:
                self._streams.discard(subscription)
        return response

    async def _stream(self, subscription: Subscription, response: web.StreamResponse) -> None:
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_S):
                    event = await subscription.get()
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            if event is None:
                return
            # What queued meanwhile goes in the same write: a burst costs one write, not 300.
            chunk = event.sse + b"".join(e.sse for e in subscription.take_all())
            await response.write(chunk)

    async def _close_streams(self, app: web.Application) -> None:
        for subscription in list(self._streams):
            subscription.close()

    # ---- reading -----------------------------------------------------------------------------

    async def _names(self) -> dict[str, str]:
        return pages.agents(await self._src.ask("status"))

    async def _task(self, key: str) -> dict[str, Any]:
        rows = await self._src.ask("tasks")
        row = next((r for r in rows if r["task"] == key), None)
        directory = self._src.transcripts
        transcript = await self._reads.get(
            ("transcript", key), lambda: asyncio.to_thread(sources.transcript, directory, key)
        )
        talk = await self._src.ask("discuss", {"task": key})
        return {"task": row, "transcript": transcript, "conversation": talk[0] if talk else None}

    async def _audit(self, author: str, type_: str, limit: int) -> list[dict[str, Any]]:
        root = self._src.log_root
        rows: list[dict[str, Any]] = await self._reads.get(
            ("audit", author, type_, limit),
            lambda: asyncio.to_thread(sources.audit_tail, root, author, type_, limit),
        )
        return rows

    async def _verification(self) -> dict[str, Any]:
        root, verify = self._src.log_root, self._src.verify
        found: dict[str, Any] = await self._verify.get(
            "verify", lambda: asyncio.to_thread(sources.verification, root, verify)
        )
        return found


class WebServer:
    """The view on `listen`, for as long as `run` runs (the node supervises it)."""

    def __init__(self, listen: str, token_file: str, sources_: Sources, hub: EventHub) -> None:
        self._listen = listen
        self._token_file = token_file
        self._sources = sources_
        self._hub = hub
        self.address = ""

    async def run(self) -> None:
        host, port = parse_host_port(self._listen)
        token = load_token(self._token_file) if self._token_file else None
        if token is None and not is_loopback(self._listen):
            raise TokenError("control.http_token_file: required beyond loopback")
        view = View(self._sources, self._hub, token)
        runner = web.AppRunner(
            view.app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, shutdown_timeout=SHUTDOWN_S)
            try:
                await site.start()
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot serve the web view on {self._listen}: {exc.strerror}"
                ) from None
            self.address = _bound(runner)
            log.info("web_listening", address=self.address, token_required=token is not None)
            await asyncio.Event().wait()
        finally:
            self.address = ""
            await runner.cleanup()


def _bound(runner: web.AppRunner) -> str:
    """Where it listens, the port chosen when the config said 0."""
    host, port = runner.addresses[0][:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _asset(name: str) -> bytes:
    return resources.files("bzzz.web").joinpath("static", name).read_bytes()


def _path_key(request: web.Request) -> str | None:
    info = request.match_info
    return task_key(f"{info['owner']}/{info['repo']}#{info['number']}")


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers.setdefault("Cache-Control", "no-store")


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


def _json(value: Any, status: int = 200) -> web.Response:
    """As the control socket encodes its answers (`default=str`)."""
    return web.json_response(value, status=status, dumps=lambda v: json.dumps(v, default=str))
