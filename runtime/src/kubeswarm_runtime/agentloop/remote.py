"""Remote MCP servers (``spec.tools.mcpServers``) through the official MCP SDK client: their tools as ``<server>__<tool>``.

One connection per server, opened on the first task that needs it and owned by a task of its own (the SDK's
anyio scopes must be left by the task that entered them); a broken one is reopened on the next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from mcp.client.client import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from ..config import A2aAgentConfig, McpServerConfig
from ..delegation import CallOrigin
from ..providers.base import ToolDefinition
from .swarm import dumps
from .toolbox import Tool, ToolError, ToolSource, model_tool_name

log = logging.getLogger(__name__)

# After a failed connection, tasks in this window do without the server instead of each waiting for it.
RECONNECT_AFTER_SECONDS = 10.0


def header_values(config: McpServerConfig | A2aAgentConfig) -> dict[str, str]:
    """Literal headers and those read from the environment (where the operator put the Secrets' values)."""
    return config.headers | {name: os.environ.get(env, "") for name, env in config.header_env.items()}


def result_text(result: Any) -> str:
    """A CallToolResult as text for the model: its text blocks, else its structured content."""
    texts = [block.text for block in result.content if getattr(block, "type", None) == "text"]
    if texts:
        return "\n".join(texts)
    return dumps(result.structured_content) if result.structured_content is not None else ""


class McpServerTools(ToolSource):
    def __init__(self, config: McpServerConfig, tool_timeout_seconds: float) -> None:
        self.config = config
        self.headers = header_values(config)
        self.timeout = min(config.timeout_seconds, tool_timeout_seconds)
        self._client: Client | None = None
        self._tools: list[Tool] = []
        self._owner: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._lock = asyncio.Lock()
        self._failed_at = -RECONNECT_AFTER_SECONDS

    @property
    def secrets(self) -> list[str]:
        return [self.headers[name] for name in self.config.header_env]

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[Any]:
        if self.config.transport == "sse":
            async with sse_client(self.config.url, headers=self.headers, timeout=self.timeout) as streams:
                yield streams
            return
        # Our own HTTP client (for the headers), closed with the connection.
        async with (
            create_mcp_http_client(headers=self.headers, timeout=httpx2.Timeout(self.timeout, read=None)) as http,
            streamable_http_client(self.config.url, http_client=http) as streams,
        ):
            yield streams

    async def tools(self) -> list[Tool]:
        async with self._lock:
            if self._client is None and time.monotonic() - self._failed_at >= RECONNECT_AFTER_SECONDS:
                try:
                    async with asyncio.timeout(self.timeout):
                        await self._connect()
                except Exception as exc:  # any failure of a remote server leaves its tools out; the task goes on
                    self._failed_at = time.monotonic()
                    await self._disconnect()
                    log.warning("MCP server %s (%s) unavailable, its tools are left out: %r", self.config.name, self.config.url, exc)
            return self._tools

    async def _connect(self) -> None:
        connected: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._closing = asyncio.Event()
        self._owner = asyncio.create_task(self._own(connected), name=f"mcp-server-{self.config.name}")
        client = await connected
        listed = []
        cursor = None
        while True:
            page = await client.list_tools(cursor=cursor)
            listed += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        self._tools = [self._tool(t.name, t.description or "", t.input_schema) for t in listed]
        self._client = client

    async def _own(self, connected: asyncio.Future[Client]) -> None:
        """Hold the connection open until closed; its anyio scopes are entered and left in this task."""
        try:
            mode = "legacy" if self.config.transport == "sse" else "auto"
            async with Client(self._transport(), mode=mode, read_timeout_seconds=self.timeout) as client:
                connected.set_result(client)
                await self._closing.wait()
        except BaseException as exc:
            if not connected.done():
                connected.set_exception(exc if isinstance(exc, Exception) else ConnectionError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            log.info("MCP server %s connection ended: %r", self.config.name, exc)
        finally:
            self._client = None

    def _tool(self, name: str, description: str, schema: dict[str, Any]) -> Tool:
        async def run(arguments: dict[str, object], _origin: CallOrigin) -> str:
            client = self._client
            if client is None:
                raise ToolError(f"MCP server {self.config.name} is not connected; try again later")
            try:
                result = await client.call_tool(name, dict(arguments))
            except TimeoutError:
                raise
            except Exception as exc:
                if self._owner is None or self._owner.done():
                    self._client = None  # reconnect on the next task
                raise ToolError(f"MCP server {self.config.name}: {exc}") from None
            text = result_text(result)
            if result.is_error:
                raise ToolError(text or f"{name} failed")
            return text

        definition = ToolDefinition(model_tool_name(self.config.name, name), description, schema)
        return Tool(definition, run, self.timeout)

    async def _disconnect(self) -> None:
        self._closing.set()
        if self._owner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._owner), 5)
            if not self._owner.done():
                self._owner.cancel()
            self._owner = None
        self._client = None

    async def close(self) -> None:
        await self._disconnect()
