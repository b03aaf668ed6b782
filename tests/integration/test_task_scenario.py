"""The promise under GitHub's real faults, all at once: one issue, one worker.

5 daemons, 40 issues (five with over 100 comments), claims racing in the same second, a window
of writes whose answers are lost, a secondary and a primary rate limit, two kill -9 with
restart. Every issue is closed and executed to its end exactly once by a live node (a run cut
short by kill -9 may be repeated, and is counted apart); after SIGTERM of all nodes no claim
is left standing.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.fakes.github import FakeGitHub
from tests.integration.github_world import REPO, runs, standing_claims, start_agents
from tests.integration.harness import Cluster, wait_until

ISSUES = 40
CHATTY = 5  # issues with a comment thread longer than one page
KILLS = 2


def worker(ran: Path) -> list[str]:
    """Notes its start, works a little (0.2-1.2 s), notes its end."""
    ran.mkdir(exist_ok=True)
    return [
        "sh",
        "-c",
        f'echo "$BZZZ_PEER_ID" >> {ran}/"$BZZZ_TASK_NUMBER".start; '
        'sleep "0.$(( $$ % 10 + 2 ))"; '
        f'echo "$BZZZ_PEER_ID" >> {ran}/"$BZZZ_TASK_NUMBER"',
    ]


def history(fake: FakeGitHub, daemons: list, number: int, finished: list[str]) -> str:
    """What happened to one issue, to explain a failure."""
    names = {d.peer_id: d.name for d in daemons}
    lines = [f"issue {number} ran to its end by {[names.get(p, p) for p in finished]}"]
    for c in fake.comments(REPO, number):
        if c["body"].startswith("bzzz-"):
            first = c["body"].splitlines()[0]
            for peer, name in names.items():
                first = first.replace(peer, name)
            lines.append(f"  {c['created_at']} {c['updated_at']} #{c['id']} {first}")
    key = f"{REPO}#{number}"
    for daemon in daemons:
        for line in daemon.log().splitlines():
            if key in line and "task_" in line:
                lines.append(f"  {daemon.name}: {line[:220]}")
    return "\n".join(lines)


def test_forty_issues_five_daemons_faults_and_kills_each_executed_once(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path
):
    numbers = [fake.create_issue(REPO, f"Task {n}", labels=["bzzz-task"]) for n in range(ISSUES)]
    for number in numbers[:CHATTY]:
        for n in range(110):
            fake.add_comment(REPO, number, f"a human's thought {n}", user=f"human{n % 7}")
    ran = tmp_path / "ran"
    daemons = start_agents(
        cluster, fake, 5, executor={"command": worker(ran)}, github={"lease_timeout": 20}
    )

    def done() -> int:
        return sum(fake.issue(REPO, n)["state"] == "closed" for n in numbers)

    wait_until(lambda: done() >= 4, 60, "work under way")
    # Writes that happen but whose answers are lost: 502s after the write, dropped answers.
    fake.lose_answers(6, method="POST", path=r"/comments$")
    fake.lose_answers(3, method="PATCH", status=None)
    fake.lose_answers(2, method="DELETE", path=r"/labels/")
    victim = daemons[2]
    victim.signal(signal.SIGKILL)
    victim.wait_exit(5)
    time.sleep(2)
    victim.start()
    fake.secondary_limit_next(2, retry_after=2)
    fake.secondary_limit_next(1, retry_after=1, status=429)
    wait_until(lambda: done() >= 16, 90, "more work done")
    fake.rate_limit_until(int(time.time()) + 3)  # the primary limit: every token at 0 for 3 s
    victim = daemons[4]
    victim.signal(signal.SIGKILL)
    victim.wait_exit(5)
    time.sleep(2)
    victim.start()
    wait_until(lambda: done() == ISSUES, 180, "every issue closed")

    cut_short = 0
    for number in numbers:
        finished = runs(ran, number)
        assert len(finished) == 1, history(fake, daemons, number, finished)
        cut_short += len(runs(ran, number, ".start")) - 1
        labels = fake.issue(REPO, number)["labels"]
        assert "completed" in labels and "in-progress" not in labels, (number, labels)
    assert cut_short <= KILLS * 3, "only runs killed with their node are repeated"

    for daemon in daemons:
        daemon.signal(signal.SIGTERM)
    for daemon in daemons:
        assert daemon.wait_exit(30) == 0, daemon.log()[-4000:]
    for number in numbers:
        assert standing_claims(fake, number) == [], f"issue {number}"
    lost = [r for r in fake.requests if r["status"] in (None, 502)]
    limited = [r for r in fake.requests if r["status"] in (403, 429)]
    assert len(lost) >= 6 and limited, "the faults did hit"
    assert fake.internal_errors == []
