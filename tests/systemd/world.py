"""The world a box's daemon works in, run inside the box (standard library and git only): the
GitHub fake with a small project and the issues of <dir>/issues.json (title, body; labelled
`bzzz-task` by the repository's owner), and a scripted model that runs, as its one command, what the
issue's body says, then finishes. Writes its addresses to <dir>/world.json and serves until
stopped.

    PYTHONPATH=/srv/bzzz python3 -m tests.systemd.world /srv/world
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.fakes.github import FakeGitHub
from tests.fakes.model import ScriptedModel, call

REPO = "acme/widgets"
TOKEN = "box-token"


def seed(fake: FakeGitHub, scratch: Path) -> None:
    work = scratch / "seed"
    subprocess.run(["git", "clone", "-q", str(fake.git_dir(REPO)), str(work)], check=True)
    (work / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    who = ["-c", "user.name=dev", "-c", "user.email=dev@example.invalid"]
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(work), *who, "commit", "-qm", "calc"], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", "HEAD"], check=True)


def script(request: dict) -> object:
    """Turn 1: run the issue's body; turn 2: finish."""
    prompt = request["messages"][1]["content"]
    body = re.search(r"<issue-body>\n(.*?)\n</issue-body>", prompt, re.S)
    turn = sum(1 for m in request["messages"] if m["role"] == "assistant")
    if turn == 0 and body:
        return call("run", command=body.group(1))
    return call("finish", summary="ran what the issue asked")


def main(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeGitHub(directory / "github", users={TOKEN: "bzzz-bot"}) as fake:
        fake.create_repo(REPO)
        seed(fake, directory)
        for issue in json.loads((directory / "issues.json").read_text()):
            fake.create_issue(REPO, issue["title"], body=issue["body"], labels=["bzzz-task"])
        with ScriptedModel(script) as model:
            address = {"github": fake.url, "model": model.url, "git": str(fake.git_dir(REPO))}
            (directory / "world.json").write_text(json.dumps(address))
            stop.wait()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
