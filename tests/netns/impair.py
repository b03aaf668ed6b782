"""A userspace netem: forwards Ethernet frames between a switch port and the bridge, dropping and
delaying those going from the host towards the bridge.

This machine's kernel has no netem qdisc ("Specified qdisc kind is unknown"), so the lab puts
this between a host's veth end (PORT, in the switch namespace) and a TAP device on the bridge:

    host eth0 <-veth-> PORT  <-- this process -->  TAP (port of br0)

Run inside the switch namespace:  python impair.py PORT TAP LOSS DELAY_S
It prints "ready" once forwarding, and "<forwarded> <dropped>" on each SIGUSR1.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import signal
import socket
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
FRAME = 65536


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def open_port(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # not our own writes
    sock.bind((name, 0))
    sock.setblocking(False)
    return sock


async def main(port_name: str, tap_name: str, loss: float, delay: float) -> None:
    loop = asyncio.get_running_loop()
    tap = open_tap(tap_name)
    port = open_port(port_name)
    counts = {"forwarded": 0, "dropped": 0}
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: print(counts["forwarded"], counts["dropped"], flush=True)
    )

    def put(frame: bytes) -> None:
        with contextlib.suppress(OSError):  # a full TAP queue is one more lost frame
            os.write(tap, frame)

    def host_to_bridge() -> None:
        while True:
            try:
                frame = port.recv(FRAME)
            except BlockingIOError:
                return
            if random.random() < loss:
                counts["dropped"] += 1
                continue
            counts["forwarded"] += 1
            loop.call_later(delay, put, frame)

    def bridge_to_host() -> None:
        while True:
            try:
                frame = os.read(tap, FRAME)
            except BlockingIOError:
                return
            with contextlib.suppress(OSError):
                port.send(frame)

    loop.add_reader(port.fileno(), host_to_bridge)
    loop.add_reader(tap, bridge_to_host)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
