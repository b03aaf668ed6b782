"""Addresses others can dial: a listener bound to 0.0.0.0 or :: is reachable at each address of
each interface, not at 0.0.0.0 (which `bzzz status` used to show, and nobody can dial)."""

from __future__ import annotations

import ipaddress
import re

import ifaddr

_WILDCARD = re.compile(r"^/(ip4)/0\.0\.0\.0/|^/(ip6)/::/")


def interface_addresses() -> tuple[list[str], list[str]]:
    """(IPv4, IPv6) addresses of this host's interfaces, loopback last, link-local left out
    (it needs a zone to dial)."""
    v4: list[str] = []
    v6: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            address = ipaddress.ip_address(text)
            if address.is_link_local:
                continue
            (v4 if address.version == 4 else v6).append(text)

    def key(a: str) -> tuple[bool, str]:
        return (ipaddress.ip_address(a).is_loopback, a)

    return sorted(set(v4), key=key), sorted(set(v6), key=key)


def dialable(bound: list[str]) -> list[str]:
    """`bound` with each wildcard address replaced by the interface addresses it stands for."""
    v4, v6 = interface_addresses()
    out: list[str] = []
    for address in bound:
        found = _WILDCARD.match(address)
        if found is None:
            out.append(address)
            continue
        rest = address[found.end() :]
        if found.group(1):
            out += [f"/ip4/{ip}/{rest}" for ip in v4]
        else:
            out += [f"/ip6/{ip}/{rest}" for ip in v6]
    return list(dict.fromkeys(out))
