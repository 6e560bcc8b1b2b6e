"""The official MCP SDK client against an agent: current protocol, 2025 sessions, and the legacy HTTP+SSE transport."""

from __future__ import annotations

from typing import Any

import pytest
from kubeswarm_runtime.presence import AgentInfo
from mcp.client.client import Client
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client

from tests.integration.test_mcp_support import LEGACY, MODERN, Agent, mcp_agent
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.integration

DESIGN_TOOLS = {
    "share_discovery",
    "list_discoveries",
    "list_agents",
    "get_agent_info",
    "send_message",
    "request_capability",
    "create_task",
    "get_task",
    "list_tasks",
    "cancel_task",
    "broadcast",
    "list_dead_letters",
    "get_dead_letter",
    "replay_dead_letter",
    "purge_dead_letters",
}


async def call_every_tool(client: Client, agent: Agent) -> None:
    """Call each tool with good arguments; the SDK checks each structuredContent against the tool's outputSchema."""

    async def ok(name: str, arguments: dict[str, Any]) -> Any:
        result = await client.call_tool(name, arguments)
        assert not result.is_error, (name, result.content)
        assert isinstance(result.structured_content, dict)
        return result.structured_content

    shared = await ok("share_discovery", {"discovery_type": "pattern", "content": "queues back up at 5pm", "confidence": 0.8})
    assert shared["discovery"]["seq"] >= 1
    listed = await ok("list_discoveries", {"discovery_type": "pattern"})
    assert listed["discoveries"][-1]["content"] == "queues back up at 5pm"
    replica = agent.runtime.config.replica_id
    assert replica in [a["id"] for a in (await ok("list_agents", {"capability": "echo"}))["agents"]]
    own = (await ok("get_agent_info", {}))["agent"]
    # Built as JSON data, not through AgentInfo: it must be what AgentInfo would give, field for field, in order.
    expected = agent.runtime.info().model_dump(mode="json")
    assert list(own) == list(expected) and {**own, "last_seen": 0} == {**expected, "last_seen": 0}
    assert AgentInfo.model_validate(own).id == replica
    assert (await ok("get_agent_info", {"agent_id": replica}))["agent"]["agent"] == "agent"
    answer = await ok("send_message", {"to": "agent", "kind": "query", "body": "status?", "timeout_seconds": 10})
    assert answer["response"]["echo"] == "status?"
    assert (await ok("send_message", {"to": "agent", "body": "carry on"}))["message_id"]
    assert (await ok("request_capability", {"capability": "echo", "input": "hi"}))["result"]["echo"] == "hi"
    task = (await ok("create_task", {"capability": "echo", "input": "job", "wait_seconds": 20}))["task"]
    assert task["state"] == "succeeded"
    assert (await ok("get_task", {"task_id": task["id"]}))["task"]["result"]["echo"] == "job"
    assert task["id"] in [t["id"] for t in (await ok("list_tasks", {"capability": "echo"}))["tasks"]]
    assert (await ok("cancel_task", {"task_id": task["id"]}))["task"]["state"] == "succeeded"  # finished: unchanged
    assert (await ok("broadcast", {"body": "hello all"}))["message_id"]


async def check_tool_errors(client: Client) -> None:
    missing = await client.call_tool("get_task", {"task_id": "no-such-task"})
    assert missing.is_error and "no-such-task" in missing.content[0].text  # type: ignore[union-attr]
    bad = await client.call_tool("share_discovery", {"content": "no type"})
    assert bad.is_error and "discovery_type" in bad.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize(("mode", "version"), [("auto", MODERN), (MODERN, MODERN), ("legacy", LEGACY)])
async def test_sdk_client_discovers_lists_and_calls_every_tool(nats_server: NatsServer, mode: str, version: str) -> None:
    async with mcp_agent(nats_server.url) as agent, Client(agent.mcp, mode=mode) as client:
        assert client.protocol_version == version
        tools = await client.list_tools()
        assert {t.name for t in tools.tools} == DESIGN_TOOLS
        for tool in tools.tools:
            assert tool.description and tool.input_schema["type"] == "object" and tool.output_schema is not None
        await call_every_tool(client, agent)
        await check_tool_errors(client)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sdk_client_pages_through_tools(nats_server: NatsServer, mode: str) -> None:
    async with mcp_agent(nats_server.url, tools_page_size=4) as agent, Client(agent.mcp, mode=mode) as client:
        names: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await client.list_tools(cursor=cursor)
            names += [t.name for t in page.tools]
            pages += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert pages == 4 and set(names) == DESIGN_TOOLS


async def test_sdk_legacy_sse_client(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, sse_client(agent.url + "/sse") as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        assert init.protocol_version in ("2024-11-05", LEGACY)
        assert {t.name for t in (await session.list_tools()).tools} == DESIGN_TOOLS
        result = await session.call_tool("share_discovery", {"discovery_type": "legacy", "content": "over HTTP+SSE"})
        assert not result.is_error and result.structured_content is not None
        assert result.structured_content["discovery"]["type"] == "legacy"
        failed = await session.call_tool("cancel_task", {"task_id": "nope"})
        assert failed.is_error
