"""Pubsub benchmark: 3 `bzzz run` daemons on loopback, driven by a bench peer.

Run from the repository root:  python -m bench.pubsub [--idle-seconds 60] [--soak-seconds 0]

The bench peer (a real libp2p host in this process) connects to daemon A only; A relays to B
and C, so B and C measure two hops. Latency is what each daemon measures itself: receive time
minus the sender's timestamp (same host, same clock). Printed: start-to-READY, latency p50/p99
at 50 msg/s, delivery of a 1000-message burst, RSS, idle CPU, and each figure's ratio to its
target. With --soak-seconds, RSS is sampled while publishing at 100 msg/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bzzz.messages import COORDINATION_TOPIC
from tests.integration.harness import Cluster, Daemon
from tests.integration.testpeer import TestPeer

TARGET_P50_MS = 5.0
TARGET_RSS_MB = 100.0
LATENCY_RATE = 50
LATENCY_COUNT = 500
BURST = 1000
PAYLOAD_BYTES = 300
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def progress(sender: str, n: int) -> bytes:
    body = {
        "type": "task_progress",
        "from": sender,
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {"repository": "bench/bench", "task_id": n, "status": "working", "message": ""},
    }
    raw = json.dumps(body)
    body["data"]["message"] = "x" * max(0, PAYLOAD_BYTES - len(raw))
    return json.dumps(body).encode()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def accepted(daemon: Daemon) -> int:
    return int(daemon.status()["messages"]["topics"][COORDINATION_TOPIC]["accepted"])


async def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


def start_to_ready(root: Path, runs: int) -> float:
    """Median seconds from process start to READY=1 of a lone daemon."""
    times = []
    for i in range(runs):
        cluster = Cluster(root / f"ready{i}")
        try:
            daemon = cluster.add("solo")
            started = time.monotonic()
            daemon.start()
            times.append(time.monotonic() - started)
        finally:
            cluster.close()
    return statistics.median(times)


async def drive(daemons: list[Daemon], soak_seconds: float) -> dict[str, Any]:
    a = daemons[0]
    results: dict[str, Any] = {}
    async with TestPeer() as peer:
        await peer.join(a.address)
        base = {d.name: accepted(d) for d in daemons}

        # Latency at a steady 50 msg/s.
        interval = 1 / LATENCY_RATE
        next_send = time.monotonic()
        for n in range(LATENCY_COUNT):
            await peer.publish(COORDINATION_TOPIC, progress(peer.peer_id, n))
            next_send += interval
            await asyncio.sleep(max(0.0, next_send - time.monotonic()))
        await wait_for(
            lambda: all(accepted(d) >= base[d.name] + LATENCY_COUNT for d in daemons), 10
        )
        results["latency"] = {d.name: d.status()["messages"]["delay_ms"] for d in daemons}

        # A burst, as fast as the bench peer can publish.
        base = {d.name: accepted(d) for d in daemons}
        started = time.monotonic()
        for n in range(BURST):
            await peer.publish(COORDINATION_TOPIC, progress(peer.peer_id, n))
        published = time.monotonic() - started
        done = await wait_for(lambda: all(accepted(d) >= base[d.name] + BURST for d in daemons), 30)
        elapsed = time.monotonic() - started
        results["burst"] = {
            "delivered": {d.name: accepted(d) - base[d.name] for d in daemons},
            "publish_s": published,
            "all_delivered_s": elapsed if done else None,
            "dropped": {d.name: d.status()["messages"]["dropped"] for d in daemons},
        }

        if soak_seconds:
            samples = []
            rate = 100
            n, started = 0, time.monotonic()
            next_sample = started
            while time.monotonic() - started < soak_seconds:
                await peer.publish(COORDINATION_TOPIC, progress(peer.peer_id, n))
                n += 1
                if time.monotonic() >= next_sample:
                    rss = [rss_mb(d.pid) for d in daemons]
                    samples.append((time.monotonic() - started, rss))
                    next_sample += 10
                await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            results["soak"] = {"messages": n, "samples": samples}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--soak-seconds", type=float, default=0)
    parser.add_argument("--ready-runs", type=int, default=5)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bzzz-bench-"))
    cluster = Cluster(root / "mesh")
    try:
        ready_s = start_to_ready(root, args.ready_runs)
        daemons = cluster.full_mesh(["a", "b", "c"], interval=30)
        for daemon in daemons:
            others = {d.peer_id for d in daemons} - {daemon.peer_id}
            deadline = time.monotonic() + 20
            while set(daemon.status()["connected"]) < others:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{daemon.name} did not mesh")
                time.sleep(0.05)
        results = asyncio.run(drive(daemons, args.soak_seconds))
        rss = {d.name: rss_mb(d.pid) for d in daemons}

        cpu0 = {d.name: cpu_seconds(d.pid) for d in daemons}
        time.sleep(args.idle_seconds)
        idle_cpu = {
            d.name: 100 * (cpu_seconds(d.pid) - cpu0[d.name]) / args.idle_seconds for d in daemons
        }
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)

    report(ready_s, results, rss, idle_cpu, args.idle_seconds)


def report(
    ready_s: float,
    results: dict[str, Any],
    rss: dict[str, float],
    idle_cpu: dict[str, float],
    idle_seconds: float,
) -> None:
    rows: list[tuple[str, str, str]] = [("metric", "value", "vs target")]
    rows.append(("start to READY (median, 1 daemon)", f"{ready_s * 1000:.0f} ms", ""))
    for name, lat in results["latency"].items():
        hops = "1 hop" if name == "a" else "2 hops"
        rows.append(
            (
                f"latency @{LATENCY_RATE}/s {name} ({hops}) p50/p99",
                f"{lat['p50']:.2f} / {lat['p99']:.2f} ms",
                f"p50 {lat['p50'] / TARGET_P50_MS:.2f}x of {TARGET_P50_MS:.0f} ms",
            )
        )
    burst = results["burst"]
    for name, got in burst["delivered"].items():
        rows.append((f"burst {BURST} delivered to {name}", f"{got}/{BURST}", f"{got / BURST:.1%}"))
    took = burst["all_delivered_s"]
    rows.append(
        (
            "burst: publish / all delivered",
            f"{burst['publish_s'] * 1000:.0f} ms / "
            + (f"{took * 1000:.0f} ms" if took else "incomplete"),
            f"{BURST / took:.0f} msg/s" if took else "",
        )
    )
    for name, mb in rss.items():
        rows.append((f"RSS {name}", f"{mb:.1f} MB", f"{mb / TARGET_RSS_MB:.2f}x of 100 MB"))
    for name, pct in idle_cpu.items():
        rows.append((f"idle CPU {name} over {idle_seconds:.0f} s", f"{pct:.2f} %", ""))
    if "soak" in results:
        soak = results["soak"]
        samples = soak["samples"]
        first, middle, last = samples[0], samples[len(samples) // 2], samples[-1]
        for i, name in enumerate(results["latency"]):
            # Growth in the second half tells whether RSS levels off once caches are full.
            late = (last[1][i] - middle[1][i]) * 1024 * 1024 / max(1, soak["messages"] // 2)
            rows.append(
                (
                    f"soak RSS {name} ({soak['messages']} msgs, {last[0]:.0f} s)",
                    f"{first[1][i]:.1f} -> {middle[1][i]:.1f} -> {last[1][i]:.1f} MB",
                    f"second half {late:.0f} B/msg",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
