"""MCP methods over the tools, per protocol revision, and the plain JSON-RPC method set of ``/rpc``.

Knows protocol versions, envelopes and result shapes; knows nothing of HTTP
(transports map :class:`RpcError` codes to statuses).

Revisions: the handshake era (``initialize``; 2024-11-05 to 2025-11-25) and
the current one (2026-07-28: per-request ``_meta``, ``server/discover``,
``resultType`` on every result, cache hints on lists).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .. import __version__
from ..runtime import AgentRuntime
from .jsonrpc import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    TOOL_FAILED,
    UNSUPPORTED_PROTOCOL_VERSION,
    RpcError,
    RpcMessage,
    encode,
    error_reply,
    invalid_params,
    result_reply,
)
from .metering import OK, RequestMeter
from .tools import ToolFailure, ToolRegistry, ToolSpec

log = logging.getLogger(__name__)

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS = ("2026-07-28",)
SUPPORTED_VERSIONS = (*MODERN_VERSIONS, *HANDSHAKE_VERSIONS)
LATEST_HANDSHAKE_VERSION = HANDSHAKE_VERSIONS[-1]

PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
# Method -> the param mirrored in the Mcp-Name header (2026-07-28).
NAME_BEARING_METHODS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
# What clients send under the MCP specification (those this server lacks are answered -32601) and the /rpc
# names: the method label of kubeswarm_mcp_requests_total; any other name is metered as "unknown".
MCP_METHODS = (
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "server/discover",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
)
RPC_METHODS = ("list_tools", "call_tool")
CALL_METHODS = frozenset({"tools/call", "call_tool"})
# The tool list never changes while a process runs; clients may cache it this long.
TOOLS_TTL_MS = 300_000
_BASE64_SENTINEL = ("=?base64?", "?=")


def unsupported_version(requested: object) -> RpcError:
    return RpcError(
        UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        {"supported": list(SUPPORTED_VERSIONS), "requested": requested if isinstance(requested, str) else repr(requested)},
    )


def decode_header_value(value: str | None) -> str | None:
    """An ``Mcp-Name`` / ``Mcp-Param-*`` value, Base64 sentinel removed."""
    if value is not None and value.startswith(_BASE64_SENTINEL[0]) and value.endswith(_BASE64_SENTINEL[1]):
        payload = value[len(_BASE64_SENTINEL[0]) : -len(_BASE64_SENTINEL[1])]
        try:
            return base64.b64decode(payload, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise RpcError(HEADER_MISMATCH, "Header mismatch: Mcp-Name is not valid Base64") from None
    return value


def is_modern_request(message: RpcMessage) -> bool:
    """Whether a request carries the 2026-07-28 per-request envelope (rather than belonging to a session)."""
    meta = message.params.get("_meta")
    return isinstance(meta, dict) and PROTOCOL_VERSION_META in meta


def modern_version(message: RpcMessage, headers: Mapping[str, str] | None) -> str:
    """Check a 2026-07-28 request's envelope (and its mirrored HTTP headers); its protocol version."""
    meta = message.params.get("_meta")
    if not isinstance(meta, dict) or PROTOCOL_VERSION_META not in meta or CLIENT_CAPABILITIES_META not in meta:
        raise RpcError(
            INVALID_PARAMS, f"Invalid params: params._meta must carry {PROTOCOL_VERSION_META!r} and {CLIENT_CAPABILITIES_META!r}"
        )
    version = meta[PROTOCOL_VERSION_META]
    if headers is not None:
        if headers.get("mcp-protocol-version") != version:
            raise RpcError(HEADER_MISMATCH, "Header mismatch: MCP-Protocol-Version does not match params._meta's protocol version")
        if headers.get("mcp-method") != message.method:
            raise RpcError(HEADER_MISMATCH, "Header mismatch: Mcp-Method does not match the body's method")
        name_key = NAME_BEARING_METHODS.get(message.method)
        body_name = message.params.get(name_key) if name_key else None
        if body_name is not None and decode_header_value(headers.get("mcp-name")) != body_name:
            raise RpcError(HEADER_MISMATCH, f"Header mismatch: Mcp-Name does not match params.{name_key}")
    if version not in MODERN_VERSIONS:
        raise unsupported_version(version)
    return str(version)


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"page:{index}".encode()).decode()


