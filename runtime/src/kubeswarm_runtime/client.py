"""A connection to a swarm and its services: what an agent, the CLI and the MCP layer talk through."""

from __future__ import annotations

from dataclasses import dataclass

from .capabilities import CapabilityService
from .config import NatsConfig, StreamsConfig
from .connection import NatsConnection
from .discoveries import DiscoveryService
from .messages import MessageService
from .metrics import RuntimeMetrics
from .names import SwarmNames
from .presence import AgentDirectory
from .stores import SwarmStores, ensure_swarm_stores
from .tasks import DeadLetterService, TaskService


@dataclass
class SwarmClient:
    conn: NatsConnection
    names: SwarmNames
    stores: SwarmStores
    tasks: TaskService
    dead_letters: DeadLetterService
    agents: AgentDirectory
    discoveries: DiscoveryService
    messages: MessageService
    capabilities: CapabilityService

    @classmethod
    async def open(
        cls,
        conn: NatsConnection,
        prefix: str,
        *,
        sender: str,
        agent: str | None = None,
        streams: StreamsConfig | None = None,
    ) -> SwarmClient:
        """Use a connected ``conn``; the swarm's streams and buckets are created if missing.

        ``sender`` (a replica id) signs messages; ``agent`` (default: sender) signs discoveries.
        """
        names = SwarmNames(prefix)
        stores = await ensure_swarm_stores(conn, names, streams or StreamsConfig())
        metrics = conn.metrics
        tasks = TaskService(conn, names, stores.tasks)
        return cls(
            conn=conn,
            names=names,
            stores=stores,
            tasks=tasks,
            dead_letters=DeadLetterService(conn, names, tasks),
            agents=AgentDirectory(conn, names, stores.agents),
            discoveries=DiscoveryService(conn, names, metrics, agent or sender),
            messages=MessageService(conn, names, metrics, sender),
            capabilities=CapabilityService(conn, names, metrics, agent=sender),
        )

    @classmethod
    async def connect(cls, nats: NatsConfig, prefix: str, *, sender: str, give_up_after: float | None = None) -> SwarmClient:
        """A client of its own (CLI, tools): connects (NatsUnreachable after ``give_up_after`` seconds), then opens the swarm."""
        conn = NatsConnection(nats, RuntimeMetrics(), name=f"kubeswarm-client/{sender}")
        await conn.connect(give_up_after=give_up_after)
        try:
            return await cls.open(conn, prefix, sender=sender)
        except BaseException:
            await conn.close()
            raise

    async def close(self) -> None:
        await self.messages.stop()
        await self.capabilities.stop()
        await self.conn.close()
