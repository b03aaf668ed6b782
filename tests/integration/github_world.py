"""A GitHub world for daemons: the strict fake, settings that point daemons at it, and what
tests read back (comments, claims, audit entries). Shared by the task tests."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.github import FakeGitHub
from tests.integration.harness import Cluster, Daemon

REPO = "acme/widgets"
TOKEN = "ghp_testtoken_0123456789abcdef"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeGitHub]:
    users = {TOKEN: "bzzz-bot"} | {f"{TOKEN}-{n}": f"bot-{n}" for n in range(5)}
    with FakeGitHub(tmp_path / "github", users=users) as server:
        server.create_repo(REPO)
        yield server


def recorder(ran: Path) -> list[str]:
    """A command that appends the agent's peer id to a file per issue, as the issue asks."""
    ran.mkdir(exist_ok=True)
    return [
        "sh",
        "-c",
        f'echo "$BZZZ_PEER_ID" >> {ran}/"$BZZZ_TASK_NUMBER"; echo ran "$BZZZ_TASK_TITLE"',
    ]


def github_settings(fake: FakeGitHub, token: str = TOKEN, **extra: object) -> dict[str, object]:
    return {
        "github": {
            "repositories": [REPO],
            "base_url": fake.url,
            "poll_interval": 1,
            "lease_timeout": 30,
            "progress_interval": 1,
            "claim_window": 1,
            # GitHub asks for pauses between calls; the fake does not need them.
            "request_interval": 0,
            "write_interval": 0,
            **extra,
        },
        "env": {"BZZZ_GITHUB_TOKEN": token},
    }


def entries(daemon: Daemon, type_: str) -> list[dict]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bzzz",
            "--config",
            str(daemon.config_path),
            "log",
            "show",
            "--json",
            "--type",
            type_,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def standing_claims(fake: FakeGitHub, number: int) -> list[str]:
    """Claims not ended by a release or a result, or named as taken over by a later claim: at
    the end there must be none left."""
    bodies = [c["body"] for c in fake.comments(REPO, number)]
    claims = {m.group(2) for b in bodies if (m := re.match(r"bzzz-claim: (\S+) (\S+)", b))}
    ended = {
        m.group(2) for b in bodies if (m := re.match(r"bzzz-(?:done|release): (\S+) (\S+)", b))
    }
    for body in bodies:
        if over := re.match(r"bzzz-claim: \S+ \S+ takes-over:(\S+)", body):
            ended.update(over.group(1).split(","))
    return sorted(claims - ended)


def start_agents(
    cluster: Cluster, fake: FakeGitHub, count: int, meshed: bool = True, **settings: object
) -> list[Daemon]:
    """`count` daemons, each with its own GitHub login; meshed (one bootstrap list naming
    them all) or deaf to each other."""
    daemons = []
    for n in range(count):
        options = {**github_settings(fake, f"{TOKEN}-{n}"), **settings}
        options["github"] = {**github_settings(fake)["github"], **settings.get("github", {})}
        daemons.append(cluster.add("abcdefgh"[n], **options))
    return Cluster.start_together(daemons, meshed=meshed)


def gated_recorder(ran: Path, gate: Path) -> list[str]:
    """A command that notes its start, waits for `gate` to exist, then notes its end: runs cut
    short (kill -9, a lost lease) show as starts without an end."""
    ran.mkdir(exist_ok=True)
    return [
        "sh",
        "-c",
        f'echo "$BZZZ_PEER_ID" >> {ran}/"$BZZZ_TASK_NUMBER".start; '
        f"while [ ! -e {gate} ]; do sleep 0.1; done; "
        f'echo "$BZZZ_PEER_ID" >> {ran}/"$BZZZ_TASK_NUMBER"',
    ]


def runs(ran: Path, number: int, suffix: str = "") -> list[str]:
    path = ran / f"{number}{suffix}"
    return path.read_text().split() if path.exists() else []


def markers(fake: FakeGitHub, number: int, kind: str) -> list[str]:
    """The first lines of the `bzzz-<kind>:` comments on an issue."""
    prefix = f"bzzz-{kind}:"
    return [
        c["body"].splitlines()[0]
        for c in fake.comments(REPO, number)
        if c["body"].startswith(prefix)
    ]
