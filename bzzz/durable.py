"""Making file system changes survive a crash."""

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a file's creation, rename or link in `directory` durable (its entry is the
    directory's data)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
