"""The node's own event stream: what happened, as it happens, for whoever listens now.

Publishing is synchronous, never blocks and never raises: it is called from the bus's hot path.
Nothing is kept once published but the subscribers' queues, each bounded; a subscriber that falls
behind loses its queue and gets one `resync` event instead (it then reads everything afresh), so
a slow page costs at most `QUEUE` events of memory, whatever the traffic.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)

QUEUE = 256  # events waiting per subscriber
MAX_SUBSCRIBERS = 64
RESYNC = "resync"


class Busy(RuntimeError):
    """Every subscriber slot is taken."""


@dataclass(frozen=True)
class Event:
    id: int  # increases with every event published, subscribers or not
    kind: str
    at: float  # wall clock when published: pages measure their delay with it
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "at": self.at, "data": self.data}

    @functools.cached_property
    def sse(self) -> bytes:
        """The event as server-sent events lines (one `data:` line: JSON has no newlines),
        encoded once however many pages it goes to."""
        body = json.dumps(self.as_json(), separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.kind}\ndata: {body}\n\n".encode()


class Subscription:
    """One listener's bounded queue. `get` waits for the next event (None once closed)."""

    def __init__(self, hub: EventHub, size: int) -> None:
        self._hub = hub
        self._size = size
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self.closed = False
        self.resyncs = 0

    def put(self, event: Event) -> None:
        if len(self._queue) >= self._size:
            self._queue.clear()
            self.resyncs += 1
            event = Event(event.id, RESYNC, event.at, {"dropped": self._size})
        self._queue.append(event)
        self._ready.set()

    async def get(self) -> Event | None:
        while not self._queue and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft() if self._queue else None

    def take_all(self) -> list[Event]:
        """What else is queued now, at once (written together)."""
        events = list(self._queue)
        self._queue.clear()
        return events

    def pending(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        """Stop listening: `get` returns None once the queue is empty."""
        self.closed = True
        self._hub._subscribers.discard(self)
        self._ready.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    def __init__(self, queue: int = QUEUE, max_subscribers: int = MAX_SUBSCRIBERS) -> None:
        self._queue = queue
        self._max = max_subscribers
        self._subscribers: set[Subscription] = set()
        self._ids = itertools.count(1)
        self.published = 0
        self._failures = 0

    @property
    def listening(self) -> bool:
        """Anyone subscribed: callers may skip building an event nobody would read."""
        return bool(self._subscribers)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        """A new subscription (use it as a context manager); Busy when all slots are taken."""
        if len(self._subscribers) >= self._max:
            raise Busy(f"{self._max} subscribers already")
        subscription = Subscription(self, self._queue)
        self._subscribers.add(subscription)
        return subscription

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Hand an event to every subscriber. Never blocks, never raises."""
        try:
            event = Event(next(self._ids), kind, time.time(), data)
            self.published += 1
            for subscription in self._subscribers:
                subscription.put(event)
        except Exception:  # a bug here must not break the caller's path (the bus)
            self._failures += 1
            if self._failures % 1000 == 1:
                log.exception("web_event_failed", kind=kind)
