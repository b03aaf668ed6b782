"""Pubsub benchmark: N `bzzz run` daemons against N js-libp2p peers of the same topology.

Run from the repository root:  python -m bench.pubsub [--nodes 3] [--runs 3] [--soak-seconds 0]

Each implementation gets a full mesh of N nodes on loopback and the same driver: a py-libp2p
peer in this process (our `Host`) attached to node a only, so the others measure two hops. Per
run, in an order that alternates between runs: start-up, a warm-up, latency at 50 msg/s (1,100
messages, so that the scored window of the last 1,024 holds no start-up broadcasts), a burst of
1,000 and one of 5,000 as fast as the driver publishes, then idle. Latency is what each node
measures itself: receive time minus the sender's timestamp (same host, same clock; the js
reference is `tests/interop/peer.mjs --bench`). CPU per message per node is the node process's
CPU time over a phase divided by the messages of that phase. Printed: the median of the runs
for each figure, the js reference beside it and the ratio. With --soak-seconds, bzzz alone is
soaked at 20 msg/s and its RSS sampled every 10 s.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bzzz.messages import COORDINATION_TOPIC
from tests.integration.harness import Cluster, Daemon
from tests.integration.testpeer import TestPeer
from tests.interop.jspeer import JsPeer, unavailable

LATENCY_RATE = 50
LATENCY_COUNT = 1100
WARM_UP = 50
BURSTS = (1000, 5000)
SOAK_RATE = 20
PAYLOAD_BYTES = 300
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def progress(sender: str, n: int) -> bytes:
    body = {
        "type": "task_progress",
        "from": sender,
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {"repository": "bench/bench", "task_id": n + 1, "status": "working", "message": ""},
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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


# ---- the two implementations, behind one face -------------------------------------------------


@dataclass
class Nodes:
    """A mesh under test: where the driver dials, each node's pid, and what each received."""

    name: str
    dial: str
    pids: list[int]
    received: Callable[[str], Awaitable[list[int]]]  # messages from one sender, per node
    delays: Callable[[], Awaitable[list[tuple[float, float]]]]  # (p50, p99) ms per node
    ready_s: float
    close: Callable[[], Awaitable[None]] = field(repr=False)


async def bzzz_nodes(root: Path, n: int) -> Nodes:
    lone = Cluster(root / "lone")
    try:
        daemon = lone.add("solo")
        started = time.monotonic()
        daemon.start()  # returns at READY=1 on its notify socket, as systemd sees it
        ready_s = time.monotonic() - started
    finally:
        lone.close()
    cluster = Cluster(root / "mesh")
    daemons = cluster.full_mesh([chr(ord("a") + i) for i in range(n)], interval=30)
    for daemon in daemons:
        others = {d.peer_id for d in daemons} - {daemon.peer_id}
        deadline = time.monotonic() + 30
        while set(daemon.status()["connected"]) < others:
            if time.monotonic() > deadline:
                raise SystemExit(f"bzzz {daemon.name} did not mesh")
            await asyncio.sleep(0.05)

    def heard(daemon: Daemon, sender: str) -> int:
        rows = [p for p in daemon.status()["peers"] if p["peer_id"] == sender]
        return int(rows[0]["received"]) if rows else 0

    async def received(sender: str) -> list[int]:
        return [heard(d, sender) for d in daemons]

    async def delays() -> list[tuple[float, float]]:
        out = []
        for d in daemons:
            lat = d.status()["messages"]["delay_ms"]
            out.append((float(lat["p50"]), float(lat["p99"])))
        return out

    async def close() -> None:
        cluster.close()

    return Nodes(
        "bzzz", daemons[0].address, [d.pid for d in daemons], received, delays, ready_s, close
    )


async def js_nodes(n: int) -> Nodes:
    lone = JsPeer("/ip4/127.0.0.1/tcp/0", bench=True)
    started = time.monotonic()
    await lone.__aenter__()  # returns at its "ready" event: listening, topics joined
    ready_s = time.monotonic() - started
    await lone.__aexit__(None, None, None)
    peers = [JsPeer("/ip4/127.0.0.1/tcp/0", bench=True) for _ in range(n)]
    await asyncio.gather(*(p.__aenter__() for p in peers))
    for i, peer in enumerate(peers):
        for other in peers[i + 1 :]:
            await peer.dial(other.addrs[0])

    async def received(sender: str) -> list[int]:
        # The js peers publish nothing themselves: all they receive is the driver's.
        return [int((await p.stats())["received"]) for p in peers]

    async def delays() -> list[tuple[float, float]]:
        out = []
        for p in peers:
            values = [float(v) for v in (await p.stats())["delays_ms"]]
            out.append((percentile(values, 0.5), percentile(values, 0.99)))
        return out

    async def close() -> None:
        for peer in peers:
            await peer.__aexit__(None, None, None)

    return Nodes("js", peers[0].addrs[0], [p.pid for p in peers], received, delays, ready_s, close)


