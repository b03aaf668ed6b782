"""The local control socket: how `bzzz status`, `bzzz peers` and friends ask the running node.

One JSON request per connection, one line: `{"command": "status", "args": {...}}`; one JSON
answer line: `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`. The socket lives
in the runtime directory with mode 0660, so root and the bzzz group may ask.

Every request gets an answer, an error if nothing else, whatever it holds. A request is at most
`MAX_REQUEST_BYTES`; a connection lasts at most `CONNECTION_TIMEOUT` (reading, answering and
writing); at most `MAX_CLIENTS` are served at once, the others are told the node is busy at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
CONNECTION_TIMEOUT = 5.0
MAX_CLIENTS = 16
ASK_TIMEOUT = 5.0  # how long a client waits for an answer


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: Annotated[str, Field(max_length=64)]
    args: dict[str, Any] = {}


Command = Callable[[dict[str, Any]], Any | Awaitable[Any]]


class AlreadyRunning(RuntimeError):
    """Another daemon answers on the control socket."""


class NoDaemon(ConnectionError):
    """Nothing answers on the control socket."""


class ControlError(RuntimeError):
    """The daemon answered with an error."""


class ControlServer:
    def __init__(
        self,
        path: Path,
        commands: Mapping[str, Command],
        timeout: float = CONNECTION_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.path = path
        self._commands = dict(commands)
        self._timeout = timeout
        self._max_clients = max_clients
        self._server: asyncio.Server | None = None
        self._clients = 0
        self.refused_busy = 0

    async def start(self) -> None:
        if self.path.exists():
            if await _answers(self.path):
                raise AlreadyRunning(f"another bzzz daemon answers on {self.path}")
            self.path.unlink()  # left behind by a daemon that died
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        # Bind with a restrictive umask: no moment where others could connect.
        old_umask = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST_BYTES
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= self._max_clients:
            self.refused_busy += 1
            writer.write(_encode({"ok": False, "error": "busy: too many clients, try again"}))
            writer.close()
            return
        self._clients += 1
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    answer = _error(f"bad request: over {MAX_REQUEST_BYTES} bytes")
                else:
                    answer = await self._answer(line)
                writer.write(_encode(answer))
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that stalls or leaves: its connection ends, nothing else
        except Exception:
            log.exception("control_connection_failed")
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = _Request.model_validate_json(line)
        except ValidationError as exc:
            problem = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in problem["loc"])
            return _error(f"bad request: {where + ': ' if where else ''}{problem['msg']}")
        command = self._commands.get(request.command)
        if command is None:
            return _error(f"unknown command {request.command!r}")
        try:
            result = command(request.args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            log.exception("control_command_failed", command=request.command)
            return _error(f"{type(exc).__name__}: {exc}")
        return {"ok": True, "result": result}


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def _encode(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, default=str).encode() + b"\n"


async def _answers(path: Path) -> bool:
    try:
        _, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    return True


def request(
    path: Path, command: str, args: Mapping[str, Any] | None = None, timeout: float = ASK_TIMEOUT
) -> Any:
    """Ask the daemon at `path` (blocking; for the CLI), waiting at most `timeout` seconds in
    all. Raises NoDaemon, ControlError, or PermissionError naming `path`."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(
                json.dumps({"command": command, "args": dict(args or {})}).encode() + b"\n"
            )
            line = b""
            while not line.endswith(b"\n"):
                # One deadline for the whole answer, not one per read: a trickle cannot stretch it.
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                line += chunk
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoDaemon(f"no bzzz daemon answers on {path} ({exc.strerror})") from None
        except PermissionError:
            # connect() names no file; the CLI needs the path to say what would help.
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path)) from None
        except (TimeoutError, BlockingIOError):
            # A stopped or wedged daemon: the kernel accepts for it (until its queue is full,
            # then connecting would block), nobody answers.
            raise NoDaemon(f"no answer from the daemon on {path} within {timeout:g} s") from None
        except ConnectionError:
            line = b""  # it went away mid-request: below, as any answerless close
    if not line:
        raise NoDaemon(f"the daemon on {path} closed the connection without answering")
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ControlError(f"what answers on {path} does not speak bzzz's control protocol")
    if not answer.get("ok"):
        raise ControlError(answer.get("error", "unknown error"))
    return answer["result"]
