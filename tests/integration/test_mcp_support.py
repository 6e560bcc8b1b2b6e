"""Helpers of the MCP tests (no tests here): an agent serving MCP in this process, request builders, a raw POST, a gated handler."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from kubeswarm_runtime.app import build_app
from kubeswarm_runtime.mcp import serve_mcp
from kubeswarm_runtime.providers import TaskContext
from kubeswarm_runtime.providers.echo import EchoHandler
from kubeswarm_runtime.runtime import AgentRuntime

from tests.integration.runtime_helpers import agent_config, unique_prefix
from tests.testbed.procs import free_port

MODERN = "2026-07-28"
LEGACY = "2025-11-25"


class GatedHandler(EchoHandler):
    """Echo, but capability ``gated`` waits until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def handle(self, ctx: TaskContext) -> Any:
        if ctx.capability == "gated":
            self.entered.set()
            await self.gate.wait()
        return await super().handle(ctx)


@dataclass
class Agent:
    runtime: AgentRuntime
    url: str  # http://127.0.0.1:<port>
    handler: GatedHandler

    @property
    def mcp(self) -> str:
        return self.url + "/mcp"


@asynccontextmanager
async def mcp_agent(nats_url: str, *, prefix: str | None = None, fields: dict[str, Any] | None = None, **mcp: Any) -> AsyncIterator[Agent]:
    """One agent (capabilities echo, gated) serving the MCP surface on a free port; rate limit off unless given.

    ``fields``: other settings of the runtime's configuration (e.g. triggers)."""
    config = agent_config(
        nats_url,
        prefix or unique_prefix(),
        "agent",
        ["echo", "gated"],
        mcp={"rate_limit_per_second": 0, "keepalive_seconds": 0.2, **mcp},
        **(fields or {}),
    )
    handler = GatedHandler()
    runtime = AgentRuntime(config, handler=handler)
    await runtime.start()
    app = build_app(runtime)
    serve_mcp(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Agent(runtime, f"http://127.0.0.1:{port}", handler)
    finally:
        handler.gate.set()
        await runner.cleanup()
        await runtime.stop()


def modern_call(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request body and its mirrored headers."""
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**(params or {}), "_meta": meta}}
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method, "Accept": "application/json, text/event-stream"}
    if params and "name" in params:
        headers["Mcp-Name"] = params["name"]
    return body, headers


async def post(http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url, data=data, headers={"Content-Type": "application/json", **(headers or {})}) as response:
        text = await response.text()
        return response.status, json.loads(text) if text and response.content_type == "application/json" else text


def rpc(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


async def initialize(http: aiohttp.ClientSession, url: str, version: str = LEGACY) -> str:
    """A 2025 session on ``url`` (…/mcp); its id."""
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
    async with http.post(url, json=rpc("initialize", params), headers={"Accept": "application/json, text/event-stream"}) as response:
        assert response.status == 200, await response.text()
        session_id = response.headers["Mcp-Session-Id"]
    notify = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    async with http.post(url, json=notify, headers=session_headers(session_id)) as response:
        assert response.status == 202
    return session_id


def session_headers(session_id: str, version: str = LEGACY) -> dict[str, str]:
    return {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": version, "Accept": "application/json, text/event-stream"}


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, str]]:
    """Parsed SSE events (id, event, data, retry) of a response; comments are skipped."""
    event: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if "data" in event:  # as browsers do: an event without data is not dispatched
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")


def data_of(event: dict[str, str]) -> Any:
    return json.loads(event["data"])
