"""One daemon per state dir: two daemons with one key would sign two different histories as the
same author, and break the audit log's chain for good."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "bzzz.lock"


class StateDirInUse(RuntimeError):
    """Another process holds the state dir."""


def hold(state_dir: Path) -> int:
    """Take the state dir for this process (an exclusive lock on `<state_dir>/bzzz.lock`, our
    PID written in it) for as long as it lives; the returned descriptor keeps the lock."""
    state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateDirInUse(
            f"the state dir {state_dir} is in use by another bzzz daemon (PID {holder})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
