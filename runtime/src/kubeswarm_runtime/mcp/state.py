"""MCP state every replica shares, kept in NATS: sessions (KV), SSE stream events (JetStream), legacy SSE routing.

Nothing here lives only in one process, so replicas behind one Service serve
a client's requests alternately without sticky sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from ..runtime import AgentRuntime
from ..stores import mcp_store_configs, with_replicas

_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
_EVENT_ID = re.compile(r"^(?P<stream>[0-9a-f]{16})-(?P<n>\d{1,9})$")
# Replies waiting for a legacy SSE client to read them, per session.
LEGACY_SESSION_QUEUE = 256
# An ordered consumer reading a stream's events wakes this often to let the caller send keep-alives.
FOLLOW_POLL_SECONDS = 1.0


class SwarmUnavailable(Exception):
    """The runtime is not connected to the swarm (yet): shared state cannot be read or written."""


class SessionRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    transport: Literal["streamable", "sse"]
    caller: str  # who created it: other callers cannot use it
    version: str | None = None  # negotiated by initialize (legacy SSE: set when it arrives)
    holder: str | None = None  # legacy SSE: the replica holding the stream
    touched_at: float


def is_session_id(value: str) -> bool:
    return bool(_SESSION_ID.match(value))


def parse_event_id(value: str) -> tuple[str, int] | None:
    """(stream, position) of an SSE event id, or None if it is not one of ours."""
    match = _EVENT_ID.match(value)
    return (match["stream"], int(match["n"])) if match else None


def event_id(stream: str, n: int) -> str:
    return f"{stream}-{n}"


def new_stream_id() -> str:
    return secrets.token_hex(8)


def is_response(message: dict[str, Any]) -> bool:
    return "id" in message and ("result" in message or "error" in message)


class McpState:
    """Sessions and stream events of one swarm; the stores are made on first use (after the runtime connects)."""

    def __init__(self, runtime: AgentRuntime, session_ttl_seconds: float) -> None:
        self.runtime = runtime
        self.session_ttl = session_ttl_seconds
        self._sessions: KeyValue | None = None
        self._lock = asyncio.Lock()

    async def sessions(self) -> KeyValue:
        if not self.runtime.started:
            raise SwarmUnavailable("this agent is not connected to the swarm yet")
        if self._sessions is None:
            async with self._lock:
                if self._sessions is None:
                    swarm, conn = self.runtime.swarm, self.runtime.conn
                    streams = with_replicas(self.runtime.config.streams, conn)
                    events, sessions = mcp_store_configs(swarm.names, streams, self.session_ttl)
                    await conn.ensure_stream(events)
                    self._sessions = await conn.ensure_kv(sessions)
        return self._sessions

    # -- sessions

    async def create_session(self, record: SessionRecord) -> str:
        session_id = secrets.token_hex(16)
        await (await self.sessions()).put(session_id, record.model_dump_json().encode())
        return session_id

    async def session(self, session_id: str) -> SessionRecord | None:
        """The live session, its idle expiry pushed back now and then; None if unknown or expired."""
        if not is_session_id(session_id):
            return None
        bucket = await self.sessions()
        try:
            entry = await bucket.get(session_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        record = SessionRecord.model_validate_json(entry.value)
        if time.time() - record.touched_at > self.session_ttl / 4:
            record = await self.save_session(session_id, record)
        return record

    async def save_session(self, session_id: str, record: SessionRecord) -> SessionRecord:
        record = record.model_copy(update={"touched_at": time.time()})
        await (await self.sessions()).put(session_id, record.model_dump_json().encode())
        return record

    async def end_session(self, session_id: str) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await (await self.sessions()).delete(session_id)

    # -- events of resumable SSE streams

    async def append_event(self, session_id: str, stream: str, n: int, message: dict[str, Any] | None) -> str:
        """Record event ``n`` of a stream (None: the priming event) so any replica can replay it; its SSE id."""
        await self.sessions()
        subject = self.runtime.swarm.names.mcp_events(session_id, stream)
        await self.runtime.conn.js.publish(subject, json.dumps({"n": n, "message": message}).encode())
        return event_id(stream, n)

    async def follow_events(self, session_id: str, stream: str, after: int) -> AsyncIterator[tuple[str, dict[str, Any]] | None]:
        """Events of a stream after position ``after``, as they come, until its response; None now and then while idle."""
        await self.sessions()
        js = self.runtime.conn.js
        names = self.runtime.swarm.names
        sub = await js.subscribe(names.mcp_events(session_id, stream), stream=names.mcp_events_stream, ordered_consumer=True)
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=FOLLOW_POLL_SECONDS)
                except (TimeoutError, nats.errors.TimeoutError):
                    yield None
                    continue
                event = json.loads(msg.data)
                message = event["message"]
                if event["n"] <= after or message is None:
                    continue
                yield event_id(stream, event["n"]), message
                if is_response(message):
                    return
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()


class LegacyRouter:
    """Delivers messages for legacy HTTP+SSE sessions to the replica holding each stream (one subscription per process)."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self._streams: dict[str, asyncio.Queue[bytes]] = {}
        self._sub: Subscription | None = None
        self._dropped = runtime.metrics.buffer_dropped.labels("legacy_sse")

    async def open(self, session_id: str) -> asyncio.Queue[bytes]:
        if self._sub is None:
            names = self.runtime.swarm.names
            self._sub = await self.runtime.conn.nc.subscribe(names.mcp_sse(self.runtime.config.replica_id), cb=self._deliver)
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=LEGACY_SESSION_QUEUE)
        self._streams[session_id] = queue
        return queue

    def close(self, session_id: str) -> None:
        self._streams.pop(session_id, None)

    async def send(self, holder: str, session_id: str, message: bytes) -> None:
        await self.runtime.conn.nc.publish(self.runtime.swarm.names.mcp_sse(holder, session_id), message)

    async def _deliver(self, msg: Msg) -> None:
        queue = self._streams.get(msg.subject.rsplit(".", 1)[-1])
        if queue is not None:
            try:
                queue.put_nowait(msg.data)
            except asyncio.QueueFull:  # a client that stopped reading loses messages, as on a dropped stream
                self._dropped.inc()

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
