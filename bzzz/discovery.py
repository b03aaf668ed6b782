"""Finding peers and staying connected to them: bootstrap peers, and mDNS on the LAN.

The `Dialer` keeps a link to every peer someone wants: bootstrap peers for as long as the node
runs, mDNS peers for as long as their announcement is alive. A wanted peer that is not connected
is dialled, with exponential backoff and jitter between failures.

`MdnsDiscovery` announces this node with zeroconf (`_<tag>._udp.local.`, TXT strings
`dnsaddr=<multiaddr>/p2p/<id>` as the libp2p mDNS spec has them, and `network=<network_id>`) and
takes peers from the `dnsaddr=` strings of every answer it hears, not only from fully resolved
service records, so that js-libp2p and go-libp2p nodes are found too. It sends its own queries:
js-libp2p queries every second, and zeroconf's browser would then suppress its queries as
duplicates (RFC 6762 7.3), while js-libp2p only ever answers queries, never announces.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import ifaddr
import structlog
from zeroconf import (  # type: ignore[attr-defined]  # DNSText is exported, not in __all__
    DNSOutgoing,
    DNSQuestion,
    DNSText,
    InterfaceChoice,
    IPVersion,
    RecordUpdate,
    RecordUpdateListener,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from bzzz.config import MdnsConfig
from bzzz.p2p import GuestStopped, Host, PeerEvent

log = structlog.get_logger(__name__)

# DNS constants (RFC 1035): a query, a PTR question, class IN.
_FLAGS_QR_QUERY = 0x0000
_TYPE_PTR = 12
_CLASS_IN = 1


@dataclass(frozen=True)
class DialPolicy:
    min_backoff: float
    max_backoff: float
    timeout: float


# Peers beyond the LAN: patient. LAN peers found by mDNS: a partition that heals should be
# repaired within seconds, and a failed dial on a LAN costs next to nothing.
BOOTSTRAP_POLICY = DialPolicy(min_backoff=1.0, max_backoff=60.0, timeout=15.0)
LAN_POLICY = DialPolicy(min_backoff=0.5, max_backoff=2.0, timeout=3.0)

# A LAN peer neither reachable nor heard of for this long is given up (until heard again).
# Not its record's TTL: records are not refreshed while we are connected, and a partition
# may outlast them.
LAN_FORGET_AFTER = 300.0
# LAN peers dialled at once: anyone on the LAN can announce any number of peer ids.
MAX_LAN_PEERS = 256

# A peer is reported unreachable after this many failed dials in a row, then again when the
# retries reach their longest step, then every UNREACHABLE_REMINDER seconds (see
# `_worth_a_warning`); each attempt is at debug.
UNREACHABLE_AFTER = 3
UNREACHABLE_REMINDER = 3600.0

# When we ask the LAN who is there: a quick burst at start, then at a steady pace.
MDNS_QUERY_TIMES = (0.0, 1.0, 2.0)
MDNS_QUERY_INTERVAL = 5.0


def peer_id_of(address: str) -> str:
    """The peer id at the end of a full multiaddr (`.../p2p/<id>`)."""
    return address.rsplit("/p2p/", 1)[1].split("/", 1)[0]


@dataclass
class _Want:
    addresses: list[str]
    policy: DialPolicy
    source: str
    # None: for as long as the node runs. Else how long it may stay unreachable and unheard.
    forget_after: float | None
    expires: float | None = None  # monotonic; pushed forward while connected or heard of

    def renew(self) -> None:
        if self.forget_after is not None:
            self.expires = time.monotonic() + self.forget_after


@dataclass
class _Link:
    connected: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Dialer:
    def __init__(self, host: Host) -> None:
        self._host = host
        self._wants: dict[str, _Want] = {}
        self._links: dict[str, _Link] = {}
        self._keepers: set[str] = set()
        self._spawn: asyncio.Queue[str] = asyncio.Queue()

    def want(
        self,
        addresses: Sequence[str],
        policy: DialPolicy,
        source: str,
        forget_after: float | None = None,
    ) -> None:
        """Keep a link to the peer at `addresses` (all of one peer id); give up only after
        `forget_after` seconds unconnected and unheard of (None: never)."""
        peer_id = peer_id_of(addresses[0])
        if peer_id == self._host.peer_id:
            return
        current = self._wants.get(peer_id)
        if current is not None and current.forget_after is None:
            # A bootstrap peer also seen on the LAN: keep it forever, dial it the LAN way.
            forget_after = None
        want = _Want(list(addresses), policy, source, forget_after)
        want.renew()
        self._wants[peer_id] = want
        self._link(peer_id).changed.set()
        if peer_id not in self._keepers:
            self._keepers.add(peer_id)
            self._spawn.put_nowait(peer_id)

    def unwant(self, peer_id: str, source: str) -> None:
        """Stop keeping a link (the peer said goodbye), unless another source still wants it."""
        want = self._wants.get(peer_id)
        if want is not None and want.source == source and want.forget_after is not None:
            del self._wants[peer_id]
            self._link(peer_id).changed.set()

    def _link(self, peer_id: str) -> _Link:
        return self._links.setdefault(peer_id, _Link())

    def wants(self, peer_id: str) -> bool:
        return peer_id in self._wants

    def on_peer_event(self, event: PeerEvent) -> None:
        if event.peer_id not in self._wants:
            # Not ours to keep (an inbound peer): no state, or every peer that ever
            # connected would leave a row behind.
            self._links.pop(event.peer_id, None)
            return
        link = self._link(event.peer_id)
        link.connected = event.connected
        link.changed.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            while True:
                peer_id = await self._spawn.get()
                group.create_task(self._keep(peer_id))

    async def _keep(self, peer_id: str) -> None:
        """Hold a link to one peer for as long as it is wanted."""
        link = self._link(peer_id)
        failures = 0
        warned_at: float | None = None  # when we last said it is unreachable
        warned_longest = False  # said so once the retries reached their longest step
        try:
            while (want := self._current(peer_id)) is not None:
                if link.connected:
                    failures, warned_at, warned_longest = 0, None, False
                    link.changed.clear()
                    await link.changed.wait()
                    want.renew()  # it was reachable until now
                    continue
                error = await self._dial(peer_id, want)
                if error is None:
                    if failures:
                        log.info(
                            "peer_redialled",
                            peer=peer_id,
                            source=want.source,
                            attempts=failures + 1,
                        )
                    failures, warned_at, warned_longest = 0, None, False
                    link.connected = True
                    continue
                failures += 1
                step = min(want.policy.max_backoff, want.policy.min_backoff * 2 ** (failures - 1))
                delay = step * random.uniform(0.8, 1.2)
                log.debug(
                    "peer_dial_failed",
                    peer=peer_id,
                    error=error,
                    attempt=failures,
                    retry_in_s=round(delay, 1),
                )
                longest = step >= want.policy.max_backoff
                if _worth_a_warning(failures, longest, warned_at, warned_longest):
                    warned_at, warned_longest = time.monotonic(), longest
                    log.warning(
                        "peer_unreachable",
                        peer=peer_id,
                        source=want.source,
                        addresses=want.addresses,
                        error=error,
                        attempts=failures,
                        next_retry_s=round(delay, 1),
                    )
                link.changed.clear()
                await _wait(link.changed, delay)
        finally:
            self._keepers.discard(peer_id)
            if peer_id not in self._wants:
                self._links.pop(peer_id, None)

    def _current(self, peer_id: str) -> _Want | None:
        want = self._wants.get(peer_id)
        if want is not None and want.expires is not None and want.expires <= time.monotonic():
            del self._wants[peer_id]
            log.info(
                "peer_given_up", peer=peer_id, source=want.source, unreachable_s=want.forget_after
            )
            return None
        return want

    async def _dial(self, peer_id: str, want: _Want) -> str | None:
        """One attempt; None when connected, else what went wrong."""
        try:
            async with asyncio.timeout(want.policy.timeout):
                await self._host.connect(*want.addresses)
        except GuestStopped:
            raise
        except Exception as exc:  # libp2p raises many kinds; every one means "try later"
            return _short(exc)
        return None


def _worth_a_warning(
    failures: int, longest_step: bool, warned_at: float | None, warned_longest: bool
) -> bool:
    """A peer that stays away is worth a few warnings, not one per attempt: when it turns out
    unreachable (`UNREACHABLE_AFTER` failures), when the retries reach their longest step, then
    once per `UNREACHABLE_REMINDER` seconds. Every attempt is logged at debug."""
    if failures < UNREACHABLE_AFTER:
        return False
    if failures == UNREACHABLE_AFTER or (longest_step and not warned_longest):
        return True
    return warned_at is not None and time.monotonic() - warned_at >= UNREACHABLE_REMINDER


async def _wait(event: asyncio.Event, at_most: float) -> None:
    """Wait for `event`, or at most `at_most` seconds."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(at_most):
            await event.wait()


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"


