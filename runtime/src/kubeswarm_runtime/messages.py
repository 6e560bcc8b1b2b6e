"""Direct messages between agents (command, query, response with correlation id) and broadcast."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal

import nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .connection import NatsConnection
from .metrics import RuntimeMetrics
from .names import SwarmNames

log = logging.getLogger(__name__)

MessageKind = Literal["command", "query", "response", "broadcast"]


class AgentMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: MessageKind
    sender: str = Field(description="Replica id the message came from; responses go to P.msg.<sender>.")
    to: str | None = None
    body: Any = None
    correlation_id: str | None = None
    at: float = Field(default_factory=time.time)
    depth: int = Field(default=0, ge=0, description="Delegations deep: a query answered by a model's tool loop is bounded by it.")


# Handles a command or query; a query's return value is sent back as the response.
MessageHandler = Callable[[AgentMessage], Awaitable[Any]]

# What a replica keeps of the messages it received, for readers in its process; any caller can send
# broadcasts of up to the server's payload limit, so the bound is in bytes as well as in messages.
RECEIVED_KEPT_MESSAGES = 100
RECEIVED_KEPT_BYTES = 4 * 1024 * 1024


class ReceivedMessages:
    """The latest messages received (commands, queries, broadcasts); a new one pushes the oldest out, counted."""

    def __init__(self, metrics: RuntimeMetrics, max_messages: int = RECEIVED_KEPT_MESSAGES, max_bytes: int = RECEIVED_KEPT_BYTES) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.bytes = 0
        self._kept: deque[tuple[AgentMessage, int]] = deque()
        self._arrived = asyncio.Event()
        self._dropped = metrics.buffer_dropped.labels("received_messages")
        metrics.received_messages_bytes.set_function(lambda: self.bytes)

    def add(self, message: AgentMessage, size: int) -> None:
        self._kept.append((message, size))
        self.bytes += size
        while len(self._kept) > self.max_messages or self.bytes > self.max_bytes:
            self._take()
            self._dropped.inc()
        self._arrived.set()

    async def get(self) -> AgentMessage:
        """The oldest message kept, waiting for one if none is."""
        while not self._kept:
            self._arrived.clear()
            await self._arrived.wait()
        return self._take()

    def _take(self) -> AgentMessage:
        message, size = self._kept.popleft()
        self.bytes -= size
        return message

    def __len__(self) -> int:
        return len(self._kept)

    def __iter__(self) -> Iterator[AgentMessage]:
        return (message for message, _ in self._kept)


class RecentIds:
    """The ids of the last ``size`` commands and broadcasts: one sent again with its id (by a task's tool loop run
    again after a crash) is taken once by a replica that still remembers it."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def first_time(self, message_id: str) -> bool:
        if message_id in self._ids:
            return False
        self._ids.add(message_id)
        self._order.append(message_id)
        if len(self._order) > self.size:
            self._ids.discard(self._order.popleft())
        return True


class MessageService:
    """Send and receive direct messages and broadcasts.

    A replica listens on ``P.msg.<replica id>`` and, in a queue group, on
    ``P.msg.<agent name>`` (so a message to an agent reaches one of its replicas).
    """

    def __init__(self, conn: NatsConnection, names: SwarmNames, metrics: RuntimeMetrics, sender: str) -> None:
        self.conn = conn
        self.names = names
        self.metrics = metrics
        self.sender = sender
        self.received = ReceivedMessages(metrics)
        self._recent = RecentIds()
        self._waiting: dict[str, asyncio.Future[AgentMessage]] = {}
        self._subs: list[Subscription] = []
        self._handler: MessageHandler | None = None

    async def start(self, *, agent: str | None = None, handler: MessageHandler | None = None) -> None:
        """Listen for messages; without ``agent`` only responses to this sender's queries are taken."""
        self._handler = handler
        subscribe = self.conn.subscribe_bounded
        self._subs.append(await subscribe(self.names.direct(self.sender), self._on_message))
        if agent is not None:
            self._subs.append(await subscribe(self.names.direct(agent), self._on_message, queue=agent))
            self._subs.append(await subscribe(self.names.broadcast, self._on_message))

    async def send(
        self,
        to: str,
        kind: MessageKind,
        body: Any,
        *,
        correlation_id: str | None = None,
        message_id: str | None = None,
        depth: int = 0,
    ) -> AgentMessage:
        """``message_id`` (default: random) lets a receiver recognise a message sent again (a task's loop re-run)."""
        message = AgentMessage(
            id=message_id or uuid.uuid4().hex, kind=kind, sender=self.sender, to=to, body=body, correlation_id=correlation_id, depth=depth
        )
        await self.conn.nc.publish(self.names.direct(to), message.model_dump_json().encode())
        self.metrics.messages.labels("out", kind).inc()
        return message

    async def query(self, to: str, body: Any, *, timeout_seconds: float = 30.0, depth: int = 0) -> AgentMessage:
        """Send a query and wait for the response carrying its id as correlation id."""
        if not self._subs:
            await self.start()
        correlation_id = uuid.uuid4().hex
        waiter: asyncio.Future[AgentMessage] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = waiter
        try:
            await self.send(to, "query", body, correlation_id=correlation_id, depth=depth)
            async with asyncio.timeout(timeout_seconds):
                return await waiter
        finally:
            self._waiting.pop(correlation_id, None)

    async def broadcast(self, body: Any, *, message_id: str | None = None) -> AgentMessage:
        message = AgentMessage(id=message_id or uuid.uuid4().hex, kind="broadcast", sender=self.sender, body=body)
        await self.conn.nc.publish(self.names.broadcast, message.model_dump_json().encode())
        self.metrics.messages.labels("out", "broadcast").inc()
        return message

    async def _on_message(self, msg: Msg) -> None:
        try:
            message = AgentMessage.model_validate_json(msg.data)
        except ValidationError:
            log.warning("dropped a malformed message on %s", msg.subject)
            return
        if message.kind in ("command", "broadcast") and not self._recent.first_time(message.id):
            log.info("%s %s from %s taken already; dropped", message.kind, message.id, message.sender)
            return
        self.metrics.messages.labels("in", message.kind).inc()
        if message.kind == "response" and message.correlation_id in self._waiting:
            waiter = self._waiting[message.correlation_id]
            if not waiter.done():
                waiter.set_result(message)
            return
        self.received.add(message, len(msg.data))
        if message.kind == "query" and self._handler is not None:
            try:
                answer = await self._handler(message)
            except Exception as exc:
                answer = {"error": str(exc) or type(exc).__name__}
            await self.send(message.sender, "response", answer, correlation_id=message.correlation_id or message.id)
        elif message.kind == "command" and self._handler is not None:
            await self._handler(message)

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        self._subs.clear()
