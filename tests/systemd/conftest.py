"""What every systemd test needs: the sdbox image, a copy of the checkout, a wheelhouse."""

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd.sdbox import REPO, build


def checkout_copy(destination: Path) -> Path:
    """The files of this checkout (tracked and new, not ignored), as a fresh clone has them."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / name.decode()
        if source.is_file():
            target = destination / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    return destination


@pytest.fixture(scope="session")
def staged() -> Iterator[Path]:
    """A copy of the checkout and a wheelhouse for offline installs (the box has no internet)."""
    why = build()
    if why:
        pytest.skip(why)
    with tempfile.TemporaryDirectory(prefix="bzzz-sd-") as tmp:
        root = Path(tmp)
        checkout = checkout_copy(root / "bzzz")
        # Exactly as the README tells an operator: bzzz's wheel and its dependencies, no
        # build tools (the installer must not need them).
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-w", str(root / "wheels"), str(checkout)],
            check=True,
            capture_output=True,
            timeout=600,
        )
        yield root