def want_bootstrap_peers(dialer: Dialer, addresses: Iterable[str], own_id: str) -> None:
    for address in addresses:
        if peer_id_of(address) == own_id:
            # Every node of a cluster may share one list: our own entry is not an error.
            log.info("bootstrap_self_skipped", address=address)
            continue
        dialer.want([address], BOOTSTRAP_POLICY, "bootstrap")


# ---- mDNS -----------------------------------------------------------------------------------


def service_type(tag: str) -> str:
    return f"_{tag}._udp.local."


def encode_txt(strings: Sequence[str]) -> bytes:
    """DNS TXT record data: each string prefixed by its length (RFC 1035 3.3.14)."""
    out = bytearray()
    for text in strings:
        raw = text.encode()
        if len(raw) > 255:
            raise ValueError(f"TXT string longer than 255 bytes: {text[:40]}...")
        out += bytes([len(raw)]) + raw
    return bytes(out)


def decode_txt(data: bytes) -> list[str]:
    strings, i = [], 0
    while i < len(data):
        length = data[i]
        strings.append(data[i + 1 : i + 1 + length].decode(errors="replace"))
        i += 1 + length
    return strings


@dataclass(frozen=True)
class Announcement:
    """What a TXT record says about a peer."""

    peer_id: str
    addresses: list[str]
    network: str | None