class McpServer:
    """Answers MCP requests (the transports own sessions and streams) and ``/rpc`` calls."""

    def __init__(self, runtime: AgentRuntime, registry: ToolRegistry) -> None:
        self.runtime = runtime
        self.registry = registry
        config = runtime.config
        self.server_info = {"name": f"kubeswarm-{config.agent}", "title": f"kubeswarm agent {config.agent}", "version": __version__}
        self.capabilities: dict[str, Any] = {"tools": {"listChanged": False}}
        self.instructions = (
            f"Tools of the kubeswarm swarm {config.swarm!r} (namespace {config.namespace!r}), served by agent {config.agent!r}: "
            "find agents and their capabilities, hand them work as tasks or direct requests, message them, and share "
            "or read discoveries."
        )
        self._meta = {SERVER_INFO_META: self.server_info}
        # tools/list answers, built once per era (page index -> result).
        self._handshake_pages = [self._page(i, modern=False) for i in range(len(registry.pages))]
        self._modern_pages = [self._page(i, modern=True) for i in range(len(registry.pages))]
        self._page_of_cursor = {_cursor(i): i for i in range(1, len(registry.pages))}
        self.meter = RequestMeter(runtime.metrics.mcp_requests, (*MCP_METHODS, *RPC_METHODS, *registry.by_name))

    def _page(self, index: int, *, modern: bool) -> dict[str, Any]:
        page: dict[str, Any] = {"tools": self.registry.pages[index]}
        if index + 1 < len(self.registry.pages):
            page["nextCursor"] = _cursor(index + 1)
        if modern:
            page.update(resultType="complete", ttlMs=TOOLS_TTL_MS, cacheScope="public", _meta=self._meta)
        return page

    # -- handshake era

    def initialize(self, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The negotiated version and the InitializeResult."""
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise RpcError(INVALID_PARAMS, "Invalid params: protocolVersion: a string is required")
        version = requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE_VERSION
        result = {
            "protocolVersion": version,
            "capabilities": self.capabilities,
            "serverInfo": self.server_info,
            "instructions": self.instructions,
        }
        return version, result

    # -- requests of either era

    async def handle(self, message: RpcMessage, version: str) -> dict[str, Any]:
        """The result of one request under ``version``; RpcError for protocol errors."""
        modern = version in MODERN_VERSIONS
        method = message.method
        if method == "tools/call":
            result = await self.call_tool(message.params)
        elif method == "tools/list":
            return self.list_tools(message.params, modern=modern)
        elif method == "server/discover" and modern:
            return {
                "supportedVersions": list(SUPPORTED_VERSIONS),
                "capabilities": self.capabilities,
                "instructions": self.instructions,
                "resultType": "complete",
                "ttlMs": TOOLS_TTL_MS,
                "cacheScope": "public",
                "_meta": self._meta,
            }
        elif method == "ping" and not modern:
            return {}
        elif method == "initialize":
            raise RpcError(INVALID_PARAMS, "Invalid params: initialize starts a session; it is not valid inside one")
        else:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        if modern:
            result["resultType"] = "complete"
            result["_meta"] = self._meta
        return result

    def list_tools(self, params: Mapping[str, Any], *, modern: bool) -> dict[str, Any]:
        cursor = params.get("cursor")
        index = 0 if cursor is None else self._page_of_cursor.get(cursor) if isinstance(cursor, str) else None
        if index is None:
            raise RpcError(INVALID_PARAMS, "Invalid params: cursor: not a cursor this server returned")
        return (self._modern_pages if modern else self._handshake_pages)[index]

    def tool(self, name: object) -> ToolSpec[Any, Any]:
        tool = self.registry.find(name)
        if tool is None:
            raise RpcError(INVALID_PARAMS, f"Invalid params: name: unknown tool {name!r}")
        return tool

    async def call_tool(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A CallToolResult; the tool's failures (bad arguments included) are results with isError, for the model to read."""
        tool = self.tool(params.get("name"))
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "Invalid params: arguments: must be an object")
        try:
            structured = await tool.call(self.runtime, arguments)
        except ValidationError as exc:
            return _error_result(invalid_params(exc, prefix="arguments.").message)
        except ToolFailure as exc:
            return _error_result(f"{tool.name} failed: {exc}")
        except Exception:
            log.exception("tool %s failed", tool.name)
            return _error_result(f"{tool.name} failed unexpectedly; the agent's log has the details")
        return {"content": [{"type": "text", "text": encode(structured).decode()}], "structuredContent": structured, "isError": False}

    async def reply(self, message: RpcMessage, version: str | None) -> dict[str, Any]:
        """The JSON-RPC reply to a request under an MCP revision, or as a ``/rpc`` call (``version`` None); metered."""
        method = message.method
        try:
            result = await (self.rpc(message) if version is None else self.handle(message, version))
        except RpcError as exc:
            self.meter.count(method, exc.code)
            return error_reply(message.id, exc)
        except Exception:
            log.exception("%s failed", method)
            self.meter.count(method, INTERNAL_ERROR)
            return error_reply(message.id, RpcError(INTERNAL_ERROR, "Internal error"))
        # A tool result with isError is a failure of the tool, the same as /rpc's -31001 for a tool called by name.
        self.meter.count(method, TOOL_FAILED if method in CALL_METHODS and result.get("isError") else OK)
        return result_reply(message.id, result)

    # -- /rpc and /ws/mcp: MCP's tool methods plus each tool as a method of its own

    async def rpc(self, message: RpcMessage) -> Any:
        method = message.method
        if method in ("list_tools", "tools/list"):
            return {"tools": self.registry.definitions}
        if method in ("call_tool", "tools/call"):
            return await self.call_tool(message.params)
        tool = self.registry.find(method)
        if tool is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        try:
            return await tool.call(self.runtime, message.params)
        except ValidationError as exc:
            raise invalid_params(exc) from None
        except ToolFailure as exc:
            raise RpcError(TOOL_FAILED, f"{method} failed: {exc}") from None


def _error_result(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}
