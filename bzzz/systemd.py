"""The daemon's side of systemd's notify protocol (sd_notify(3)): READY, STATUS, WATCHDOG.

Only a datagram to $NOTIFY_SOCKET; without systemd (run by hand) every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, env: Mapping[str, str]) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading "@" in the environment.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # sd_watchdog_enabled(3) advises pinging at half the interval.
            self.watchdog_interval = int(usec) / 1_000_000 / 2

    def notify(self, *fields: str) -> None:
        if not self._address:
            return
        # Never block the event loop on a receiver that does not drain its queue (a datagram
        # socket blocks when the queue is full); a lost STATUS or WATCHDOG is recovered by the
        # next one. systemd gone, or not writable: nothing useful to do either.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.sendto("\n".join(fields).encode(), self._address)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")