def parse_announcement(strings: Sequence[str]) -> Announcement | None:
    addresses = [s.removeprefix("dnsaddr=") for s in strings if s.startswith("dnsaddr=")]
    addresses = [a for a in addresses if "/p2p/" in a]
    if not addresses:
        return None
    peer_id = peer_id_of(addresses[0])
    network = next((s.removeprefix("network=") for s in strings if s.startswith("network=")), None)
    return Announcement(peer_id, [a for a in addresses if peer_id_of(a) == peer_id], network)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def interface_addresses(selection: Sequence[str]) -> list[IPAddress]:
    """Addresses of the selected interfaces (names or addresses; empty: all), loopback and
    IPv6 link-local left out: peers on the LAN cannot dial those."""
    wanted = set(selection)
    found: list[IPAddress] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            address = ipaddress.ip_address(text)
            if wanted and adapter.nice_name not in wanted and text not in wanted:
                continue
            if address.is_loopback or address.is_link_local:
                continue
            found.append(address)
    return found


class _RecordListener(RecordUpdateListener):
    def __init__(self, owner: MdnsDiscovery) -> None:
        self._owner = owner

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            record = update.new
            if isinstance(record, DNSText) and record.name.lower().endswith(self._owner.suffix):
                self._owner.on_txt(record.text, record.ttl if not record.is_expired(now) else 0)


