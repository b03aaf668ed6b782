"""GitHub budget benchmark: requests that count against the rate limit, per cluster-hour.

3 daemons against the GitHub fake for a simulated hour (intervals scaled down: by default one
real minute is one hour, a 30 s poll interval is 0.5 s). The repository holds a backlog of 150
open tasks no node takes (`type-rust`; the nodes take only `python`: two pages of the issue
list), and the hour is run twice:
idle (only the backlog) and busy (20 more tasks arriving over the hour, worked and reported).
Each as a cluster (one poller, each page a conditional request) and as 3 nodes that cannot hear
each other (every node polls on its own, as without coordination); printed with the ratio.

Run from the repository root:  python -m bench.github_budget [--seconds 60] [--backlog 150]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from tests.fakes.github import FakeGitHub
from tests.integration.harness import Cluster

REPO = "acme/widgets"
HOUR_S = 3600
TASKS = 20
NODES = 3


def run(meshed: bool, seconds: float, backlog: int, arriving: int) -> dict[str, float]:
    scale = seconds / HOUR_S
    root = Path(tempfile.mkdtemp(prefix="bzzz-budget-"))
    tokens = {f"token-{n}": f"bot-{n}" for n in range(NODES)}
    try:
        with FakeGitHub(root / "github", users=tokens) as fake:
            fake.create_repo(REPO)
            for n in range(backlog):
                fake.create_issue(REPO, f"Backlog {n}", labels=["bzzz-task", "type-rust"])
            cluster = Cluster(root)
            try:
                daemons = []
                for n in range(NODES):
                    daemons.append(
                        cluster.add(
                            "abc"[n],
                            executor={"command": ["true"]},
                            capabilities=["python"],
                            github={
                                "repositories": [REPO],
                                "base_url": fake.url,
                                "poll_interval": 30 * scale,
                                "lease_timeout": 600 * scale,
                                "progress_interval": 60 * scale,
                                "claim_window": 0.5,
                                "request_interval": 0,
                                "write_interval": 0,
                            },
                            env={"BZZZ_GITHUB_TOKEN": f"token-{n}"},
                            interval=max(30 * scale, 0.5),
                        )
                    )
                Cluster.start_together(daemons, meshed=meshed)
                time.sleep(2)  # connections and the first poll
                before = fake.counted_requests()
                total_before = len(fake.requests)
                started = time.monotonic()
                numbers = []
                for task in range(arriving):
                    # Tasks arrive evenly over the simulated hour.
                    time.sleep(max(0.0, started + task * seconds / arriving - time.monotonic()))
                    labels = ["bzzz-task", "type-python"]
                    numbers.append(fake.create_issue(REPO, f"Task {task}", labels=labels))
                time.sleep(max(0.0, started + seconds - time.monotonic()))
                counted = fake.counted_requests() - before
                sent = len(fake.requests) - total_before
                done = sum(fake.issue(REPO, n)["state"] == "closed" for n in numbers)
            finally:
                cluster.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"counted": counted, "sent": sent, "done": done}  # per (simulated) hour


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="real seconds per hour")
    parser.add_argument("--backlog", type=int, default=150, help="open tasks nobody takes")
    args = parser.parse_args()
    rows = [("3 nodes, 1 simulated hour", "counted/h", "all requests/h", "done")]
    for label, arriving in (("idle", 0), (f"busy, {TASKS} tasks", TASKS)):
        cluster = run(True, args.seconds, args.backlog, arriving)
        alone = run(False, args.seconds, args.backlog, arriving)
        rows += [
            (
                f"{label}: cluster (one poller)",
                f"{cluster['counted']:.0f}",
                f"{cluster['sent']:.0f}",
                f"{cluster['done']:.0f}/{arriving}",
            ),
            (
                f"{label}: every node polling",
                f"{alone['counted']:.0f}",
                f"{alone['sent']:.0f}",
                f"{alone['done']:.0f}/{arriving}",
            ),
            (
                f"{label}: ratio (cluster / alone)",
                f"{cluster['counted'] / max(alone['counted'], 1):.2f}x",
                f"{cluster['sent'] / max(alone['sent'], 1):.2f}x",
                "",
            ),
        ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(
        f"(backlog of {args.backlog} open tasks; GitHub allows 5000 counted requests per hour"
        " per token; a node polling every 30 s sends 120 polls an hour, per page)"
    )


if __name__ == "__main__":
    main()
