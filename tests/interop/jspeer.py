"""Drive tests/interop/peer.mjs (a js-libp2p node) from a test: commands in, events out."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SCRIPT = HERE / "peer.mjs"


@functools.cache
def unavailable() -> str | None:
    """Why the js-libp2p peer cannot run, or None. A fresh clone has no node_modules: they
    are installed here, at the versions package-lock.json pins, when npm is there."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "Node.js is not installed (apt-get install nodejs npm)"
    if not (HERE / "node_modules" / "libp2p").exists():
        try:
            subprocess.run(
                ["npm", "ci", "--prefix", str(HERE), "--no-audit", "--no-fund", "--loglevel=error"],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            return f"npm ci --prefix tests/interop failed: {detail.strip()[-300:]}"
    return None


Event = dict[str, Any]


class JsPeer:
    def __init__(
        self,
        listen: str,
        mdns_tag: str | None = None,
        prefix: list[str] | None = None,
        bench: bool = False,
    ) -> None:
        self._args = [*(prefix or []), "node", str(SCRIPT), "--listen", listen]
        if mdns_tag:
            self._args += ["--mdns", mdns_tag]
        if bench:
            self._args.append("--bench")  # counts and delays instead of an event per message
        self.events: list[Event] = []
        self._process: asyncio.subprocess.Process | None = None
        self._new = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.peer_id = ""
        self.addrs: list[str] = []

    async def __aenter__(self) -> JsPeer:
        self._process = await asyncio.create_subprocess_exec(
            *self._args,
            cwd=HERE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        ready = await self.wait_for(lambda e: e["event"] == "ready", 30)
        self.peer_id, self.addrs = ready["peerId"], ready["addrs"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._process is not None and self._reader is not None
        if self._process.returncode is None:
            await self.send({"cmd": "stop"})
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._reader.cancel()

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for line in self._process.stdout:
            text = line.decode(errors="replace").strip()
            try:
                event = json.loads(text)
            except ValueError:
                event = {"event": "output", "text": text}  # node's own warnings
            self.events.append(event)
            self._new.set()

    async def send(self, command: dict[str, Any]) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(json.dumps(command).encode() + b"\n")
        await self._process.stdin.drain()

    async def wait_for(self, match: Callable[[Event], bool], timeout: float) -> Event:
        """The first event (already seen or coming) that matches."""
        async with asyncio.timeout(timeout):
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if event["event"] == "error":
                        raise AssertionError(f"js peer: {event['message']}")
                    if match(event):
                        return event
                seen = len(self.events)
                self._new.clear()
                await self._new.wait()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def stats(self) -> Event:
        """With `bench`: messages received and the recent delays (ms), as the peer measured."""
        self.events = [e for e in self.events if e["event"] != "stats"]
        await self.send({"cmd": "stats"})
        return await self.wait_for(lambda e: e["event"] == "stats", 15)

    async def dial(self, address: str) -> None:
        await self.send({"cmd": "dial", "addr": address})
        await self.wait_for(lambda e: e["event"] == "dialed", 15)

    async def publish(self, topic: str, data: str | bytes) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        await self.send({"cmd": "publish", "topic": topic, "data": text})
        await self.wait_for(
            lambda e: e["event"] == "published" and e.get("_seen") is None and _mark(e), 15
        )


def _mark(event: Event) -> bool:
    event["_seen"] = True  # each publish waits for its own acknowledgement
    return True
