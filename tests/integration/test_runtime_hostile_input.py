"""Hostile input at every door of an agent (issue 14): wrong types, batches and WebSocket floods, deep nesting."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.integration.test_mcp_support import initialize, mcp_agent, modern_call, post, rpc, session_headers
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", [["list_agents"], {"tool": "list_agents"}])
async def test_tools_call_with_a_non_string_name_is_invalid_params(nats_server: NatsServer, name: Any) -> None:
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        body, headers = modern_call("tools/call", {"name": "list_agents"})
        body["params"]["name"] = name
        status, reply = await post(http, agent.mcp, body, headers)
        assert status == 400 and reply["error"]["code"] == -32020  # Mcp-Name cannot match a non-string
        session_id = await initialize(http, agent.mcp)
        status, reply = await post(http, agent.mcp, rpc("tools/call", {"name": name}), session_headers(session_id))
        assert status == 200 and reply["error"]["code"] == -32602, reply
        status, reply = await post(http, agent.url + "/rpc", rpc("tools/call", {"name": name}))
        assert status == 200 and reply["error"]["code"] == -32602, reply


async def test_every_message_of_an_rpc_batch_counts_against_the_rate_limit(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url, rate_limit_per_second=0.01, rate_limit_burst=5) as agent, aiohttp.ClientSession() as http:
        url = agent.url + "/rpc"
        status, reply = await post(http, url, [rpc("list_tools", request_id=i) for i in range(6)])
        assert status == 200 and reply["error"]["code"] == -32600 and "at most 5" in reply["error"]["message"], reply
        status, reply = await post(http, url, [rpc("list_tools", request_id=i) for i in range(3)])
        assert status == 200 and len(reply) == 3
        # One token left: a batch of two is refused as a whole.
        status, _ = await post(http, url, [rpc("list_tools", request_id=i) for i in range(2)])
        assert status == 429


async def test_every_websocket_message_counts_against_the_rate_limit(nats_server: NatsServer) -> None:
    async with (
        mcp_agent(nats_server.url, rate_limit_per_second=0.01, rate_limit_burst=3) as agent,
        aiohttp.ClientSession() as http,
        http.ws_connect(agent.url + "/ws/mcp") as ws,  # the upgrade takes one token
    ):
        for request_id in (1, 2, 3):
            await ws.send_json(rpc("list_tools", request_id=request_id))
        replies = {reply["id"]: reply for reply in [await ws.receive_json(timeout=10) for _ in range(3)]}
        assert "result" in replies[1] and "result" in replies[2]
        assert replies[3]["error"]["code"] == -31002 and replies[3]["error"]["data"]["retryAfterSeconds"] >= 1
        await ws.send_json([rpc("list_tools", request_id=i) for i in range(4)])
        assert (await ws.receive_json(timeout=10))["error"]["code"] == -32600


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


async def test_deeply_nested_params_are_refused_at_every_door(nats_server: NatsServer) -> None:
    deep = {"capability": "echo", "input": nested(200)}
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        _, reply = await post(http, agent.url + "/rpc", rpc("create_task", deep))
        assert reply["error"]["code"] == -32602 and "deeper than 64 levels" in reply["error"]["message"], str(reply)[:300]
        body, headers = modern_call("tools/call", {"name": "create_task", "arguments": deep})
        status, reply = await post(http, agent.mcp, body, headers)
        assert status == 400 and reply["error"]["code"] == -32602, str(reply)[:300]
        async with http.ws_connect(agent.url + "/ws/mcp") as ws:
            await ws.send_json(rpc("share_discovery", {"discovery_type": "x", "content": nested(200)}))
            assert (await ws.receive_json(timeout=10))["error"]["code"] == -32602
        _, reply = await post(http, agent.url + "/rpc", rpc("list_tasks", {}))
        assert reply["result"]["tasks"] == []


async def test_a_record_that_cannot_be_read_back_is_skipped_by_listings(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        runtime = agent.runtime
        # Written past the doors (as an older version or another client could have): too deep to parse back.
        await runtime.swarm.tasks.create("nobody", nested(200), task_id="deep")
        await runtime.swarm.tasks.create("nobody", "fine", task_id="fine")
        await runtime.swarm.discoveries.share("x", nested(200))
        await runtime.swarm.discoveries.share("x", "fine")
        url = agent.url + "/rpc"
        for _ in range(2):
            _, reply = await post(http, url, rpc("list_tasks", {}))
            assert [task["id"] for task in reply["result"]["tasks"]] == ["fine"], str(reply)[:300]
            _, reply = await post(http, url, rpc("list_discoveries", {}))
            assert [d["content"] for d in reply["result"]["discoveries"]] == ["fine"], str(reply)[:300]
        skipped = runtime.metrics.unreadable_records
        assert skipped.labels("task")._value.get() == 2 and skipped.labels("discovery")._value.get() == 2
