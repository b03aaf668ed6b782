"""Hostile-load benchmark: what a flood of generated messages and a crowd of identities do to a
daemon, and whether its memory comes back.

Run from the repository root:  python -m bench.fuzz [--messages 10000] [--crowd 2000]

Two meshed daemons (a, b); a hostile peer attached to a only. It publishes `--messages`
messages drawn by hypothesis (valid ones of every type, ones with a field just out of bounds,
garbage), while `status` is asked every 100 messages; then `--crowd` signing identities each
announce a log head through it; then the daemons idle for `--settle` seconds. Printed: sent,
verdicts by reason, crashes, status latency, threads, and RSS at idle, after the flood, after the
crowd and after settling, with the growth against the idle reference of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

from bzzz import control
from bzzz.messages import COORDINATION_TOPIC, MessageType
from bzzz.p2p import Identity
from tests.integration.harness import Cluster, Daemon, wait_until
from tests.integration.test_fuzz import counted, published
from tests.integration.testpeer import PeerThread, TestPeer
from tests.strategies import envelope


def proc(pid: int) -> tuple[int, float]:
    """Threads, and RSS in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024


def status_latency(daemon: Daemon) -> float:
    started = time.monotonic()
    control.request(daemon.socket_path, "status", timeout=10)
    return time.monotonic() - started


async def beat(peer: TestPeer) -> None:
    data = {"node_id": peer.peer_id, "agent_id": "fuzzer"}
    while True:
        raw = envelope(MessageType.CAPABILITY_BROADCAST, data, peer.peer_id)
        await peer.publish(COORDINATION_TOPIC, raw)
        await asyncio.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--crowd", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--keep-logs", type=Path, default=Path("bench-fuzz-logs"))
    args = parser.parse_args()

    with Cluster.in_temporary_directory() as cluster:
        a, b = cluster.full_mesh(["a", "b"])
        peer = TestPeer()
        thread = PeerThread()
        try:
            thread.run(peer.__aenter__())
            thread.run(peer.join(a.address))
            # The peer beats like a node: once it has announced itself (the flood holds valid
            # capability broadcasts), a silent peer is cut off as unresponsive.
            beating = asyncio.run_coroutine_threadsafe(beat(peer), thread.loop)
            time.sleep(3)
            rows: list[tuple[str, str]] = []
            idle_threads, idle_rss = proc(a.pid)
            rows.append(("RSS idle (reference)", f"{idle_rss:.1f} MB, {idle_threads} threads"))

            sent, slowest = 0, 0.0
            started = time.monotonic()

            @settings(
                max_examples=args.messages,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(published(peer.peer_id))
            def flood(message: tuple[str, bytes]) -> None:
                nonlocal sent, slowest
                topic, raw = message
                thread.run(peer.publish(topic, raw))
                sent += 1
                if sent % 100 == 0:
                    slowest = max(slowest, status_latency(a))

            flood()
            wait_until(lambda: counted(a) >= sent, 120, "a verdict on every message")
            elapsed = time.monotonic() - started
            messages = a.status()["messages"]
            accepted = sum(t["accepted"] for t in messages["topics"].values())
            ignored = sum(t["ignored"] for t in messages["topics"].values())
            rejected = {k: v for k, v in messages["rejected"].items() if v}
            _, flood_rss = proc(a.pid)
            rows += [
                ("messages sent", f"{sent} in {elapsed:.1f} s ({sent / elapsed:.0f}/s)"),
                (
                    "verdicts (with b's own broadcasts)",
                    f"{counted(a)} (accepted {accepted}, ignored {ignored})",
                ),
                ("rejected by reason", json.dumps(rejected)),
                (
                    "handler errors, stream errors",
                    f"{messages['handler_errors']}, {messages['stream_errors']}",
                ),
                ("status latency max (flood)", f"{slowest * 1000:.0f} ms"),
                ("RSS after the flood", f"{flood_rss:.1f} MB ({flood_rss - idle_rss:+.1f})"),
            ]

            crowd = [Identity.generate() for _ in range(args.crowd)]

            async def announce(members: list[tuple[int, Identity]]) -> None:
                for n, member in members:
                    head = {"seq": n + 1, "hash": f"{n:064x}", "sig": ""}
                    data = {"node_id": member.peer_id, "agent_id": f"m{n}", "log_head": head}
                    raw = envelope(MessageType.CAPABILITY_BROADCAST, data, member.peer_id)
                    frame = peer.frame(COORDINATION_TOPIC, raw, author=member)
                    await peer.send_frame(frame)

            # In batches of 200: the relay's own send queue (1,024) must not drop any.
            members = list(enumerate(crowd))
            for start in range(0, len(members), 200):
                batch = members[start : start + 200]
                expected = counted(a) + len(batch)
                thread.run(announce(batch), timeout=120)
                wait_until(lambda e=expected: counted(a) >= e, 60, "the crowd heard")
            crowd_threads, crowd_rss = proc(a.pid)
            status = a.status()
            rows += [
                (f"crowd of {args.crowd} identities: threads", f"{crowd_threads}"),
                ("RSS after the crowd", f"{crowd_rss:.1f} MB ({crowd_rss - idle_rss:+.1f})"),
                (
                    "peer rows kept / evicted",
                    f"{status['peer_counts']['known']} / {status['peer_counts']['evicted']}",
                ),
                ("replicas", str(status["auditlog"]["replicas_total"])),
                ("status answer size", f"{len(json.dumps(status)) / 1024:.1f} KiB"),
                ("status latency (after)", f"{status_latency(a) * 1000:.0f} ms"),
            ]
            time.sleep(args.settle)
            settled_threads, settled_rss = proc(a.pid)
            crashes = sum(d.process.poll() is not None for d in (a, b))
            tracebacks = sum(d.log().count("Traceback") for d in (a, b))
            for d in (a, b):
                at = d.log().find("Traceback")
                if at >= 0:
                    print(f"first traceback of {d.name}:\n{d.log()[max(0, at - 300) : at + 2500]}")
                    print(f"(whole log kept as {args.keep_logs / d.name}.log)")
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    (args.keep_logs / f"{d.name}.log").write_text(d.log())
            rows += [
                (
                    f"RSS after {args.settle:.0f} s idle",
                    f"{settled_rss:.1f} MB ({settled_rss - idle_rss:+.1f} against idle)",
                ),
                ("threads after", str(settled_threads)),
                ("crashes (a, b)", str(crashes)),
                ("tracebacks in the logs", str(tracebacks)),
                (
                    "b (not attacked) rejected",
                    json.dumps({k: v for k, v in b.status()["messages"]["rejected"].items() if v}),
                ),
            ]
        finally:
            try:
                beating.cancel()
                thread.run(peer.__aexit__(None, None, None))
            finally:
                thread.close()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
