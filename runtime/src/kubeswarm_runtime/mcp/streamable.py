"""``/mcp``: MCP Streamable HTTP for the current revision (stateless) and the 2025 ones (sessions).

- 2026-07-28: every POST carries ``_meta`` and the mirrored headers; no
  session, no GET; closing an SSE response cancels the request.
- 2025-03-26 to 2025-11-25: ``initialize`` opens a session (``Mcp-Session-Id``,
  kept in NATS); SSE responses are recorded in JetStream, so ``GET`` with
  ``Last-Event-ID`` resumes them on any replica; ``DELETE`` ends the session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..config import McpConfig
from .admission import Admission
from .http import CLIENT_GONE, KEEPALIVE, RECONNECT_MS, SseStream, accepts, json_response, sse_event, status_of
from .jsonrpc import (
    INVALID_REQUEST,
    RpcError,
    RpcMessage,
    check,
    decode,
    encode,
    error_reply,
    id_of,
    result_reply,
    too_many_in_flight,
)
from .metering import method_of
from .protocol import (
    HANDSHAKE_VERSIONS,
    MODERN_VERSIONS,
    SUPPORTED_VERSIONS,
    McpServer,
    is_modern_request,
    modern_version,
    unsupported_version,
)
from .routes import Routes
from .security import Caller, Guard, SessionWork, StreamSlots
from .state import McpState, SessionRecord, event_id, new_stream_id, parse_event_id

log = logging.getLogger(__name__)

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"


@dataclass
class StreamableHttp:
    server: McpServer
    state: McpState
    guard: Guard
    slots: StreamSlots
    config: McpConfig
    admission: Admission
    _background: set[asyncio.Task[Any]] = field(default_factory=set)
    _work: SessionWork = field(init=False)

    def __post_init__(self) -> None:
        self._work = SessionWork(self.config.ws_max_in_flight)

    def add_routes(self, routes: Routes) -> None:
        routes.add_post("/mcp", self.post, meter=self.server.meter)
        routes.add_get("/mcp", self.get)
        routes.add_delete("/mcp", self.delete)

    def _reject(self, status: int, error: RpcError, method: str, request_id: Any = None) -> web.Response:
        self.server.meter.count(method, error.code)
        return json_response(error_reply(request_id, error), status=status)

    def _streams(self, message: RpcMessage, request: web.Request) -> bool:
        """Answer over SSE: a call of a tool that may take long, from a client that takes SSE."""
        if message.method != "tools/call":
            return False
        tool = self.server.registry.find(message.params.get("name"))
        return tool is not None and tool.slow and accepts(request, "text/event-stream")

    # -- POST

    async def post(self, request: web.Request) -> web.StreamResponse:
        caller = await self.guard.admit(request)
        if not accepts(request, "application/json", "text/event-stream"):
            raise web.HTTPNotAcceptable(text="Accept must list application/json and text/event-stream")
        body = await self.guard.read_body(request)
        obj: Any = None
        try:
            obj = decode(body)
            if isinstance(obj, list):
                raise RpcError(INVALID_REQUEST, "Invalid request: batches are not part of this protocol")
            message = check(obj, body)
        except RpcError as exc:
            return self._reject(400, exc, method_of(obj), id_of(obj))
        self.server.meter.reading(message.method)
        session_id = request.headers.get(SESSION_HEADER)
        if session_id is not None:
            return await self._in_session(request, caller, session_id, message)
        if message.method == "initialize":
            return await self._initialize(caller, message)
        header_version = request.headers.get(VERSION_HEADER)
        if is_modern_request(message) or header_version in MODERN_VERSIONS:
            return await self._stateless(request, message)
        if header_version is not None and header_version not in SUPPORTED_VERSIONS:
            return self._reject(400, unsupported_version(header_version), message.method, message.id)
        missing = RpcError(INVALID_REQUEST, f"Bad request: {SESSION_HEADER} header is required (initialize first)")
        return self._reject(400, missing, message.method, message.id)

    async def _stateless(self, request: web.Request, message: RpcMessage) -> web.StreamResponse:
        try:
            version = modern_version(message, request.headers)
        except RpcError as exc:
            return self._reject(400, exc, message.method, message.id)
        if message.is_notification or message.is_response:
            return self._accepted(message)
        if self._streams(message, request):
            return await self._stream_cancellable(request, message, version)
        reply = await self.server.reply(message, version)
        return json_response(reply, status_of(reply))

    async def _initialize(self, caller: Caller, message: RpcMessage) -> web.Response:
        try:
            version, result = self.server.initialize(message.params)
        except RpcError as exc:
            return self._reject(400, exc, message.method, message.id)
        record = SessionRecord(transport="streamable", caller=caller.subject or "", version=version, touched_at=time.time())
        session_id = await self.state.create_session(record)
        self.server.meter.count(message.method)
        return json_response(result_reply(message.id, result), headers={SESSION_HEADER: session_id})

    async def _session(self, request: web.Request, caller: Caller, session_id: str) -> SessionRecord:
        """The caller's live session (404 when unknown or expired) after checking the version header (400)."""
        header_version = request.headers.get(VERSION_HEADER)
        if header_version is not None and header_version not in HANDSHAKE_VERSIONS:
            unsupported = error_reply(None, unsupported_version(header_version))
            raise web.HTTPBadRequest(text=encode(unsupported).decode(), content_type="application/json")
        record = await self.state.session(session_id)
        if record is None or record.transport != "streamable" or record.caller != (caller.subject or ""):
            gone = RpcError(INVALID_REQUEST, "Session not found: it ended or expired; initialize again")
            raise web.HTTPNotFound(text=encode(error_reply(None, gone)).decode(), content_type="application/json")
        return record

    async def _in_session(self, request: web.Request, caller: Caller, session_id: str, message: RpcMessage) -> web.StreamResponse:
        record = await self._session(request, caller, session_id)
        if message.is_notification or message.is_response:
            return self._accepted(message)
        assert record.version is not None
        if self._streams(message, request):
            return await self._stream_resumable(request, session_id, message, record.version)
        reply = await self.server.reply(message, record.version)
        return json_response(reply, status_of(reply))

    def _accepted(self, message: RpcMessage) -> web.Response:
        """202 for a notification (counted) or a client's response to us (not a request)."""
        if message.is_notification:
            self.server.meter.count(message.method)
        return web.Response(status=202)

    # -- SSE responses

    async def _stream_cancellable(self, request: web.Request, message: RpcMessage, version: str) -> web.StreamResponse:
        """2026-07-28: the response stream is the request; the client closing it cancels the work."""
        with self.slots.hold():
            stream = await SseStream.open(request, self.config.write_timeout_seconds)
            work = asyncio.ensure_future(self.server.reply(message, version))
            try:
                reply = await stream.wait(work, self.config.keepalive_seconds)
                await stream.send(sse_event(encode(reply), event="message"))
            except CLIENT_GONE:
                work.cancel()
            return stream.response

    async def _stream_resumable(self, request: web.Request, session_id: str, message: RpcMessage, version: str) -> web.StreamResponse:
        """2025 sessions: events go to JetStream first, so the client may drop and resume here or on another replica."""
        with self.slots.hold():
            if not self._work.start(session_id):
                return self._reject(200, too_many_in_flight("session", self._work.limit), message.method, message.id)
            stream_id = new_stream_id()
            try:
                priming = await self.state.append_event(session_id, stream_id, 0, None)
            except BaseException:
                self._work.finished(session_id)  # no work was started
                raise
            # The work records its reply whether or not this client is still listening, in the request's place.
            work = asyncio.create_task(self._answer_and_record(session_id, stream_id, message, version))
            self.admission.keep(request)
            self._background.add(work)
            work.add_done_callback(lambda done: self._recorded(session_id, done))
            stream = await SseStream.open(request, self.config.write_timeout_seconds)
            try:
                await stream.send(sse_event(b"", event_id=priming, retry_ms=RECONNECT_MS))
                reply = await stream.wait(asyncio.shield(work), self.config.keepalive_seconds)
                await stream.send(sse_event(encode(reply), event="message", event_id=event_id(stream_id, 1)))
            except CLIENT_GONE:
                log.debug("client left stream %s of session %s; it can resume", stream_id, session_id)
            return stream.response

    def _recorded(self, session_id: str, work: asyncio.Task[Any]) -> None:
        self._background.discard(work)
        self._work.finished(session_id)
        self.admission.leave()

    async def _answer_and_record(self, session_id: str, stream_id: str, message: RpcMessage, version: str) -> dict[str, Any]:
        reply = await self.server.reply(message, version)
        await self.state.append_event(session_id, stream_id, 1, reply)
        return reply

    # -- GET: resume a stream (Last-Event-ID), or the session's stream for server-initiated messages

    async def get(self, request: web.Request) -> web.StreamResponse:
        caller = await self.guard.admit(request)
        session_id = request.headers.get(SESSION_HEADER)
        if session_id is None:
            if request.headers.get(VERSION_HEADER) in MODERN_VERSIONS:
                raise web.HTTPMethodNotAllowed("GET", ["POST"])
            raise web.HTTPBadRequest(text=f"{SESSION_HEADER} header is required")
        if not accepts(request, "text/event-stream"):
            raise web.HTTPNotAcceptable(text="Accept must list text/event-stream")
        await self._session(request, caller, session_id)
        last_event_id = request.headers.get("Last-Event-ID")
        position = parse_event_id(last_event_id) if last_event_id is not None else None
        if last_event_id is not None and position is None:
            raise web.HTTPBadRequest(text="Last-Event-ID is not an event id of this server")
        with self.slots.hold():
            stream = await SseStream.open(request, self.config.write_timeout_seconds)
            try:
                async with asyncio.timeout(self.config.timeout_seconds):
                    if position is None:
                        await self._idle(stream)
                    else:
                        await self._resume(stream, session_id, *position)
            except CLIENT_GONE:
                pass
            return stream.response

    async def _resume(self, stream: SseStream, session_id: str, stream_id: str, after: int) -> None:
        async for event in self.state.follow_events(session_id, stream_id, after):
            if event is None:
                await stream.send(KEEPALIVE)
            else:
                await stream.send(sse_event(encode(event[1]), event="message", event_id=event[0]))

    async def _idle(self, stream: SseStream) -> None:
        # This server sends no requests of its own; the stream carries keep-alives until the client or the timeout ends it.
        while True:
            await stream.send(KEEPALIVE)
            await asyncio.sleep(self.config.keepalive_seconds)

    # -- DELETE

    async def delete(self, request: web.Request) -> web.Response:
        caller = await self.guard.admit(request)
        session_id = request.headers.get(SESSION_HEADER)
        if session_id is None:
            raise web.HTTPBadRequest(text=f"{SESSION_HEADER} header is required")
        await self._session(request, caller, session_id)
        await self.state.end_session(session_id)
        return web.Response(status=204)