class MdnsDiscovery:
    def __init__(self, host: Host, dialer: Dialer, config: MdnsConfig, network_id: str) -> None:
        self._host = host
        self._dialer = dialer
        self._config = config
        self._network_id = network_id
        self.type = service_type(config.service_tag)
        self.suffix = "." + self.type.lower()
        self._known: set[str] = set()
        self._other_networks: set[str] = set()
        self.ignored = 0  # announcements ignored because MAX_LAN_PEERS are wanted

    def advertised_addresses(self) -> list[str]:
        """Our listen addresses as LAN peers can dial them (wildcards expanded)."""
        local = interface_addresses(self._config.interfaces)
        result: list[str] = []
        for address in self._host.listen_addrs():
            parts = address.split("/")  # ["", "ip4", "0.0.0.0", "tcp", "4001", "p2p", id]
            family, ip, rest = parts[1], parts[2], "/".join(parts[3:])
            if ip in ("0.0.0.0", "::"):
                version = 4 if family == "ip4" else 6
                result += [f"/{family}/{a}/{rest}" for a in local if a.version == version]
            elif not ipaddress.ip_address(ip).is_loopback:
                result.append(address)
        return list(dict.fromkeys(result))

    async def _ask_forever(self, zc: Zeroconf) -> None:
        """Ask who offers our service; the answers reach `_RecordListener`."""
        started = time.monotonic()
        steady = itertools.count(MDNS_QUERY_TIMES[-1] + MDNS_QUERY_INTERVAL, MDNS_QUERY_INTERVAL)
        for at in itertools.chain(MDNS_QUERY_TIMES, steady):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            query = DNSOutgoing(_FLAGS_QR_QUERY)
            query.add_question(DNSQuestion(self.type, _TYPE_PTR, _CLASS_IN))
            zc.async_send(query)

    def on_txt(self, data: bytes, ttl: float) -> None:
        announcement = parse_announcement(decode_txt(data))
        if announcement is None or announcement.peer_id == self._host.peer_id:
            return
        peer_id = announcement.peer_id
        if announcement.network is not None and announcement.network != self._network_id:
            # Peers of other implementations announce no network: they are let in.
            if peer_id not in self._other_networks:
                if len(self._other_networks) >= MAX_LAN_PEERS:
                    self._other_networks.clear()  # only there to log each once
                self._other_networks.add(peer_id)
                log.info("peer_other_network", peer=peer_id, network=announcement.network)
            return
        if ttl <= 0:
            self._known.discard(peer_id)
            self._dialer.unwant(peer_id, "mdns")
            log.info("peer_goodbye", peer=peer_id, source="mdns")
            return
        if peer_id not in self._known:
            if len(self._known) >= MAX_LAN_PEERS:
                # Anyone on the LAN can announce any number of peer ids: keep dialling the
                # ones still wanted, and at most MAX_LAN_PEERS of them.
                self._known = {p for p in self._known if self._dialer.wants(p)}
                if len(self._known) >= MAX_LAN_PEERS:
                    self.ignored += 1
                    if self.ignored % 100 == 1:
                        log.warning("mdns_too_many_peers", limit=MAX_LAN_PEERS)
                    return
            self._known.add(peer_id)
            log.info(
                "peer_discovered", peer=peer_id, source="mdns", addresses=announcement.addresses
            )
        self._dialer.want(announcement.addresses, LAN_POLICY, "mdns", LAN_FORGET_AFTER)

    async def run(self) -> None:
        addresses = self.advertised_addresses()
        if not addresses:
            log.warning("mdns_no_addresses", interfaces=self._config.interfaces or "all")
        interfaces = (
            sorted({str(a) for a in interface_addresses(self._config.interfaces)})
            if self._config.interfaces
            else InterfaceChoice.All
        )
        ip_version = (
            IPVersion.All if any(a.startswith("/ip6/") for a in addresses) else IPVersion.V4Only
        )
        zc = AsyncZeroconf(interfaces=interfaces, ip_version=ip_version)
        listener = _RecordListener(self)
        zc.zeroconf.async_add_listener(listener, None)
        peer_id = self._host.peer_id
        txt = [f"dnsaddr={a}" for a in addresses] + [f"network={self._network_id}"]
        info = AsyncServiceInfo(
            self.type,
            f"{peer_id}.{self.type}",
            port=_port_of(addresses),
            properties=encode_txt(txt),
            server=f"{peer_id.lower()}.local.",
            addresses=[ipaddress.ip_address(a.split("/")[2]).packed for a in addresses],
        )
        try:
            # The instance name is our peer id, unique by construction: no probing needed.
            await zc.async_register_service(info, cooperating_responders=True, strict=False)
            log.info("mdns_started", service=self.type, addresses=addresses)
            await self._ask_forever(zc.zeroconf)
        finally:
            zc.zeroconf.async_remove_listener(listener)
            await zc.async_unregister_all_services()  # sends the goodbye
            await zc.async_close()


def _port_of(addresses: Sequence[str]) -> int:
    for address in addresses:
        parts = address.split("/")
        if "tcp" in parts:
            return int(parts[parts.index("tcp") + 1])
    return 0
