"""Log volume of an operator's bad day: what `journalctl -p warning` shows.

Run from the repository root:  python -m bench.log_volume [--down-seconds 120]

Three daemons in a full mesh (each a bootstrap peer of the others). c stops cleanly and stays
down for `--down-seconds`; meanwhile b restarts; then c comes back. Printed: the warning (and
worse) lines the two nodes that stayed up wrote, by event, and the lines any node wrote after
its last `node_stopped`. The daemons log to files: console lines with the level in brackets
(older builds also prefix `<N>`), so the same count works on an older checkout (copy this file
there and run it from there).
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter

from tests.integration.harness import Cluster, Daemon, wait_until

WARNING = re.compile(r"^<[0-4]>|\[(warning|error|critical)\s*\]")
EVENT = re.compile(r"\]\s+(\S+)")


def warnings_since(daemon: Daemon, offset: int, show: bool = False) -> Counter[str]:
    text = daemon.log_path.read_bytes()[offset:].decode(errors="replace")
    found: Counter[str] = Counter()
    for line in text.splitlines():
        if WARNING.search(line):
            if show:
                print(f"{daemon.name}: {line[:300]}")
            event = EVENT.search(line)
            found[event.group(1) if event else line[:60]] += 1
    return found


def after_last_stop(daemon: Daemon) -> int:
    lines = daemon.log().splitlines()
    stops = [i for i, line in enumerate(lines) if "node_stopped" in line]
    return len(lines) - stops[-1] - 1 if stops else -1


def connected(daemon: Daemon, other: Daemon) -> bool:
    for row in daemon.status()["peers"]:
        if row["peer_id"] == other.peer_id:
            return bool(row["connected"])
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--down-seconds", type=float, default=120.0)
    parser.add_argument("--show", action="store_true", help="print each warning line")
    args = parser.parse_args()
    with Cluster.in_temporary_directory() as cluster:
        a, b, c = cluster.full_mesh(["a", "b", "c"])
        wait_until(lambda: connected(a, b) and connected(a, c) and connected(b, c), 30, "mesh")
        marks = {d.name: d.log_path.stat().st_size for d in (a, b)}
        c.stop()
        down = time.monotonic()
        b.stop()
        b.start()
        wait_until(lambda: connected(a, b), 30, "b back")
        time.sleep(max(0.0, args.down_seconds - (time.monotonic() - down)))
        c.start()
        wait_until(lambda: connected(a, c) and connected(b, c), 90, "c back")
        found = warnings_since(a, marks["a"], args.show) + warnings_since(b, marks["b"], args.show)
        for daemon in (a, b, c):
            daemon.stop()
        print(f"c down {args.down_seconds:.0f} s, b restarted once; warnings from a and b:")
        for event, count in found.most_common():
            print(f"  {count:>4}  {event}")
        print(f"  {sum(found.values()):>4}  in total")
        print(
            "lines after the last node_stopped: "
            + ", ".join(f"{d.name}={after_last_stop(d)}" for d in (a, b, c))
        )


if __name__ == "__main__":
    main()
