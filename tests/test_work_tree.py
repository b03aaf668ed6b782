"""The daemon's git in a work tree the work controls: it must never run what the work planted."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bzzz.tasks.executor import fresh_workdir, git, git_dir
from bzzz.tasks.model import Task

HOOK = "#!/bin/sh\ntouch {marker}\n"


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


async def test_a_planted_git_config_or_hook_is_never_run(tmp_path: Path):
    origin = tmp_path / "origin.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(origin))
    task = Task("acme/widgets", 1, "t", "", (), "open", (), "", "")
    tree = fresh_workdir(tmp_path / "work", task, "n1")
    code, output = await git(
        "clone", "-q", f"--separate-git-dir={git_dir(tree)}", str(origin), str(tree)
    )
    assert code == 0, output
    assert (tree / ".git").is_file() and git_dir(tree).is_dir()

    # What a command in the sandbox can do: replace .git with a repository of its own making,
    # with hooks and a config that runs programs.
    marker = tmp_path / "ran"
    (tree / ".git").unlink()
    planted = tree / ".git"
    run("git", "init", "-q", str(tree))
    hook = planted / "hooks" / "pre-commit"
    hook.write_text(HOOK.format(marker=marker))
    hook.chmod(0o755)
    with (planted / "config").open("a") as config:
        config.write(f"[core]\n\tfsmonitor = touch {marker}\n\thooksPath = {planted / 'hooks'}\n")
    (tree / "change.txt").write_text("work\n")

    who = ["-c", "user.name=agent", "-c", "user.email=agent@bzzz.invalid"]
    assert (await git("add", "--all", cwd=tree))[0] == 0
    code, output = await git(*who, "commit", "-qm", "work", cwd=tree)
    assert code == 0, output
    assert not marker.exists(), "nothing the work planted ran"
    files = run("git", "--git-dir", str(git_dir(tree)), "ls-tree", "-r", "--name-only", "HEAD")
    assert files.split() == ["change.txt"]
