"""Hosts in network namespaces on one private bridge, made and removed by the test itself.

Layout: a "switch" namespace holds bridge br0; each host namespace has an eth0 (a veth pair
whose other end is a port of br0) with an address in 10.98.<lab>.0/24. Nothing is attached to
the machine's own namespace, so multicast (mDNS) and test traffic cannot leave the lab.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from itertools import count
from pathlib import Path

_labs = count(1)
IMPAIR = Path(__file__).with_name("impair.py")


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("ethtool", "ethtool")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    probe = f"bzprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class NsHost:
    namespace: str
    address: str

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def run(self, *command: str) -> None:
        ip("netns", "exec", self.namespace, *command)

    def link(self, up: bool) -> None:
        ip("-n", self.namespace, "link", "set", "eth0", "up" if up else "down")


class Lab:
    """Use as a context manager: everything it made is removed on exit, also on failure."""

    def __init__(self) -> None:
        number = next(_labs)
        self.tag = f"bz{os.getpid() % 10000}l{number}"
        self.subnet = f"10.98.{(os.getpid() + number) % 250}"
        self.switch = f"{self.tag}s"
        self.hosts: list[NsHost] = []
        self._namespaces: list[str] = []
        self._impairers: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Lab:
        try:
            self._add_namespace(self.switch)
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def add_host(self) -> NsHost:
        index = len(self.hosts) + 1
        host = NsHost(f"{self.tag}h{index}", f"{self.subnet}.{index}")
        self._add_namespace(host.namespace)
        port = f"p{index}"
        ip(
            "link",
            "add",
            port,
            "netns",
            self.switch,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.namespace,
        )
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.namespace, "link", "set", "eth0", "up")
        # As on a real LAN host, a default route: programs that send multicast without naming
        # an interface (js-libp2p's mDNS) need one. It leads only onto the lab's bridge.
        ip("-n", host.namespace, "route", "add", "default", "dev", "eth0")
        self.hosts.append(host)
        return host

    def impair(self, host: NsHost, loss: float, delay: float) -> None:
        """Drop `loss` of the frames `host` sends and delay the rest by `delay` seconds.

        What `tc qdisc ... netem loss 10% delay 50ms` on the host's eth0 would do; this kernel
        has no netem, so the host's switch port is moved behind tests/netns/impair.py.
        """
        index = self.hosts.index(host) + 1
        port, tap = f"p{index}", f"t{index}"
        # veth leaves TCP checksums to "hardware"; frames copied out by a raw socket would
        # carry none. Have the host compute them.
        host.run("ethtool", "-K", "eth0", "tx", "off", "gso", "off")
        ip("netns", "exec", self.switch, "ethtool", "-K", port, "gro", "off")
        ip("-n", self.switch, "link", "set", port, "nomaster")
        ip("-n", self.switch, "link", "set", port, "promisc", "on")
        ip("-n", self.switch, "tuntap", "add", "dev", tap, "mode", "tap")
        ip("-n", self.switch, "link", "set", tap, "master", "br0", "up")
        process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.switch,
                sys.executable,
                str(IMPAIR),
                port,
                tap,
                str(loss),
                str(delay),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._impairers.append(process)
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"impair.py on {port} did not start")

    def impairment_counts(self) -> tuple[int, int]:
        """Frames forwarded and dropped so far, over every impaired host."""
        forwarded = dropped = 0
        for process in self._impairers:
            assert process.stdout is not None
            process.send_signal(signal.SIGUSR1)
            more, less = map(int, process.stdout.readline().split())
            forwarded, dropped = forwarded + more, dropped + less
        return forwarded, dropped

    def close(self) -> None:
        for process in self._impairers:
            process.kill()
            process.wait()
        self._impairers.clear()
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._namespaces.clear()
