"""Web view benchmark: open pages (server-sent events clients) on one node during a burst.

Run from the repository root:  python -m bench.web [--pages 20] [--rate 300] [--seconds 10]

One `bzzz run` daemon with its web view, and a driver in this process (our `Host`) that publishes
task_progress messages to it at `--rate` for `--seconds`. Each run measures that burst twice, in
an order that alternates between runs: with no page open, and with `--pages` clients reading
/api/events as a browser's EventSource does (one GET, then a stream of events). Printed, medians
of `--runs`: the daemon's CPU (% and ms per message) and its largest RSS during the burst, with
and without the pages, and the delay from the sender's timestamp to a page's receipt of the
event (p50 and p99 over every page's events; same host, same clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.pubsub import cpu_seconds, percentile, progress, rss_mb
from bzzz.messages import COORDINATION_TOPIC
from tests.integration.harness import Cluster, Daemon
from tests.integration.testpeer import TestPeer


class Page:
    """One open page: reads /api/events and notes each task_progress event's delay."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self._client = client
        self._url = url
        self.delays_ms: list[float] = []
        self.resyncs = 0
        self.opened = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async with self._client.stream("GET", self._url + "/api/events") as answer:
            answer.raise_for_status()
            async for line in answer.aiter_lines():
                if not line.startswith("data:"):
                    continue
                received = time.time()
                event = json.loads(line[5:])
                self.opened.set()
                if event["kind"] == "resync":
                    self.resyncs += 1
                elif event["kind"] == "message" and event["data"].get("type") == "task_progress":
                    sent = datetime.fromisoformat(event["data"]["sent_at"]).timestamp()
                    self.delays_ms.append(1000 * (received - sent))


def open_pages(url: str, count: int, opened: Any, scoring: Any, stop: Any, out: Any) -> None:
    """In a process of its own (as a browser is): `count` pages; `opened` is set once each has
    had an event, delays count from `scoring` on, and go to `out` at `stop`."""

    async def main() -> None:
        limits = httpx.Limits(max_connections=count + 1)
        async with httpx.AsyncClient(timeout=None, limits=limits) as client:
            pages = [Page(client, url) for _ in range(count)]
            await asyncio.gather(*(p.opened.wait() for p in pages))
            opened.set()
            await asyncio.to_thread(scoring.wait)
            for page in pages:
                page.delays_ms.clear()
            await asyncio.to_thread(stop.wait)
            out.send(([p.delays_ms for p in pages], sum(p.resyncs for p in pages)))
            for page in pages:
                page.task.cancel()
            await asyncio.gather(*(p.task for p in pages), return_exceptions=True)

    asyncio.run(main())


async def burst(daemon: Daemon, driver: TestPeer, rate: float, seconds: float) -> dict[str, float]:
    """Publish at `rate` for `seconds`; the daemon's CPU and largest RSS meanwhile."""
    count = int(rate * seconds)
    cpu0, started, rss = cpu_seconds(daemon.pid), time.monotonic(), 0.0
    next_sample = started
    for n in range(count):
        await driver.publish(COORDINATION_TOPIC, progress(driver.peer_id, n))
        if time.monotonic() >= next_sample:
            rss, next_sample = max(rss, rss_mb(daemon.pid)), next_sample + 0.25
        await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.monotonic()))
    await asyncio.sleep(0.5)  # the last messages through the node
    took, cpu = time.monotonic() - started, cpu_seconds(daemon.pid) - cpu0
    return {
        "cpu_pct": 100 * cpu / took,
        "cpu_ms_per_msg": 1000 * cpu / count,
        "rss_mb": max(rss, rss_mb(daemon.pid)),
        "sent": count,
    }


async def one_run(root: Path, args: argparse.Namespace, pages_first: bool) -> dict[str, Any]:
    cluster = Cluster(root)
    try:
        daemon = cluster.add("solo", http=True, interval=30)
        daemon.start()
        url = await asyncio.to_thread(daemon.wait_web)
        async with TestPeer() as driver:
            await driver.join(daemon.address)
            await burst(daemon, driver, 50, 1)  # warm-up: the driver is in the mesh
            out: dict[str, Any] = {}
            for with_pages in (True, False) if pages_first else (False, True):
                if not with_pages:
                    out["without"] = await burst(daemon, driver, args.rate, args.seconds)
                    continue
                spawn = multiprocessing.get_context("spawn")
                opened, scoring, stop = spawn.Event(), spawn.Event(), spawn.Event()
                results, into = spawn.Pipe(duplex=False)
                reader = spawn.Process(
                    target=open_pages, args=(url, args.pages, opened, scoring, stop, into)
                )
                reader.start()
                try:
                    # Every page is open once it has an event: publish until they do.
                    while not opened.is_set():
                        await driver.publish(COORDINATION_TOPIC, progress(driver.peer_id, 0))
                        await asyncio.sleep(0.1)
                    scoring.set()
                    await asyncio.sleep(0.2)
                    out_with = await burst(daemon, driver, args.rate, args.seconds)
                    await asyncio.sleep(1.0)  # the last events to the pages
                    stop.set()
                    per_page, resyncs = await asyncio.to_thread(results.recv)
                finally:
                    stop.set()
                    await asyncio.to_thread(reader.join, 10)
                    if reader.is_alive():
                        reader.kill()
                delays = [d for page in per_page for d in page]
                out_with["delay_p50_ms"] = percentile(delays, 0.5)
                out_with["delay_p99_ms"] = percentile(delays, 0.99)
                out_with["events_per_page"] = min(len(page) for page in per_page)
                out_with["resyncs"] = resyncs
                out["with"] = out_with
            return out
    finally:
        cluster.close()


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    def med(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in runs)

    print(
        f"1 node, {args.rate:g} msg/s for {args.seconds:g} s, "
        f"{args.pages} pages; medians of {len(runs)} runs"
    )
    rows = [("figure", "no page", f"{args.pages} pages", "ratio")]
    for key, name in (
        ("cpu_pct", "daemon CPU, %"),
        ("cpu_ms_per_msg", "daemon CPU per message, ms"),
        ("rss_mb", "daemon RSS (max during the burst), MB"),
    ):
        without, with_ = med("without", key), med("with", key)
        rows.append((name, f"{without:.2f}", f"{with_:.2f}", f"{with_ / without:.2f}x"))
    for key, name in (
        ("delay_p50_ms", "delay publish -> page, p50, ms"),
        ("delay_p99_ms", "delay publish -> page, p99, ms"),
        ("events_per_page", "message events per page (fewest)"),
        ("resyncs", "resyncs (all pages)"),
    ):
        rows.append((name, "", f"{med('with', key):.1f}", ""))
    rows.append(("messages published per burst", "", f"{runs[0]['with']['sent']}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


async def main_async(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="bzzz-bench-web-"))
    runs = []
    try:
        for i in range(args.runs):
            runs.append(await one_run(root / f"run{i}", args, pages_first=i % 2 == 1))
            print(f"run {i + 1}/{args.runs}: done", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(runs, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
