"""Discovery benchmark: how fast N daemons on separate (namespaced) hosts form a full mesh by
mDNS alone. Needs root (network namespaces).

Run from the repository root:  python -m bench.discovery [--sizes 3 10] [--runs 5]

Two clocks per run: from launching the processes (includes Python start-up and imports, on a
machine with 2 cores shared by all daemons) and from the moment the last daemon reported READY
(what discovery itself costs). p50 over the runs, and the ratio of the launch figure to the 1 s
target for 3 hosts.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tests.integration.harness import Cluster
from tests.netns.lab import Lab, unavailable

TARGET_S = 1.0


def one_run(size: int, root: Path) -> tuple[float, float]:
    with Lab() as lab:
        cluster = Cluster(root)
        try:
            daemons = []
            for i in range(size):
                host = lab.add_host()
                daemons.append(
                    cluster.add(
                        f"h{i}", ip=host.address, mdns=True, prefix=host.prefix, interval=30
                    )
                )
            launched = time.monotonic()
            for daemon in daemons:
                daemon.start(wait=False)
            for daemon in daemons:
                daemon.wait_notified("READY=1", timeout=60)
            all_ready = time.monotonic()
            everyone = {d.peer_id for d in daemons}
            pending = list(daemons)
            while pending:
                pending = [
                    d for d in pending if set(d.status()["connected"]) != everyone - {d.peer_id}
                ]
                if time.monotonic() - launched > 120:
                    raise SystemExit(f"no full mesh of {size} after 120 s")
                if pending:
                    time.sleep(0.02)
            meshed = time.monotonic()
            return meshed - launched, meshed - all_ready
        finally:
            cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    why = unavailable()
    if why:
        raise SystemExit(f"cannot run: {why}")

    rows = [("hosts", "launch -> full mesh p50", "last READY -> full mesh p50", "runs (launch)")]
    for size in args.sizes:
        launch, ready = [], []
        for run in range(args.runs):
            root = Path(tempfile.mkdtemp(prefix="bzzz-bd-"))
            try:
                from_launch, from_ready = one_run(size, root)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            launch.append(from_launch)
            ready.append(from_ready)
            print(
                f"  {size} hosts, run {run + 1}: {from_launch:.2f} s from launch, "
                f"{from_ready:.2f} s from READY",
                flush=True,
            )
        p50_launch, p50_ready = statistics.median(launch), statistics.median(ready)
        rows.append(
            (
                str(size),
                f"{p50_launch:.2f} s ({p50_launch / TARGET_S:.2f}x of {TARGET_S:.0f} s)",
                f"{p50_ready:.2f} s",
                " ".join(f"{t:.2f}" for t in launch),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
