"""The Prometheus endpoint: the node's status, as metrics, on a loopback port.

prometheus_client serves from its own thread; each scrape asks the event loop for a fresh
status snapshot, so no node state is read from two threads at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from prometheus_client import generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from bzzz.config import parse_host_port

SCRAPE_TIMEOUT = 5.0

Snapshot = Callable[[], Coroutine[Any, Any, dict[str, Any]]]


class NodeCollector:
    def __init__(self, loop: asyncio.AbstractEventLoop, snapshot: Snapshot) -> None:
        self._loop = loop
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        future = asyncio.run_coroutine_threadsafe(self._snapshot(), self._loop)
        status = future.result(SCRAPE_TIMEOUT)
        yield from metric_families(status)


def metric_families(status: dict[str, Any]) -> Iterator[Metric]:
    """Turn a status snapshot (as `bzzz status --json` shows it) into metric families."""
    info = GaugeMetricFamily("bzzz_build_info", "Version of this node", labels=["version"])
    info.add_metric([status["version"]], 1)
    yield info
    yield GaugeMetricFamily("bzzz_uptime_seconds", "Seconds since start", value=status["uptime_s"])

    peers = GaugeMetricFamily("bzzz_peers", "Peers in the table by state", labels=["state"])
    counts = status["peer_counts"]
    for state in ("connected", "stale", "known"):
        peers.add_metric([state], counts[state])
    yield peers
    yield CounterMetricFamily(
        "bzzz_peers_evicted",
        "Peer table rows forgotten to stay within p2p.max_peers",
        value=status["peer_counts"]["evicted"],
    )

    stats = status["messages"]
    by_topic = CounterMetricFamily(
        "bzzz_messages", "Pubsub messages by topic and verdict", labels=["topic", "verdict"]
    )
    for topic, counts in stats["topics"].items():
        for verdict, value in counts.items():
            by_topic.add_metric([topic, verdict], value)
    yield by_topic

    rejected = CounterMetricFamily(
        "bzzz_messages_rejected", "Messages refused at the door, by reason", labels=["reason"]
    )
    for reason, value in stats["rejected"].items():
        rejected.add_metric([reason], value)
    yield rejected
    dropped = CounterMetricFamily(
        "bzzz_messages_dropped",
        "Messages dropped: inbound (admitted, not handled), outbound (forwarded to a slow peer, "
        "not sent), publish (our own, not sent within publish_wait)",
        labels=["direction"],
    )
    for direction, value in stats["dropped_by"].items():
        dropped.add_metric([direction], value)
    yield dropped
    yield CounterMetricFamily(
        "bzzz_peers_refused",
        "Connections closed because the peer is not in p2p.allow_peers",
        value=stats["peers_refused"],
    )
    github = (status.get("tasks") or {}).get("github") or {}
    yield CounterMetricFamily(
        "bzzz_github_forged_markers",
        "Claim markers on GitHub whose signature is missing or wrong (ignored)",
        value=github.get("forged_markers", 0),
    )
    yield CounterMetricFamily(
        "bzzz_stream_errors",
        "Peer streams reset because they broke a protocol handler",
        value=stats["stream_errors"],
    )
    delay = GaugeMetricFamily(
        "bzzz_message_delay_seconds",
        "Receive time minus sender timestamp over the latest admitted messages",
        labels=["quantile"],
    )
    for quantile in ("p50", "p99"):
        delay.add_metric([quantile.replace("p", "0.")], stats["delay_ms"][quantile] / 1000)
    yield delay
    yield GaugeMetricFamily(
        "bzzz_tasks_held", "Tasks this node holds", value=status["tasks"]["held"]
    )
    yield GaugeMetricFamily(
        "bzzz_auditlog_head",
        "Sequence number of this node's newest entry",
        value=status["auditlog"]["head"]["seq"],
    )
    refused = CounterMetricFamily(
        "bzzz_auditlog_refused", "Replicated entries refused, by reason", labels=["reason"]
    )
    for reason, value in status["auditlog"]["refused"].items():
        refused.add_metric([reason], value)
    yield refused
    yield GaugeMetricFamily(
        "bzzz_auditlog_forks", "Forked histories detected", value=len(status["auditlog"]["forks"])
    )
    yield CounterMetricFamily(
        "bzzz_antennae_throttled",
        "Antennae messages dropped by the per-peer rate limit",
        value=status["antennae"].get("throttled", 0),
    )
    yield CounterMetricFamily(
        "bzzz_broadcasts_sent",
        "Capability and availability broadcasts sent",
        value=status["broadcasts_sent"],
    )


class MetricsServer:
    def __init__(self, listen: str, snapshot: Snapshot) -> None:
        self._listen = listen
        self._snapshot = snapshot
        self._server: Any = None

    def start(self) -> None:
        """Serve /metrics; an empty `listen` disables it. Raises OSError if the port is taken."""
        if not self._listen:
            return
        host, port = parse_host_port(self._listen)
        registry = CollectorRegistry()
        registry.register(NodeCollector(asyncio.get_running_loop(), self._snapshot))
        try:
            self._server, _thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot serve metrics on {self._listen}: {exc.strerror}"
            ) from None

    @property
    def address(self) -> str:
        if self._server is None:
            return ""
        host, port = self._server.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Families:
    """A collector of one status snapshot's families (a registry per scrape)."""

    def __init__(self, status: dict[str, Any]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        return metric_families(self._status)


def exposition(status: dict[str, Any]) -> bytes:
    """The Prometheus text of a status snapshot: what /metrics serves, on either listener."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(status))
    return generate_latest(registry)
