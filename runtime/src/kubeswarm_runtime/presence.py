"""Presence: announce, heartbeat, and the agent registry (a KV bucket whose entries expire)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import nats
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from .config import RuntimeConfig
from .connection import NatsConnection, publish_patiently
from .metrics import RuntimeMetrics
from .names import SwarmNames
from .stores import read_bucket
from .unreadable import UnreadableRecords

log = logging.getLogger(__name__)

# An agent silent for this many heartbeats is gone.
MISSED_HEARTBEATS = 3


class AgentInfo(BaseModel):
    """One replica in the registry (key: its id)."""

    model_config = ConfigDict(frozen=True)

    id: str
    agent: str
    role: str
    capabilities: list[str]
    version: str
    load: int
    concurrency: int
    heartbeat_seconds: float
    endpoint: str | None = None
    started_at: float
    last_seen: float
    state: str = "up"  # "leaving" in the last announcement of a stopping replica

    @property
    def alive(self) -> bool:
        return self.state == "up" and time.time() - self.last_seen <= MISSED_HEARTBEATS * self.heartbeat_seconds


class AgentDirectory:
    """Read the registry (any process connected to the swarm)."""

    def __init__(self, conn: NatsConnection, names: SwarmNames, bucket: KeyValue) -> None:
        self.conn = conn
        self.names = names
        self.bucket = bucket
        self.unreadable = UnreadableRecords("agent", conn.metrics.unreadable_records)

    async def list(self, *, capability: str | None = None) -> list[AgentInfo]:
        entries = await read_bucket(self.conn, self.names.agents_bucket, ">")
        agents = (self.unreadable.parse(AgentInfo, key, value) for key, value in entries.items())
        # The bucket's TTLs remove silent agents; the age check also covers a bucket made without them.
        return sorted(
            (a for a in agents if a is not None and a.alive and (capability is None or capability in a.capabilities)), key=lambda a: a.id
        )

    async def get(self, agent_id: str) -> AgentInfo | None:
        try:
            entry = await self.bucket.get(agent_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        info = AgentInfo.model_validate_json(entry.value)
        return info if info.alive else None


class Presence:
    """This replica's presence: announce on start, heartbeat, leave on stop."""

    def __init__(
        self,
        conn: NatsConnection,
        names: SwarmNames,
        bucket: KeyValue,
        config: RuntimeConfig,
        metrics: RuntimeMetrics,
        load: Callable[[], int],
        endpoint: str | None = None,
    ) -> None:
        self.conn = conn
        self.names = names
        self.bucket = bucket
        self.config = config
        self.metrics = metrics
        self.load = load
        self.endpoint = endpoint
        self.started_at = time.time()
        self._ttl_supported = True
        self._template = AgentInfo.model_construct(
            id=config.replica_id,
            agent=config.agent,
            role=config.role,
            capabilities=list(config.capabilities),
            version=config.version,
            load=0,
            concurrency=config.concurrency,
            heartbeat_seconds=config.heartbeat_seconds,
            started_at=self.started_at,
            last_seen=self.started_at,
        )
        self._template_data = self._template.model_dump(mode="json")

    def info(self, state: str = "up") -> AgentInfo:
        # On every heartbeat and get_agent_info call: the validated config's part copied from one template
        # (a copy costs about half a model_construct), not validated again.
        return self._template.model_copy(
            update={"load": self.load(), "endpoint": self.endpoint, "started_at": self.started_at, "last_seen": time.time(), "state": state}
        )

    def info_data(self) -> dict[str, Any]:
        """``info().model_dump(mode="json")`` without a model: get_agent_info's answer, built on every call."""
        return {
            **self._template_data,
            "load": self.load(),
            "endpoint": self.endpoint,
            "started_at": self.started_at,
            "last_seen": time.time(),
            "state": "up",
        }

    async def announce(self) -> None:
        info = self.info()
        await self._register(info)
        await self.conn.nc.publish(self.names.announce, info.model_dump_json().encode())
        self.metrics.messages.labels("out", "announce").inc()

    async def heartbeat(self) -> None:
        info = self.info()
        await self._register(info)
        await self.conn.nc.publish(self.names.heartbeat(info.id), info.model_dump_json().encode())
        self.metrics.messages.labels("out", "heartbeat").inc()

    async def _register(self, info: AgentInfo) -> None:
        subject = f"$KV.{self.names.agents_bucket}.{info.id}"
        data = info.model_dump_json().encode()
        ttl = MISSED_HEARTBEATS * self.config.heartbeat_seconds
        if self._ttl_supported:
            try:
                await self._publish(subject, data, msg_ttl=max(ttl, 1.0))
                return
            except nats.js.errors.BadRequestError as exc:
                # A bucket created without per-message TTLs (by an older Swarm): readers check last_seen instead.
                log.warning("agents bucket rejects per-message TTL (%s); relying on last_seen", exc)
                self._ttl_supported = False
        await self._publish(subject, data)

    async def _publish(self, subject: str, data: bytes, msg_ttl: float | None = None) -> None:
        fail_fast = (nats.js.errors.BadRequestError,)  # TTLs refused: fall back at once
        if not await publish_patiently(self.conn.js, subject, data, msg_ttl=msg_ttl, fail_fast=fail_fast):
            raise TimeoutError(f"the agents bucket did not confirm {subject} in time")

    async def leave(self) -> None:
        with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
            await self.conn.nc.publish(self.names.announce, self.info(state="leaving").model_dump_json().encode())
            await self.bucket.delete(self.config.replica_id)
