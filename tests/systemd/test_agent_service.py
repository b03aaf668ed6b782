"""The agent in the box under the shipped unit (sdbox: a real systemd): its commands run in
bubblewrap inside the service's hardening. Node.js and Python work there (the unit no longer
forbids writable-executable memory to children); the node's key, its token and everything
outside the task's tree stay out of reach.

The world (the GitHub fake, a scripted model) runs in the box too, on its loopback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import wait_until
from tests.systemd.sdbox import Box, unavailable

pytestmark = [
    pytest.mark.timeout(420),
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]

RUNTIMES = "node -e 'console.log(6 * 7)' && python3 -c 'print(6 * 7)'"
ESCAPES = (
    "cat /var/lib/bzzz/identity.key; cat /etc/bzzz/github-token; "
    'cat "$CREDENTIALS_DIRECTORY/github-token"; ls /run/bzzz; '
    "echo planted > /var/lib/bzzz/planted; echo planted > /opt/bzzz/planted; "
    'echo planted > "$BZZZ_TASK_WORKDIR/../planted"; echo "limit=$(ulimit -v)"; echo tried'
)
ISSUES = [{"title": "Run the runtimes", "body": RUNTIMES}, {"title": "Escape", "body": ESCAPES}]


def config(world: dict[str, str]) -> str:
    return f"""
[node]
agent_id = "boxed"

[github]
repositories = ["acme/widgets"]
base_url = "{world["github"]}"
poll_interval = 1
claim_window = 1
request_interval = 0

[executor]
kind = "llm"
sandbox = "bubblewrap"
test_command = {json.dumps(["sh", "-c", RUNTIMES])}
timeout = 120

[llm]
url = "{world["model"]}"
max_turns = 4
"""


@pytest.fixture(scope="module")
def box(staged: Path) -> Iterator[Box]:
    tag = os.getpid() % 10000 + 1
    machine = Box(f"bzagt{tag}")
    machine.up()
    try:
        machine.cp(staged / "bzzz", "/srv/bzzz")
        machine.cp(staged / "wheels", "/srv/wheels")
        yield machine
    finally:
        machine.down()


def comments(box: Box, world: dict[str, str], number: int) -> list[dict]:
    url = f"{world['github']}/repos/acme/widgets/issues/{number}/comments"
    out = box.exec("curl", "-sf", "-H", "Authorization: token box-token", url).stdout
    return json.loads(out)


def done(box: Box, world: dict[str, str], number: int) -> str:
    found = [c["body"] for c in comments(box, world, number) if c["body"].startswith("bzzz-done")]
    return found[0] if found else ""


def transcript(box: Box, number: int) -> list[dict]:
    out = box.exec("bzzz", "tasks", f"acme/widgets#{number}", "--transcript", "--json").stdout
    return json.loads(out)


def test_the_agents_commands_run_sandboxed_under_the_unit(box: Box):
    box.exec("/srv/bzzz/install-service.sh", "--wheelhouse", "/srv/wheels", timeout=300)
    box.sh("mkdir -p /srv/world")
    box.exec("tee", "/srv/world/issues.json", input=json.dumps(ISSUES))
    box.exec(
        "systemd-run",
        "--unit=bzzz-world",
        "--setenv=PYTHONPATH=/srv/bzzz",
        "python3",
        "-m",
        "tests.systemd.world",
        "/srv/world",
    )
    wait_until(
        lambda: box.exec("test", "-s", "/srv/world/world.json", check=False).returncode == 0,
        60,
        "the world up",
    )
    world = json.loads(box.sh("cat /srv/world/world.json"))
    # The fake's repositories are file:// on this box; the service may write there (on GitHub
    # it pushes over HTTPS).
    box.sh(f"chown -R bzzz:bzzz {Path(world['git']).parent}")
    box.sh(
        "mkdir -p /etc/systemd/system/bzzz.service.d && printf '[Service]\\nReadWritePaths="
        f"{Path(world['git']).parent}\\n' > /etc/systemd/system/bzzz.service.d/world.conf"
    )
    box.exec("tee", "/etc/bzzz/config.toml", input=config(world))
    box.sh("printf box-token > /etc/bzzz/github-token && chmod 600 /etc/bzzz/github-token")
    key = box.sh("cat /var/lib/bzzz/identity.key | od -An -c | head -c 4000")
    box.exec("systemctl", "daemon-reload")
    box.exec("systemctl", "restart", "bzzz", timeout=60)
    executor = wait_until(
        lambda: (
            (e := json.loads(box.exec("bzzz", "status", "--json").stdout)["tasks"]["executor"])
            and e["problem"] is None
            and e
        ),
        60,
        "the executor ready under the unit",
    )
    assert executor["sandbox"] == "bubblewrap" and executor["model"] == "coder-7b"

    wait_until(lambda: done(box, world, 1) and done(box, world, 2), 180, "both tasks done")
    runtimes = done(box, world, 1)
    assert runtimes.split()[3] == "success", runtimes
    assert "node -e" in runtimes and ": passed." in runtimes
    ran = next(e for e in transcript(box, 1) if e["kind"] == "tool" and e["name"] == "run")
    assert ran["output"].startswith("[exit status 0]") and ran["output"].count("42") == 2

    escape = next(e for e in transcript(box, 2) if e["kind"] == "tool" and e["name"] == "run")
    output = escape["output"]
    assert output.rstrip().endswith("tried")
    assert "identity.key: No such file or directory" in output
    assert "github-token: No such file or directory" in output
    assert "box-token" not in output and "PRIVATE KEY" not in output
    assert output.count("Read-only file system") == 3, "the state dir, /opt, the tree's parent"
    assert "limit=8388608" in output, "executor.sandbox_memory_mb holds inside"
    for path in ("/var/lib/bzzz/planted", "/opt/bzzz/planted"):
        assert box.exec("test", "-e", path, check=False).returncode != 0, path
    assert not box.sh("find /var/lib/bzzz/work -maxdepth 2 -name planted")
    assert box.sh("cat /var/lib/bzzz/identity.key | od -An -c | head -c 4000") == key
    wait_until(
        lambda: json.loads(box.exec("bzzz", "status", "--json").stdout)["tasks"]["held"] == 0,
        30,
        "both claims given back",
    )
    journal = box.exec("journalctl", "-u", "bzzz", "--no-pager").stdout
    assert "Traceback" not in journal
