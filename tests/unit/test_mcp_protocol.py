"""The MCP layers without a network: JSON-RPC checks, result shapes per protocol revision, tool schemas, rate limits."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from kubeswarm_runtime.config import RuntimeConfig
from kubeswarm_runtime.mcp.jsonrpc import RpcError, check, decode, invalid_params
from kubeswarm_runtime.mcp.protocol import HANDSHAKE_VERSIONS, MODERN_VERSIONS, McpServer, decode_header_value, modern_version
from kubeswarm_runtime.mcp.security import RateLimiter
from kubeswarm_runtime.mcp.tools import SWARM_TOOLS, ShareDiscoveryInput, ToolRegistry
from kubeswarm_runtime.runtime import AgentRuntime
from mcp_types.methods import validate_server_result
from pydantic import ValidationError

pytestmark = pytest.mark.unit

MODERN = MODERN_VERSIONS[0]


def server(page_size: int = 50) -> McpServer:
    # Not started: enough for everything but running a tool.
    runtime = AgentRuntime(RuntimeConfig(agent="unit", replica_id="unit-1"))
    return McpServer(runtime, ToolRegistry(page_size=page_size))


def modern_message(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**(params or {}), "_meta": meta}}


@pytest.mark.parametrize(
    ("obj", "code"),
    [
        ([], -32600),
        ("text", -32600),
        ({"jsonrpc": "2.0", "method": "x", "id": 1.5}, -32600),
        ({"jsonrpc": "2.0", "method": "x", "id": True}, -32600),
        ({"jsonrpc": "2.1", "method": "x", "id": 1}, -32600),
        ({"jsonrpc": "2.0", "method": "", "id": 1}, -32600),
        ({"jsonrpc": "2.0", "method": "x", "params": [1], "id": 1}, -32602),
    ],
)
def test_malformed_messages_get_the_right_error(obj: Any, code: int) -> None:
    with pytest.raises(RpcError) as caught:
        check(obj)
    assert caught.value.code == code


def test_messages_requests_notifications_and_responses() -> None:
    assert check({"jsonrpc": "2.0", "method": "m", "id": "a"}).id == "a"
    assert check({"jsonrpc": "2.0", "method": "m"}).is_notification
    assert check({"jsonrpc": "2.0", "id": 3, "result": {}}).is_response
    with pytest.raises(RpcError) as caught:
        decode(b"{")
    assert caught.value.code == -32700


@pytest.mark.parametrize("depth", [63, 64, 65, 200])
def test_nesting_is_checked_the_same_with_or_without_the_body(depth: int) -> None:
    # The body lets a message with few brackets skip the walk; the verdict must not change at the limit.
    inner: Any = 1
    for _ in range(depth):
        inner = [inner]
    obj = {"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"v": inner}}
    body = orjson.dumps(obj)
    verdicts = []
    for given in (None, body):
        try:
            check(decode(body), given)
            verdicts.append("ok")
        except RpcError as exc:
            verdicts.append(str(exc.code))
    assert verdicts[0] == verdicts[1] == ("ok" if depth < 64 else "-32602")


def test_invalid_params_names_each_field() -> None:
    with pytest.raises(ValidationError) as caught:
        ShareDiscoveryInput.model_validate({"confidence": 3, "surprise": 1})
    error = invalid_params(caught.value)
    assert error.code == -32602
    assert set(error.data["fields"]) == {"discovery_type", "content", "confidence", "surprise"}


@pytest.mark.parametrize("version", [*HANDSHAKE_VERSIONS, MODERN])
def test_tool_pages_validate_against_each_revision(version: str) -> None:
    mcp = server(page_size=4)
    message = check({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    names: list[str] = []
    page = asyncio.run(mcp.handle(message, version))
    while True:
        validate_server_result("tools/list", version, page)
        names += [tool["name"] for tool in page["tools"]]
        if "nextCursor" not in page:
            break
        following = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"cursor": page["nextCursor"]}}
        page = asyncio.run(mcp.handle(check(following), version))
    assert names == [tool.name for tool in SWARM_TOOLS]
    with pytest.raises(RpcError) as caught:
        mcp.list_tools({"cursor": "forged"}, modern=False)
    assert caught.value.code == -32602


def test_initialize_and_discover_results_validate() -> None:
    mcp = server()
    for requested, expected in (("2025-06-18", "2025-06-18"), ("2024-11-05", "2024-11-05"), ("1999-01-01", "2025-11-25")):
        version, result = mcp.initialize({"protocolVersion": requested, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})
        assert version == expected
        validate_server_result("initialize", version, result)
    discovered = asyncio.run(mcp.handle(check(modern_message("server/discover")), MODERN))
    validate_server_result("server/discover", MODERN, discovered)
    assert MODERN in discovered["supportedVersions"] and "2025-11-25" in discovered["supportedVersions"]


def test_tool_call_results_validate_and_report_failures_as_results() -> None:
    mcp = server()
    for version in ("2025-06-18", MODERN):
        # The runtime is not connected: the tool reports it, as a result the model can read.
        not_ready = asyncio.run(mcp.handle(check(modern_message("tools/call", {"name": "list_agents"})), version))
        validate_server_result("tools/call", version, not_ready)
        assert not_ready["isError"]
        bad_args = asyncio.run(mcp.handle(check(modern_message("tools/call", {"name": "get_task", "arguments": {}})), version))
        assert bad_args["isError"] and "task_id" in bad_args["content"][0]["text"]
        # No arguments at all: checked as {} is (each tool's input validated once for it), the model's rules included.
        none_given = asyncio.run(mcp.handle(check(modern_message("tools/call", {"name": "purge_dead_letters"})), version))
        assert none_given["isError"] and "exactly one of task_id" in none_given["content"][0]["text"]
    with pytest.raises(RpcError) as caught:
        asyncio.run(mcp.handle(check(modern_message("tools/call", {"name": "no_such_tool"})), MODERN))
    assert caught.value.code == -32602


def test_tool_schemas_are_objects_with_descriptions() -> None:
    for tool in SWARM_TOOLS:
        definition = tool.definition
        assert definition["inputSchema"]["type"] == "object" and definition["inputSchema"]["additionalProperties"] is False
        assert definition["outputSchema"]["type"] == "object"
        assert len(definition["description"]) > 40
        for name, prop in definition["inputSchema"]["properties"].items():
            assert "description" in prop, (tool.name, name)


def test_modern_envelope_and_headers() -> None:
    message = check(modern_message("tools/call", {"name": "get_task"}))
    headers = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "=?base64?Z2V0X3Rhc2s=?="}
    assert modern_version(message, headers) == MODERN
    for wrong in ({"mcp-method": "tools/list"}, {"mcp-name": "other"}, {"mcp-protocol-version": "2025-11-25"}):
        with pytest.raises(RpcError) as caught:
            modern_version(message, headers | wrong)
        assert caught.value.code == -32020
    assert decode_header_value("plain") == "plain"
    with pytest.raises(RpcError):
        decode_header_value("=?base64?***?=")


def test_rate_limiter_bursts_then_asks_to_wait() -> None:
    limiter = RateLimiter(rate=1.0, burst=3)
    assert [limiter.wait_seconds("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert 0 < limiter.wait_seconds("a") <= 1.0
    assert limiter.wait_seconds("b") == 0.0  # per caller
    assert RateLimiter(rate=0, burst=1).wait_seconds("a") == 0.0  # off
