"""Boxes booted by ../shared/tools/sdbox: a real systemd as PID 1 in its own root filesystem.

Never boot systemd any other way on these machines. A box is only reachable through `sdbox`
(exec, cp); boxes given the same bridge reach each other and nothing else.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SDBOX = REPO.parent / "shared" / "tools" / "sdbox"


def unavailable() -> str | None:
    """Why boxes cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "sdbox needs root"
    if not SDBOX.exists():
        return (
            f"{SDBOX} not found: these tests boot a real systemd with the workplace's sdbox "
            "tool, expected beside the checkout (../shared/tools/sdbox)"
        )
    return None


# What the boxes need beyond sdbox's image: the sandbox and git for the agent, Node.js to
# show that a JIT runtime works under the unit.
EXTRA_PACKAGES = ("bubblewrap", "nodejs", "git")


def build() -> str | None:
    """Build (or reuse) the cached image, rebuilt when it lacks our packages; return why it
    failed, or None."""
    home = Path(os.environ.get("SDBOX_HOME", "/var/lib/sdbox"))
    release = home / "rootfs" / "etc" / "sdbox-release"
    built = release.read_text() if release.exists() else ""
    force = ["--force"] if built and not all(f",{p}" in built for p in EXTRA_PACKAGES) else []
    result = subprocess.run(
        [str(SDBOX), "build", *force],
        env={**os.environ, "SDBOX_EXTRA_PKGS": ",".join(EXTRA_PACKAGES)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        return "sdbox build failed: " + (result.stderr or result.stdout)[-500:]
    return None


class Box:
    def __init__(self, name: str, net: str | None = None) -> None:
        self.name = name
        self.net = net
        self.env = {**os.environ, "SDBOX_NAME": name}

    def sdbox(
        self, *args: str, timeout: float = 120, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(SDBOX), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"sdbox {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"
            )
        return result

    def up(self) -> None:
        args = ["up", "--fresh"]
        if self.net:
            args += ["--net", self.net]
        self.sdbox(*args, timeout=180)

    def down(self) -> None:
        """Power off and discard the box's changes (its overlay), leaving nothing behind."""
        self.sdbox("down", "--timeout", "30", timeout=90, check=False)
        self.sdbox("reset", timeout=60, check=False)

    def exec(
        self, *cmd: str, timeout: float = 120, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.sdbox("exec", *cmd, timeout=timeout, check=check, input=input)

    def sh(self, script: str, timeout: float = 120, check: bool = True) -> str:
        return self.exec("sh", "-c", script, timeout=timeout, check=check).stdout

    def cp(self, source: Path, destination: str) -> None:
        self.sdbox("cp", str(source), destination, timeout=300)