# ---- one run on one mesh ----------------------------------------------------------------------


async def wait_received(
    nodes: Nodes, sender: str, targets: list[int], stall: float
) -> tuple[bool, float]:
    """Wait until every node has its target, or until nothing new has arrived anywhere for
    `stall` seconds: what is missing then is lost, not late (a mesh that is merely slow, as 6
    nodes on 2 cores are in a burst, is not scored as losing)."""
    started = last_progress = time.monotonic()
    seen: list[int] = []
    while time.monotonic() - last_progress < stall:
        got = await nodes.received(sender)
        if all(g >= want for g, want in zip(got, targets, strict=True)):
            return True, time.monotonic() - started
        if got != seen:
            seen, last_progress = got, time.monotonic()
        await asyncio.sleep(0.25)  # asking costs the nodes CPU too: not too often
    return False, time.monotonic() - started


def cpu_of(nodes: Nodes) -> list[float]:
    return [cpu_seconds(pid) for pid in nodes.pids]


async def measure(nodes: Nodes, idle_seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"ready_s": nodes.ready_s}
    async with TestPeer() as driver:
        await driver.join(nodes.dial)
        sent = 0

        async def steady(count: int, rate: float) -> None:
            nonlocal sent
            next_send = time.monotonic()
            for _ in range(count):
                await driver.publish(COORDINATION_TOPIC, progress(driver.peer_id, sent))
                sent += 1
                next_send += 1 / rate
                await asyncio.sleep(max(0.0, next_send - time.monotonic()))

        # Warm-up until everyone hears the driver (the first messages may go before the
        # driver is in the mesh: they are not scored).
        deadline = time.monotonic() + 30
        while min(await nodes.received(driver.peer_id)) < WARM_UP // 2:
            if time.monotonic() > deadline:
                raise SystemExit(f"{nodes.name}: the warm-up did not reach every node")
            await steady(10, LATENCY_RATE)

        # Latency at a steady rate; CPU over the same phase.
        base, cpu0, t0 = await nodes.received(driver.peer_id), cpu_of(nodes), time.monotonic()
        await steady(LATENCY_COUNT, LATENCY_RATE)
        await wait_received(nodes, driver.peer_id, [b + LATENCY_COUNT for b in base], 10)
        seconds = time.monotonic() - t0
        cpu = [c1 - c0 for c0, c1 in zip(cpu0, cpu_of(nodes), strict=True)]
        out["latency"] = await nodes.delays()
        out["cpu_pct_steady"] = [100 * c / seconds for c in cpu]
        out["cpu_ms_per_msg_steady"] = [1000 * c / LATENCY_COUNT for c in cpu]

        for burst in BURSTS:
            base, cpu0 = await nodes.received(driver.peer_id), cpu_of(nodes)
            started = time.monotonic()
            for _ in range(burst):
                await driver.publish(COORDINATION_TOPIC, progress(driver.peer_id, sent))
                sent += 1
            done, _ = await wait_received(nodes, driver.peer_id, [b + burst for b in base], 15)
            took = time.monotonic() - started  # from the first publish to the last delivery
            got = [
                min(burst, r - b)
                for r, b in zip(await nodes.received(driver.peer_id), base, strict=True)
            ]
            cpu = [c1 - c0 for c0, c1 in zip(cpu0, cpu_of(nodes), strict=True)]
            out[f"burst{burst}"] = {
                "delivered": got,
                "lost": sum(burst - g for g in got),
                "rate": burst / took if done else None,
                "cpu_ms_per_msg": [1000 * c / burst for c in cpu],
            }

    cpu0 = cpu_of(nodes)
    await asyncio.sleep(idle_seconds)
    out["cpu_pct_idle"] = [
        100 * (c1 - c0) / idle_seconds for c0, c1 in zip(cpu0, cpu_of(nodes), strict=True)
    ]
    out["rss_mb"] = [rss_mb(pid) for pid in nodes.pids]
    return out


