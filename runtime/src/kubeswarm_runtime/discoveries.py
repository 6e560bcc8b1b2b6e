"""Discoveries: findings an agent shares with the swarm, kept in a JetStream stream with retention."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import nats
from nats.js import api
from pydantic import BaseModel, ConfigDict, Field

from .connection import NatsConnection
from .metrics import RuntimeMetrics
from .names import SwarmNames
from .stores import read_forward
from .unreadable import UnreadableRecords


class Discovery(BaseModel):
    model_config = ConfigDict(frozen=True)

    agent: str
    type: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    content: Any
    confidence: float = Field(default=1.0, ge=0.0, le=1.0, description="How sure the agent is, 0 to 1.")
    tags: list[str] = Field(default_factory=list)
    at: float = Field(default_factory=time.time)
    seq: int | None = Field(default=None, description="Stream sequence (set when read back).")


@dataclass(frozen=True)
class DiscoveryPage:
    discoveries: list[Discovery]
    last_seq: int  # the last sequence read (unreadable records included): the next page starts after it
    more: bool


class DiscoveryService:
    def __init__(self, conn: NatsConnection, names: SwarmNames, metrics: RuntimeMetrics, agent: str) -> None:
        self.conn = conn
        self.names = names
        self.metrics = metrics
        self.agent = agent
        self.unreadable = UnreadableRecords("discovery", metrics.unreadable_records)

    async def share(
        self,
        type: str,
        content: Any,
        tags: list[str] | None = None,
        *,
        confidence: float = 1.0,
        agent: str | None = None,
        idempotency_key: str | None = None,
    ) -> Discovery:
        """Publish a discovery; ``agent`` (default: this service's) names the author, as a subject token.

        Shared again with the same ``idempotency_key`` within the stream's duplicate window, it is stored once
        (the returned seq is the first one's).
        """
        discovery = Discovery(agent=agent or self.agent, type=type, content=content, confidence=confidence, tags=tags or [])
        ack = await self.conn.js.publish(
            self.names.discovery(discovery.agent, type),
            discovery.model_dump_json().encode(),
            headers={"Nats-Msg-Id": idempotency_key} if idempotency_key else None,
        )
        self.metrics.messages.labels("out", "discovery").inc()
        return discovery.model_copy(update={"seq": ack.seq})

    def _filter(self, agent: str | None, type: str | None) -> str:
        return self.names.discovery(agent or "*", type or "*")

    async def list(self, *, agent: str | None = None, type: str | None = None, since_seq: int = 0, limit: int = 100) -> list[Discovery]:
        """Discoveries in stream order, from after ``since_seq``."""
        return (await self.page(agent=agent, type=type, since_seq=since_seq, limit=limit)).discoveries

    async def page(self, *, agent: str | None = None, type: str | None = None, since_seq: int = 0, limit: int = 100) -> DiscoveryPage:
        """At most ``limit`` discoveries after ``since_seq`` in stream order, pulled (no more is read per call)."""
        found = await read_forward(self.conn, self.names.discoveries_stream, self._filter(agent, type), after_seq=since_seq, limit=limit)
        discoveries = []
        for msg in found.messages:
            seq = msg.metadata.sequence.stream
            self.metrics.messages.labels("in", "discovery").inc()
            discovery = self.unreadable.parse(Discovery, str(seq), msg.data)
            if discovery is not None:
                discoveries.append(discovery.model_copy(update={"seq": seq}))
        last_seq = found.messages[-1].metadata.sequence.stream if found.messages else since_seq
        return DiscoveryPage(discoveries, last_seq, found.next is not None)

    async def follow(
        self, *, agent: str | None = None, type: str | None = None, since_seq: int = 0, stop_at_end: bool = False
    ) -> AsyncGenerator[Discovery, None]:
        """Discoveries after ``since_seq`` and then new ones as they come (an ordered, ephemeral consumer)."""
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if since_seq else api.DeliverPolicy.ALL,
            opt_start_seq=since_seq + 1 if since_seq else None,
        )
        sub = await self.conn.js.subscribe(
            self._filter(agent, type), stream=self.names.discoveries_stream, ordered_consumer=True, config=config
        )
        try:
            if stop_at_end:
                info = await sub.consumer_info()
                if info.num_pending == 0 and (info.delivered is None or not info.delivered.consumer_seq):
                    return  # nothing matches: do not wait for the idle timeout
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0 if stop_at_end else 3600)
                except (TimeoutError, nats.errors.TimeoutError):
                    if stop_at_end:
                        return
                    continue
                meta = msg.metadata
                self.metrics.messages.labels("in", "discovery").inc()
                discovery = self.unreadable.parse(Discovery, str(meta.sequence.stream), msg.data)
                if discovery is not None:
                    yield discovery.model_copy(update={"seq": meta.sequence.stream})
                if stop_at_end and meta.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
