"""Typed messages in and out of the gossipsub topics, with counters for every verdict.

The bus is the door of go-libp2p-pubsub's validation pipeline: its `admit` runs as the topic
validator inside libp2p, so a refused message is neither delivered nor forwarded, and counted by
reason. Handlers only ever see `Message` objects that passed.

Authority rules (who may say what: only a task's holder reports on it, only a conversation's
proposer decides it) are checked as each message is dispatched, before any handler, against
the state the owners hold at that moment; a refusal is counted as `not_authorised`. They are not
part of the validator, because that state differs from node to node (one may not have heard the
holder yet), and refusing to forward on a local view could cut honest messages off the mesh.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from bzzz import messages
from bzzz.messages import Data, Message, MessageType, Reason, Rejection
from bzzz.p2p import Host, Incoming

log = structlog.get_logger(__name__)

D = TypeVar("D", bound=Data)
Handler = Callable[[Message[Any]], None]
Rule = Callable[[Message[Any]], str | None]
"""An authority rule: why the sender may not say this, or None."""

# Delivery delays (receive time minus the sender's timestamp) of the latest admitted messages.
DELAY_WINDOW = 1024


class MessageBus:
    def __init__(
        self,
        own_id: str,
        max_skew: float,
        allow_peers: Collection[str] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.own_id = own_id
        self._max_skew = max_skew
        self._allow = frozenset(allow_peers)
        self._clock = clock
        self._host: Host | None = None
        self._handlers: dict[MessageType | None, list[Handler]] = defaultdict(list)  # None: all
        self._rules: dict[MessageType, list[Rule]] = defaultdict(list)
        self._topic_counts: dict[str, Counter[str]] = {t: Counter() for t in messages.TOPICS}
        self._reasons: Counter[str] = Counter()
        self._handler_errors = 0
        self._delays: deque[float] = deque(maxlen=DELAY_WINDOW)

    def admitters(self) -> dict[str, Callable[[Incoming], Message | None]]:
        """The validator of each topic, for the host to install."""
        return {topic: self.admit for topic in messages.TOPICS}

    def attach(self, host: Host) -> None:
        self._host = host

    # ---- inbound ---------------------------------------------------------------------------

    def admit(self, incoming: Incoming) -> Message | None:
        """Decode and check one message; count the verdict. Never raises."""
        try:
            now = self._clock()
            if self._allow and incoming.signer not in self._allow:
                verdict: Message | Rejection = Rejection(Reason.NOT_ALLOWED, incoming.signer)
            else:
                verdict = messages.decode(
                    incoming.data,
                    topic=incoming.topic,
                    signer=incoming.signer,
                    now=now,
                    max_skew=self._max_skew,
                )
        except Exception as exc:  # a bug in decoding must not break the receive path
            log.error("message_decode_failed", error=repr(exc), signer=incoming.signer)
            verdict = Rejection(Reason.BAD_DATA, repr(exc))
        counts = self._topic_counts[incoming.topic]
        if isinstance(verdict, Rejection):
            # Unknown types are a newer peer talking, not an attack: "ignored", not "rejected".
            counts["ignored" if verdict.reason is Reason.UNKNOWN_TYPE else "rejected"] += 1
            self._reasons[verdict.reason.value] += 1
            log.debug(
                "message_refused",
                reason=verdict.reason.value,
                detail=verdict.detail,
                signer=incoming.signer,
                forwarder=incoming.forwarder,
                topic=incoming.topic,
            )
            return None
        counts["accepted"] += 1
        self._delays.append((now - verdict.timestamp).total_seconds())
        return replace(verdict, seqno=incoming.seqno)

    def on(self, kind: type[D], handler: Callable[[Message[D]], None]) -> None:
        """Call `handler` with each admitted message whose data is a `kind` (e.g. TaskClaim)."""
        self._handlers[messages.type_for(kind)].append(handler)

    def on_every(self, handler: Callable[[Message], None]) -> None:
        """Call `handler` with every admitted message, before the handlers of its kind."""
        self._handlers[None].append(handler)

    def guard(self, kind: type[D], rule: Callable[[Message[D]], str | None]) -> None:
        """Check `rule` for each message of `kind` before any handler sees it."""
        self._rules[messages.type_for(kind)].append(rule)

    def _refusal(self, msg: Message) -> str | None:
        for rule in self._rules.get(msg.type, ()):
            try:
                refusal = rule(msg)
            except Exception:
                self._handler_errors += 1
                log.exception("message_rule_failed", type=msg.type.value)
                return "the rule failed"
            if refusal is not None:
                return refusal
        return None

    async def run(self) -> None:
        """Dispatch admitted messages to handlers until cancelled."""
        assert self._host is not None
        async with asyncio.TaskGroup() as group:
            for topic in messages.TOPICS:
                group.create_task(self._dispatch(self._host, topic))

    async def _dispatch(self, host: Host, topic: str) -> None:
        async for item in host.messages(topic):
            assert isinstance(item, Message)
            refusal = self._refusal(item)
            if refusal is not None:
                counts = self._topic_counts[topic]
                counts["accepted"] -= 1
                counts["rejected"] += 1
                self._reasons[Reason.NOT_AUTHORISED.value] += 1
                log.debug(
                    "message_refused",
                    reason=Reason.NOT_AUTHORISED.value,
                    detail=refusal,
                    signer=item.sender,
                    type=item.type.value,
                )
                continue
            for handler in (*self._handlers[None], *self._handlers[item.type]):
                try:
                    handler(item)
                except Exception:
                    self._handler_errors += 1
                    log.exception("message_handler_failed", type=item.type.value)

    # ---- outbound --------------------------------------------------------------------------

    async def publish(self, data: Data, hop_count: int = 0) -> None:
        assert self._host is not None
        msg_type = messages.type_of(data)
        topic = messages.topic_of(msg_type)
        await self._host.publish(
            topic, messages.encode(data, sender=self.own_id, hop_count=hop_count)
        )
        self._topic_counts[topic]["published"] += 1

    # ---- counters --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters by topic and by refusal reason, including drops made inside the host."""
        reasons = Counter(self._reasons)
        host_counts = Counter(self._host.counters() if self._host is not None else {})
        reasons[Reason.BAD_SIGNATURE.value] += host_counts["bad_signature"]
        reasons[Reason.BAD_FRAME.value] += host_counts["bad_frame"]
        dropped = {
            "inbound": host_counts["inbound_overflow"],
            "outbound": host_counts["outbound_dropped"],  # forwarded, to a slow peer
            "publish": host_counts["publish_stalled"],  # our own, never sent
        }
        return {
            "topics": {
                topic: {
                    key: counts[key] for key in ("accepted", "rejected", "ignored", "published")
                }
                for topic, counts in self._topic_counts.items()
            },
            "rejected": {reason.value: reasons[reason.value] for reason in Reason},
            "dropped": sum(dropped.values()),
            "dropped_by": dropped,
            "handler_errors": self._handler_errors + host_counts["handler_errors"],
            "stream_errors": host_counts["stream_errors"],
            "peers_refused": host_counts["peers_refused"],
            "delay_ms": self._delay_percentiles(),
        }

    def _delay_percentiles(self) -> dict[str, float | int]:
        """p50/p99 of recent delivery delays: network lag plus clock skew between peers."""
        delays = sorted(self._delays)
        if not delays:
            return {"window": 0, "p50": 0.0, "p99": 0.0}

        def at(q: float) -> float:
            return round(delays[min(len(delays) - 1, int(q * len(delays)))] * 1000, 3)

        return {"window": len(delays), "p50": at(0.5), "p99": at(0.99)}