async def soak(root: Path, n: int, seconds: float) -> list[tuple[float, list[float]]]:
    nodes = await bzzz_nodes(root, n)
    samples: list[tuple[float, list[float]]] = []
    try:
        async with TestPeer() as driver:
            await driver.join(nodes.dial)
            started, sent, next_sample = time.monotonic(), 0, time.monotonic()
            while time.monotonic() - started < seconds:
                await driver.publish(COORDINATION_TOPIC, progress(driver.peer_id, sent))
                sent += 1
                if time.monotonic() >= next_sample:
                    samples.append((time.monotonic() - started, [rss_mb(p) for p in nodes.pids]))
                    next_sample += 10
                await asyncio.sleep(max(0.0, started + sent / SOAK_RATE - time.monotonic()))
    finally:
        await nodes.close()
    return samples


# ---- report -----------------------------------------------------------------------------------


def figures(run: dict[str, Any]) -> dict[str, float]:
    """One number per figure (the worst node where nodes differ), so runs can be medianed."""
    lat = run["latency"]
    out = {
        "start to READY, s": run["ready_s"],
        "latency p50, 1 hop (node a), ms": lat[0][0],
        "latency p50, 2 hops (max of the others), ms": max(p50 for p50, _ in lat[1:]),
        "latency p99 (max), ms": max(p99 for _, p99 in lat),
        f"CPU per node at {LATENCY_RATE} msg/s (max), %": max(run["cpu_pct_steady"]),
        "CPU per message per node, steady (max), ms": max(run["cpu_ms_per_msg_steady"]),
        "CPU idle per node (max), %": max(run["cpu_pct_idle"]),
        "RSS idle per node (max), MB": max(run["rss_mb"]),
    }
    for burst in BURSTS:
        b = run[f"burst{burst}"]
        out[f"burst {burst}: lost (all nodes)"] = float(b["lost"])
        out[f"burst {burst}: delivered rate, msg/s"] = b["rate"] or 0.0
        out[f"burst {burst}: CPU per message per node (max), ms"] = max(b["cpu_ms_per_msg"])
    return out


def report(runs: dict[str, list[dict[str, Any]]], n: int) -> None:
    med = {
        impl: {k: statistics.median(figures(r)[k] for r in rs) for k in figures(rs[0])}
        for impl, rs in runs.items()
        if rs
    }
    names = list(next(iter(med.values())))
    rows = [("figure", "bzzz", "js-libp2p", "bzzz / js")]
    for name in names:
        ours, ref = med.get("bzzz", {}).get(name), med.get("js", {}).get(name)
        ratio = f"{ours / ref:.2f}x" if ours is not None and ref else ""
        rows.append((name, _num(ours), _num(ref), ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"{n} nodes, medians of {max(len(v) for v in runs.values())} runs")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


async def main_async(args: argparse.Namespace) -> None:
    impls = ["bzzz", "js"] if args.only is None else [args.only]
    if "js" in impls and (why := unavailable()):
        print(f"no js reference: {why}")
        impls.remove("js")
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
    root = Path(tempfile.mkdtemp(prefix="bzzz-bench-"))
    try:
        for i in range(args.runs):
            order = impls if i % 2 == 0 else list(reversed(impls))
            for impl in order:
                nodes = (
                    await bzzz_nodes(root / f"run{i}", args.nodes)
                    if impl == "bzzz"
                    else await js_nodes(args.nodes)
                )
                try:
                    runs[impl].append(await measure(nodes, args.idle_seconds))
                finally:
                    await nodes.close()
                print(f"run {i + 1}/{args.runs} {impl}: done", flush=True)
        if any(runs.values()):
            report(runs, args.nodes)
        if args.soak_seconds:
            samples = await soak(root / "soak", args.nodes, args.soak_seconds)
            after_5 = [s for s in samples if s[0] >= 300] or samples
            spread = [
                max(s[1][i] for s in after_5) - min(s[1][i] for s in after_5)
                for i in range(args.nodes)
            ]
            first, last = samples[0][1], samples[-1][1]
            for at, rss in samples[::30]:  # one line per 5 minutes
                print(f"  {at / 60:5.1f} min: RSS " + ", ".join(f"{r:.1f}" for r in rss) + " MB")
            print(
                f"soak {args.soak_seconds:.0f} s at {SOAK_RATE} msg/s: RSS per node "
                + ", ".join(f"{a:.1f} -> {b:.1f} MB" for a, b in zip(first, last, strict=True))
                + "; after the first 5 minutes, within "
                + ", ".join(f"{s:.1f}" for s in spread)
                + " MB"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--soak-seconds", type=float, default=0)
    parser.add_argument("--only", choices=["bzzz", "js"], help="one implementation")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
