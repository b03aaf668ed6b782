"""The local control socket: how `bzzz status`, `bzzz peers` and friends ask the running node.

One JSON request per connection, one line: `{"command": "status", "args": {...}}`; one JSON
answer line: `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`. The socket lives
in the runtime directory with mode 0660, so root and the bzzz group may ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
REQUEST_TIMEOUT = 5.0

Command = Callable[[dict[str, Any]], Any | Awaitable[Any]]


class AlreadyRunning(RuntimeError):
    """Another daemon answers on the control socket."""


class NoDaemon(ConnectionError):
    """Nothing answers on the control socket."""


class ControlError(RuntimeError):
    """The daemon answered with an error."""


class ControlServer:
    def __init__(self, path: Path, commands: Mapping[str, Command]) -> None:
        self.path = path
        self._commands = dict(commands)
        self._server: asyncio.Server | None = None

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
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                line = await reader.readline()
            answer = await self._answer(line)
        except (TimeoutError, ValueError, ConnectionError) as exc:
            answer = {"ok": False, "error": f"bad request: {exc}"}
        try:
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            name = request["command"]
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise TypeError("args must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        command = self._commands.get(name)
        if command is None:
            return {"ok": False, "error": f"unknown command {name!r}"}
        try:
            result = command(args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            log.exception("control_command_failed", command=name)
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, "result": result}


async def _answers(path: Path) -> bool:
    try:
        _, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    return True


def request(
    path: Path, command: str, args: Mapping[str, Any] | None = None, timeout: float = 10.0
) -> Any:
    """Ask the daemon at `path` (blocking; for the CLI). Raises NoDaemon or ControlError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoDaemon(f"no bzzz daemon answers on {path} ({exc.strerror})") from None
        except PermissionError:
            raise ControlError(f"no permission to use {path} (need root or group bzzz)") from None
        sock.sendall(json.dumps({"command": command, "args": dict(args or {})}).encode() + b"\n")
        with sock.makefile("rb") as stream:
            line = stream.readline()
    if not line:
        raise NoDaemon(f"the daemon on {path} closed the connection without answering")
    answer = json.loads(line)
    if not answer.get("ok"):
        raise ControlError(answer.get("error", "unknown error"))
    return answer["result"]
