"""Discoveries for many local subscribers from one NATS consumer per process.

Each subscriber has a filter and a bounded queue; a subscriber that falls
behind is marked overflowed (its stream ends, and the client resumes from
its Last-Event-ID without losing anything: the stream keeps every event).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from ..discoveries import Discovery
from ..runtime import AgentRuntime

SUBSCRIBER_QUEUE = 256


@dataclass(frozen=True)
class DiscoveryFilter:
    agent: str | None = None
    type: str | None = None
    min_confidence: float = 0.0

    def matches(self, discovery: Discovery) -> bool:
        return (
            (self.agent is None or discovery.agent == self.agent)
            and (self.type is None or discovery.type == self.type)
            and discovery.confidence >= self.min_confidence
        )


@dataclass(frozen=True)
class DiscoveryEvent:
    seq: int
    discovery: Discovery
    json: bytes  # encoded once, shared by every subscriber


@dataclass(eq=False)
class Subscriber:
    filter: DiscoveryFilter
    queue: asyncio.Queue[DiscoveryEvent] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))
    overflowed: bool = False


def discovery_event(discovery: Discovery) -> DiscoveryEvent:
    assert discovery.seq is not None
    return DiscoveryEvent(discovery.seq, discovery, discovery.model_dump_json().encode())


class DiscoveryFanout:
    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self.subscribers: set[Subscriber] = set()
        self._overflows = runtime.metrics.buffer_dropped.labels("discovery_stream")
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()

    async def subscribe(self, filter: DiscoveryFilter) -> Subscriber:
        """A subscriber receiving every discovery published from now on that matches ``filter``."""
        async with self._lock:
            if self._sub is None:
                names = self.runtime.swarm.names
                self._sub = await self.runtime.conn.js.subscribe(
                    names.all_discoveries,
                    stream=names.discoveries_stream,
                    ordered_consumer=True,
                    config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW),
                    cb=self._on_message,
                )
        subscriber = Subscriber(filter)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def _on_message(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        parsed = self.runtime.swarm.discoveries.unreadable.parse(Discovery, str(seq), msg.data)
        if parsed is None:
            return
        discovery = parsed.model_copy(update={"seq": seq})
        event = discovery_event(discovery)
        for subscriber in self.subscribers:
            if not subscriber.overflowed and subscriber.filter.matches(discovery):
                try:
                    subscriber.queue.put_nowait(event)
                except asyncio.QueueFull:
                    subscriber.overflowed = True
                    self._overflows.inc()

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
