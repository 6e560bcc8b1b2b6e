"""``/rpc`` (JSON-RPC 2.0 over POST, batches included) and ``/ws/mcp`` (the same over a WebSocket).

Methods: ``list_tools``, ``call_tool`` (and their MCP names), and every tool
by its own name with its arguments as params.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from ..config import McpConfig
from .admission import Admission
from .http import json_response
from .jsonrpc import (
    INVALID_REQUEST,
    RequestId,
    RpcError,
    check,
    decode,
    encode,
    error_reply,
    id_of,
    too_many_in_flight,
)
from .metering import NO_METHOD, method_of
from .protocol import McpServer
from .routes import Routes
from .security import Caller, Guard, StreamSlots


@dataclass
class JsonRpc:
    server: McpServer
    guard: Guard
    slots: StreamSlots
    config: McpConfig
    admission: Admission

    def add_routes(self, routes: Routes) -> None:
        routes.add_post("/rpc", self.post, meter=self.server.meter)
        routes.add_get("/ws/mcp", self.websocket, meter=self.server.meter)

    async def answer(self, payload: Any) -> Any:
        """The reply to a decoded payload (one message or a batch); None when only notifications came."""
        if isinstance(payload, list):
            if not payload:
                return self._error(NO_METHOD, None, RpcError(INVALID_REQUEST, "Invalid request: an empty batch"))
            # One admission place per request: its batch runs at most ws_max_in_flight messages at once, as one
            # connection does, whatever the rate limit lets a batch hold.
            slots = asyncio.Semaphore(self.config.ws_max_in_flight)

            async def answer_in_turn(item: Any) -> dict[str, Any] | None:
                async with slots:
                    return await self._answer_one(item)

            replies = [r for r in await asyncio.gather(*(answer_in_turn(item) for item in payload)) if r is not None]
            return replies or None
        return await self._answer_one(payload)

    async def _answer_one(self, obj: Any) -> dict[str, Any] | None:
        try:
            message = check(obj)
        except RpcError as exc:
            return self._error(method_of(obj), id_of(obj), exc)
        if message.is_response:
            return None
        reply = await self.server.reply(message, None)
        return None if message.is_notification else reply

    def _error(self, method: str, request_id: RequestId | None, error: RpcError) -> dict[str, Any]:
        """An error reply to a request answered here rather than by the server (counted)."""
        self.server.meter.count(method, error.code)
        return error_reply(request_id, error)

    def _messages_in(self, payload: Any) -> int:
        """How many messages a payload holds (each counts against the rate limit); -32600 for a batch too large to admit."""
        if not isinstance(payload, list):
            return 1
        self.guard.check_batch(len(payload))
        return len(payload)

    async def post(self, request: web.Request) -> web.Response:
        caller = await self.guard.admit(request)  # takes the first message's token
        body = await self.guard.read_body(request)
        try:
            payload = decode(body)
            messages = self._messages_in(payload)
        except RpcError as exc:
            return json_response(self._error(NO_METHOD, None, exc))
        self.guard.admit_messages(caller, messages - 1)
        reply = await self.answer(payload)
        return web.Response(status=204) if reply is None else json_response(reply)

    def _finished(self, running: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            self.admission.leave()

        return finished

    def _rate_limited(self, caller: Caller, payload: Any) -> RpcError | None:
        """Why a WebSocket message may not run now (each one counts against the caller's rate limit), or None."""
        try:
            messages = self._messages_in(payload)
        except RpcError as exc:
            return exc
        refused = self.guard.rate_limited(caller, messages)
        return None if refused is None else refused.rpc_error()

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        caller = await self.guard.admit(request)
        cfg = self.config
        with self.slots.hold():
            ws = web.WebSocketResponse(heartbeat=cfg.keepalive_seconds, max_msg_size=cfg.max_request_bytes)
            await ws.prepare(request)
            running: set[asyncio.Task[None]] = set()

            async def send(reply: Any) -> None:
                if reply is not None and not ws.closed:
                    async with asyncio.timeout(cfg.write_timeout_seconds):
                        await ws.send_str(encode(reply).decode())

            async def serve(payload: Any) -> None:
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await send(await self.answer(payload))

            try:
                async with asyncio.timeout(cfg.timeout_seconds):
                    async for frame in ws:
                        if frame.type is not WSMsgType.TEXT:
                            binary = RpcError(INVALID_REQUEST, "Invalid request: send JSON-RPC as text frames")
                            await send(self._error(NO_METHOD, None, binary))
                            continue
                        try:
                            payload = decode(frame.data)
                        except RpcError as exc:
                            await send(self._error(NO_METHOD, None, exc))
                            continue
                        if (refused := self._rate_limited(caller, payload)) is not None:
                            await send(self._error(method_of(payload), id_of(payload), refused))
                            continue
                        if len(running) >= cfg.ws_max_in_flight:
                            busy = too_many_in_flight("connection", cfg.ws_max_in_flight)
                            await send(self._error(method_of(payload), id_of(payload), busy))
                            continue
                        if not self.admission.enter():
                            busy = too_many_in_flight("replica", self.admission.max_in_flight)
                            await send(self._error(method_of(payload), id_of(payload), busy))
                            continue
                        task = asyncio.create_task(serve(payload))
                        running.add(task)
                        task.add_done_callback(self._finished(running))
            except (TimeoutError, ConnectionError):
                pass
            finally:
                for task in running:
                    task.cancel()
                await ws.close()
            return ws
