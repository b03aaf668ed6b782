"""Finding peers: static bootstrap peers now (mDNS on the LAN joins here later).

Each bootstrap peer is kept connected: dialled at start, and re-dialled with exponential backoff
and jitter whenever its connection drops, for as long as the node runs.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import structlog

from bzzz.p2p import GuestStopped, Host, PeerEvent

log = structlog.get_logger(__name__)

DIAL_TIMEOUT = 15.0
MIN_BACKOFF = 1.0
MAX_BACKOFF = 60.0


@dataclass
class _Link:
    connected: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def peer_id_of(address: str) -> str:
    """The peer id at the end of a full multiaddr (`.../p2p/<id>`)."""
    return address.rsplit("/p2p/", 1)[1].split("/", 1)[0]


class BootstrapDialer:
    def __init__(
        self,
        host: Host,
        addresses: list[str],
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self._host = host
        self._addresses = addresses
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._links: dict[str, _Link] = {}

    def _link(self, peer_id: str) -> _Link:
        return self._links.setdefault(peer_id, _Link())

    def on_peer_event(self, event: PeerEvent) -> None:
        link = self._link(event.peer_id)
        link.connected = event.connected
        link.changed.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for address in self._addresses:
                if peer_id_of(address) == self._host.peer_id:
                    log.info("bootstrap_self_skipped", address=address)
                    continue
                group.create_task(self._keep(address))

    async def _keep(self, address: str) -> None:
        """Hold a connection to one bootstrap peer, forever."""
        link = self._link(peer_id_of(address))
        backoff = self._min_backoff
        while True:
            if link.connected:
                link.changed.clear()
                await link.changed.wait()
                continue
            try:
                async with asyncio.timeout(DIAL_TIMEOUT):
                    await self._host.connect(address)
            except GuestStopped:
                return
            except Exception as exc:  # libp2p raises many kinds; every one means "try later"
                delay = backoff * random.uniform(0.8, 1.2)
                log.warning(
                    "peer_dial_failed",
                    address=address,
                    error=_short(exc),
                    retry_in_s=round(delay, 1),
                )
                await asyncio.sleep(delay)
                backoff = min(self._max_backoff, backoff * 2)
            else:
                link.connected = True
                backoff = self._min_backoff


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"
