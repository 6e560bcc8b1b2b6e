"""The HTTP+SSE transport of protocol 2024-11-05: ``GET /sse`` holds the stream, ``POST /messages`` sends.

A POST may reach any replica: it answers the request and routes the reply
over NATS to the replica holding the session's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from aiohttp import web

from ..config import McpConfig
from .admission import Admission
from .http import CLIENT_GONE, KEEPALIVE, SseStream, json_response, sse_event
from .jsonrpc import RpcError, RpcMessage, check, decode, encode, error_reply, id_of, result_reply, too_many_in_flight
from .metering import OK, method_of
from .protocol import LATEST_HANDSHAKE_VERSION, McpServer
from .routes import Routes
from .security import Guard, SessionWork, StreamSlots
from .state import LegacyRouter, McpState, SessionRecord


@dataclass
class LegacySse:
    server: McpServer
    state: McpState
    router: LegacyRouter
    guard: Guard
    slots: StreamSlots
    config: McpConfig
    admission: Admission
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    _work: SessionWork = field(init=False)

    def __post_init__(self) -> None:
        self._work = SessionWork(self.config.ws_max_in_flight)

    def add_routes(self, routes: Routes) -> None:
        routes.add_get("/sse", self.stream)
        routes.add_post("/messages", self.message, meter=self.server.meter)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        caller = await self.guard.admit(request)
        with self.slots.hold():
            replica = self.state.runtime.config.replica_id
            record = SessionRecord(transport="sse", caller=caller.subject or "", holder=replica, touched_at=time.time())
            session_id = await self.state.create_session(record)
            inbox = await self.router.open(session_id)
            stream = await SseStream.open(request, self.config.write_timeout_seconds)
            try:
                await stream.send(sse_event(f"/messages?session_id={session_id}".encode(), event="endpoint"))
                async with asyncio.timeout(self.config.timeout_seconds):
                    while True:
                        try:
                            async with asyncio.timeout(self.config.keepalive_seconds):
                                frame = await inbox.get()
                        except TimeoutError:
                            await stream.send(KEEPALIVE)
                            continue
                        await stream.send(sse_event(frame, event="message"))
            except CLIENT_GONE:
                pass
            finally:
                self.router.close(session_id)
                with contextlib.suppress(Exception):  # it expires anyway
                    await self.state.end_session(session_id)
            return stream.response

    async def message(self, request: web.Request) -> web.Response:
        caller = await self.guard.admit(request)
        session_id = request.query.get("session_id")
        if not session_id:
            raise web.HTTPBadRequest(text="session_id is required")
        record = await self.state.session(session_id)
        if record is None or record.transport != "sse" or record.caller != (caller.subject or ""):
            raise web.HTTPNotFound(text="Could not find session")
        body = await self.guard.read_body(request)
        obj = None
        try:
            obj = decode(body)
            message = check(obj, body)
        except RpcError as exc:
            self.server.meter.count(method_of(obj), exc.code)
            return json_response(error_reply(id_of(obj), exc), status=400)
        if message.is_notification or message.is_response:
            if message.is_notification:
                self.server.meter.count(message.method)
            return web.Response(status=202, text="Accepted")
        if not self._work.start(session_id):
            busy = too_many_in_flight("session", self._work.limit)
            self.server.meter.count(message.method, busy.code)
            assert record.holder is not None
            await self.router.send(record.holder, session_id, encode(error_reply(message.id, busy)))
            return web.Response(status=202, text="Accepted")
        task = asyncio.create_task(self._answer(session_id, record, message))
        self.admission.keep(request)  # the answer, sent on the session's stream, is still work of this request
        self._background.add(task)
        task.add_done_callback(lambda done: self._answered(session_id, done))
        return web.Response(status=202, text="Accepted")

    def _answered(self, session_id: str, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        self._work.finished(session_id)
        self.admission.leave()

    async def _answer(self, session_id: str, record: SessionRecord, message: RpcMessage) -> None:
        assert record.holder is not None
        if message.method == "initialize":
            try:
                version, result = self.server.initialize(message.params)
                await self.state.save_session(session_id, record.model_copy(update={"version": version}))
                reply = result_reply(message.id, result)
            except RpcError as exc:
                reply = error_reply(message.id, exc)
            self.server.meter.count(message.method, reply["error"]["code"] if "error" in reply else OK)
        else:
            reply = await self.server.reply(message, record.version or LATEST_HANDSHAKE_VERSION)
        await self.router.send(record.holder, session_id, encode(reply))
