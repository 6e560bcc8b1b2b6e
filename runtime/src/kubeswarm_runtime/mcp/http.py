"""HTTP pieces the transports share: JSON-RPC replies as responses, SSE framing and writing with deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from .jsonrpc import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    encode,
)

JSON_HEADERS = {"Content-Type": "application/json"}
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # proxies must not buffer a stream
}
KEEPALIVE = b": keep-alive\n\n"
# What a client should wait before reconnecting to a stream the server closed (SSE retry field, ms).
RECONNECT_MS = 1000
_HTTP_STATUS = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    HEADER_MISMATCH: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
    INTERNAL_ERROR: 500,
}

T = TypeVar("T")


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=encode(body), status=status, headers={**JSON_HEADERS, **headers} if headers else JSON_HEADERS)


def status_of(reply: dict[str, Any]) -> int:
    """The HTTP status of an MCP endpoint's JSON-RPC reply (MCP Streamable HTTP)."""
    error = reply.get("error")
    return 200 if error is None else _HTTP_STATUS.get(error["code"], 200)


def accepts(request: web.Request, *media_types: str) -> bool:
    """Whether the request's Accept header lists one of ``media_types`` (or ``*/*``)."""
    accept = request.headers.get("Accept", "*/*")
    return "*/*" in accept or any(map(accept.__contains__, media_types))  # map: no generator frame per request


def sse_event(data: bytes, *, event: str | None = None, event_id: str | None = None, retry_ms: int | None = None) -> bytes:
    head = b""
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    if retry_ms is not None:
        head += b"retry: " + str(retry_ms).encode() + b"\n"
    # Our JSON never holds a raw newline, so one data line carries it.
    return head + b"data: " + data + b"\n\n"


class SseStream:
    """An open SSE response whose writes must drain within ``write_timeout`` (a client that stops reading is dropped)."""

    def __init__(self, response: web.StreamResponse, write_timeout: float) -> None:
        self.response = response
        self.write_timeout = write_timeout

    @classmethod
    async def open(cls, request: web.Request, write_timeout: float, headers: Mapping[str, str] | None = None) -> SseStream:
        response = web.StreamResponse(headers={**SSE_HEADERS, **headers} if headers else SSE_HEADERS)
        await response.prepare(request)
        return cls(response, write_timeout)

    async def send(self, frame: bytes) -> None:
        """Write one frame; ConnectionResetError (or TimeoutError for a stalled client) when the client is gone."""
        async with asyncio.timeout(self.write_timeout):
            await self.response.write(frame)

    async def wait(self, work: Awaitable[T], keepalive_seconds: float) -> T:
        """Wait for ``work``, sending a keep-alive comment whenever it takes longer than ``keepalive_seconds``."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=keepalive_seconds)
            if done:
                return task.result()
            await self.send(KEEPALIVE)


# Errors that mean the client went away mid-stream.
CLIENT_GONE = (ConnectionResetError, ConnectionError, TimeoutError)
