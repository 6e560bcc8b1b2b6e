"""One agent replica: presence, task worker, capability answers and messages over one NATS connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import nats

from .client import SwarmClient
from .config import RuntimeConfig
from .connection import JS_API_TIMEOUT, NatsConnection
from .messages import AgentMessage
from .metrics import RuntimeMetrics
from .presence import AgentInfo, Presence
from .providers import CHAT_PROVIDERS, TaskContext, TaskHandler, build_handler
from .tasks import TaskWorker
from .triggers import CronTriggers

log = logging.getLogger(__name__)


def config_uses_tools(config: RuntimeConfig) -> bool:
    """Echo and http ignore tools: they get no toolbox (and load none of its modules)."""
    return config.model.provider in CHAT_PROVIDERS


class AgentRuntime:
    def __init__(self, config: RuntimeConfig, *, endpoint: str | None = None, handler: TaskHandler | None = None) -> None:
        self.config = config
        self.endpoint = endpoint
        self.metrics = RuntimeMetrics()
        self.handler = handler or self._build_handler()
        self.conn = NatsConnection(config.nats, self.metrics, name=f"kubeswarm/{config.agent}/{config.replica_id}")
        self.started = False
        self.draining = False
        self._swarm: SwarmClient | None = None
        self._presence: Presence | None = None
        self._worker: TaskWorker | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._cron: CronTriggers | None = None
        self._mirror: asyncio.Task[None] | None = None  # a serving process's view of its first process's presence
        self._first_load = 0

    def _build_handler(self) -> TaskHandler:
        if config_uses_tools(self.config):
            # Imported here: the swarm's tools (mcp.tools) import this module.
            from .agentloop.sources import build_toolbox

            return build_handler(self.config.model, self.metrics, build_toolbox(self))
        return build_handler(self.config.model, self.metrics)

    @property
    def swarm(self) -> SwarmClient:
        """The services (tasks, agents, discoveries, messages, capabilities) for tools to call."""
        assert self._swarm is not None, "start() first"
        return self._swarm

    def info(self) -> AgentInfo:
        """This replica as the registry shows it, computed locally (no NATS round trip)."""
        assert self._presence is not None, "start() first"
        return self._presence.info()

    def info_data(self) -> dict[str, Any]:
        """:meth:`info` as JSON data (no model built)."""
        assert self._presence is not None, "start() first"
        return self._presence.info_data()

    @property
    def worker_died(self) -> bool:
        """Whether this process's task worker stopped taking tasks (liveness fails); a serving process has none."""
        return self.started and self._worker is not None and not self._worker.alive

    @property
    def worker(self) -> TaskWorker:
        assert self._worker is not None, "start() first"
        return self._worker

    async def start(self) -> None:
        cfg = self.config
        await self.conn.connect()
        swarm = await SwarmClient.open(self.conn, cfg.subject_prefix, sender=cfg.replica_id, agent=cfg.agent, streams=cfg.streams)
        self._swarm = swarm
        self._worker = TaskWorker(self.conn, swarm.names, swarm.stores.tasks, cfg, self.handler, self.metrics)
        self._presence = Presence(
            self.conn, swarm.names, swarm.stores.agents, cfg, self.metrics, load=lambda: self.worker.load, endpoint=self.endpoint
        )
        await self._worker.start()
        await swarm.capabilities.serve(cfg.capabilities, self.handler, cfg.concurrency)
        await swarm.messages.start(agent=cfg.agent, handler=self._on_message)
        await self._presence.announce()
        if cfg.triggers.cron:
            self._cron = CronTriggers(swarm.tasks, cfg)
            self._cron.start()
        self._heartbeats = asyncio.create_task(self._heartbeat_loop(), name="heartbeats")
        self.started = True
        log.info(
            "agent %s (replica %s) up on %s: capabilities %s",
            cfg.agent,
            cfg.replica_id,
            cfg.subject_prefix,
            ",".join(cfg.capabilities) or "-",
        )

    async def start_serving(self) -> None:
        """A replica's extra serving process (``mcp.processes`` > 1): NATS and the swarm's services for the requests
        it answers. The replica's tasks, presence, capabilities, messages and triggers stay with its first process,
        whose load this one shows (as of its last heartbeat)."""
        cfg = self.config
        await self.conn.connect()
        swarm = await SwarmClient.open(self.conn, cfg.subject_prefix, sender=cfg.replica_id, agent=cfg.agent, streams=cfg.streams)
        self._swarm = swarm
        self._presence = Presence(
            self.conn, swarm.names, swarm.stores.agents, cfg, self.metrics, load=lambda: self._first_load, endpoint=self.endpoint
        )
        mirrored = asyncio.Event()
        self._mirror = asyncio.create_task(self._mirror_first_process(mirrored), name="first-process-presence")
        with contextlib.suppress(TimeoutError):  # the first process may not have announced yet
            async with asyncio.timeout(JS_API_TIMEOUT):
                await mirrored.wait()
        self.started = True
        log.info("agent %s (replica %s): a serving process up on %s", cfg.agent, cfg.replica_id, cfg.subject_prefix)

    async def _mirror_first_process(self, mirrored: asyncio.Event) -> None:
        """Follow the registry entry the replica's first process heartbeats: its load and start time (``mirrored``
        once the entry as it is now is known)."""
        assert self._presence is not None
        watcher: Any = await self.swarm.stores.agents.watch(self.config.replica_id)  # its stop() is untyped
        try:
            async for entry in watcher:
                if entry is not None and entry.value:
                    with contextlib.suppress(ValueError):
                        first = AgentInfo.model_validate_json(entry.value)
                        self._first_load, self._presence.started_at = first.load, first.started_at
                mirrored.set()  # None: the watch's "existing entries done" marker
        finally:
            with contextlib.suppress(nats.errors.Error):
                await watcher.stop()

    async def ready(self) -> bool:
        return self.started and not self.draining and await self.conn.jetstream_usable()

    async def _heartbeat_loop(self) -> None:
        assert self._presence is not None
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            try:
                await self._presence.heartbeat()
                await self.worker.refresh_backlog(self.swarm.tasks, self.swarm.dead_letters)
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _on_message(self, message: AgentMessage) -> Any:
        # Built-in actions let peers (and `kubeswarm demo`) drive discoveries; any other query is
        # answered by this agent's model; other commands are only logged (tools act on them via MCP).
        body = message.body if isinstance(message.body, dict) else {}
        action = body.get("action")
        if action == "share_discovery":
            shared = await self.swarm.discoveries.share(str(body.get("type", "note")), body.get("content"), body.get("tags"))
            return shared.model_dump(mode="json")
        if action == "list_discoveries":
            found = await self.swarm.discoveries.list(type=body.get("type"), agent=body.get("agent"))
            return [d.model_dump(mode="json") for d in found]
        if message.kind == "query":
            return await self.handler.handle(TaskContext(message.id, "query", message.body, 1, self.config.agent, depth=message.depth))
        log.info("message %s from %s: %s", message.kind, message.sender, message.body)
        return None

    async def stop(self) -> None:
        """Graceful: stop taking work, finish or hand back in-flight tasks, leave, drain."""
        if self.draining:
            return
        self.draining = True
        for background in (self._heartbeats, self._mirror):
            if background is not None:
                background.cancel()
        if self._cron is not None:
            await self._cron.stop()
        if self._swarm is not None:
            await self._swarm.capabilities.stop(self.config.shutdown_grace_seconds)
        if self._worker is not None:
            await self._worker.stop(self.config.shutdown_grace_seconds)
        if self._presence is not None and self._mirror is None:
            await self._presence.leave()
        if self._swarm is not None:
            await self._swarm.messages.stop()
        with contextlib.suppress(Exception):
            await self.handler.close()
        await self.conn.close()
        log.info("agent %s (replica %s) stopped", self.config.agent, self.config.replica_id)
