"""GitHub budget benchmark: requests that count against the rate limit, per cluster-hour.

3 daemons against the GitHub fake for a simulated hour (intervals scaled down: by default one
real minute is one hour, a 30 s poll interval is 0.5 s), with 20 tasks arriving over the hour.
Run once as a cluster (one poller, conditional polls) and once as 3 nodes that cannot hear
each other (every node polls on its own, as without coordination), and print both and the ratio.

Run from the repository root:  python -m bench.github_budget [--seconds 60]
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


def run(meshed: bool, seconds: float) -> dict[str, float]:
    scale = seconds / HOUR_S
    root = Path(tempfile.mkdtemp(prefix="bzzz-budget-"))
    tokens = {f"token-{n}": f"bot-{n}" for n in range(NODES)}
    try:
        with FakeGitHub(root / "github", users=tokens) as fake:
            fake.create_repo(REPO)
            cluster = Cluster(root)
            try:
                daemons = []
                for n in range(NODES):
                    daemons.append(
                        cluster.add(
                            "abc"[n],
                            executor={"command": ["true"]},
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
                if meshed:
                    for daemon in daemons:
                        daemon.settings["bootstrap"] = [d.address for d in daemons]
                        daemon.write_config()
                for daemon in daemons:
                    daemon.start(wait=False)
                for daemon in daemons:
                    daemon.wait_notified("READY=1", timeout=30)
                time.sleep(2)  # connections and the first poll
                before = fake.counted_requests()
                total_before = len(fake.requests)
                started = time.monotonic()
                for task in range(TASKS):
                    # Tasks arrive evenly over the simulated hour.
                    time.sleep(max(0.0, started + task * seconds / TASKS - time.monotonic()))
                    fake.create_issue(REPO, f"Task {task}", labels=["bzzz-task"])
                time.sleep(max(0.0, started + seconds - time.monotonic()))
                counted = fake.counted_requests() - before
                sent = len(fake.requests) - total_before
                done = sum(fake.issue(REPO, n)["state"] == "closed" for n in range(1, TASKS + 1))
            finally:
                cluster.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"counted": counted, "sent": sent, "done": done}  # per (simulated) hour


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="real seconds per hour")
    args = parser.parse_args()
    cluster = run(True, args.seconds)
    alone = run(False, args.seconds)
    rows = [
        ("mode (3 nodes, 20 tasks, 1 simulated hour)", "counted/h", "all requests/h", "done"),
        (
            "cluster: one poller, conditional polls",
            f"{cluster['counted']:.0f}",
            f"{cluster['sent']:.0f}",
            f"{cluster['done']:.0f}/{TASKS}",
        ),
        (
            "every node polling on its own",
            f"{alone['counted']:.0f}",
            f"{alone['sent']:.0f}",
            f"{alone['done']:.0f}/{TASKS}",
        ),
        (
            "ratio (cluster / alone)",
            f"{cluster['counted'] / alone['counted']:.2f}x",
            f"{cluster['sent'] / alone['sent']:.2f}x",
            "",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(
        "(GitHub allows 5000 counted requests per hour per token; a node polling every 30 s"
        " sends 120 polls an hour)"
    )


if __name__ == "__main__":
    main()
