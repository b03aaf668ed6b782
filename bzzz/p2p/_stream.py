"""A libp2p stream used from asyncio: every read and write is a call into the trio side."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
import trio
from libp2p.network.stream.exceptions import StreamEOF

from bzzz.p2p._guest import TrioGuest

log = structlog.get_logger(__name__)


class StreamError(ConnectionError):
    """The stream was reset, closed under us, or could not be opened."""


class Stream:
    def __init__(self, guest: TrioGuest, raw: Any, peer_id: str, protocol: str) -> None:
        self._guest = guest
        self._raw = raw
        self.peer_id = peer_id
        self.protocol = protocol
        self._buffer = bytearray()
        self._eof = False

    async def write(self, data: bytes) -> None:
        try:
            await self._guest.call(self._raw.write, data)
        except Exception as exc:
            raise StreamError(f"write to {self.peer_id}: {exc!r}") from None

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to `max_bytes`; b"" once the other side has closed its end."""
        if self._buffer:
            data, self._buffer = bytes(self._buffer[:max_bytes]), self._buffer[max_bytes:]
            return data
        if self._eof:
            return b""
        try:
            return bytes(await self._guest.call(self._read_raw, max_bytes))
        except StreamEOF:
            self._eof = True
            return b""
        except Exception as exc:
            raise StreamError(f"read from {self.peer_id}: {exc!r}") from None

    async def _read_raw(self, max_bytes: int) -> bytes:
        data = await self._raw.read(max_bytes)
        if not data:
            raise StreamEOF()
        return bytes(data)

    @property
    def at_end(self) -> bool:
        """The other side closed its end and every byte has been read."""
        return self._eof and not self._buffer

    async def readline(self, limit: int) -> bytes:
        """One line without its newline; b"" at the end (or for an empty line: see `at_end`).
        A line over `limit` is an error."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > limit:
                raise StreamError(f"line from {self.peer_id} over {limit} bytes")
            if self._eof:
                rest, self._buffer = bytes(self._buffer), bytearray()
                return rest
            try:
                chunk = await self._guest.call(self._read_raw, 65536)
            except StreamEOF:
                self._eof = True
                continue
            except Exception as exc:
                raise StreamError(f"read from {self.peer_id}: {exc!r}") from None
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        if len(line) > limit:
            raise StreamError(f"line from {self.peer_id} over {limit} bytes")
        self._buffer = bytearray(rest)
        return line

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # a broken stream: nothing left to close
            await self._guest.call(self._raw.close)


StreamHandler = Callable[[Stream], Coroutine[Any, Any, None]]


def trio_handler(guest: TrioGuest, protocol: str, handler: StreamHandler) -> Callable[[Any], Any]:
    """Wrap an asyncio handler for libp2p: the trio side waits for it (and cancels it if the
    host stops), so the handler task always has an owner."""

    async def handle(raw: Any) -> None:
        peer_id = raw.muxed_conn.peer_id.to_base58()
        stream = Stream(guest, raw, peer_id, protocol)
        task = asyncio.get_running_loop().create_task(handler(stream))
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def finished(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.warning(
                    "stream_handler_failed",
                    protocol=protocol,
                    peer=peer_id,
                    error=repr(task.exception()),
                )
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        task.add_done_callback(finished)
        try:
            await done.wait()
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(Exception):  # a broken stream: nothing left to close
                await raw.close()

    return handle
