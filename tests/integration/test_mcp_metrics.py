"""kubeswarm_mcp_requests_total: one count per JSON-RPC request on every transport, with method, outcome and code.

Each check compares every series of the counter before and after a few requests: exactly the
expected label sets moved, each by the expected amount, and nothing else.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubeswarm_runtime.app import build_metrics_app
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_mcp_support import Agent, data_of, initialize, mcp_agent, modern_call, rpc, session_headers, sse_events
from tests.testbed.nats import NatsServer
from tests.testbed.procs import free_port

pytestmark = pytest.mark.integration

Series = tuple[str, str, str]  # (method, outcome, code)
UNKNOWN_TASK = {"task_id": "no-such-task"}


def requests_counted(agent: Agent) -> Counter[Series]:
    counted: Counter[Series] = Counter()
    for family in agent.runtime.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "kubeswarm_mcp_requests_total":
                counted[sample.labels["method"], sample.labels["outcome"], sample.labels["code"]] = int(sample.value)
    return counted


class Moves:
    """What the counter did since the last look."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.seen = requests_counted(agent)

    def since(self) -> dict[Series, int]:
        now = requests_counted(self.agent)
        moved = {series: now[series] - self.seen[series] for series in now if now[series] != self.seen[series]}
        self.seen = now
        return moved


async def post(http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url, data=data, headers={"Content-Type": "application/json", **(headers or {})}) as response:
        text = await response.text()
        return response.status, json.loads(text) if text and response.content_type == "application/json" else text


def call(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"name": tool, "arguments": arguments}


async def test_mcp_current_revision_and_sessions(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        moves = Moves(agent)
        body, headers = modern_call("tools/call", call("get_agent_info", {}))
        status, reply = await post(http, agent.mcp, body, headers)
        assert status == 200 and reply["result"]["isError"] is False
        body, headers = modern_call("tools/call", call("get_task", UNKNOWN_TASK))
        status, reply = await post(http, agent.mcp, body, headers)
        assert status == 200 and reply["result"]["isError"] is True
        body, headers = modern_call("tools/call", call("no_such_tool", {}))
        status, reply = await post(http, agent.mcp, body, headers)
        assert reply["error"]["code"] == -32602
        body, headers = modern_call("made/up")
        status, _ = await post(http, agent.mcp, body, headers)
        assert status == 404
        status, _ = await post(http, agent.mcp, b"{not json")
        assert status == 400
        assert moves.since() == {
            ("tools/call", "ok", ""): 1,
            ("tools/call", "error", "-31001"): 1,
            ("tools/call", "error", "-32602"): 1,
            ("unknown", "error", "-32601"): 1,
            ("none", "error", "-32700"): 1,
        }

        # A slow tool answered over SSE is counted once too.
        body, headers = modern_call("tools/call", call("request_capability", {"capability": "echo", "input": 1}))
        async with http.post(agent.mcp, json=body, headers=headers) as response:
            assert response.content_type == "text/event-stream"
            events = [event async for event in sse_events(response)]
        assert data_of(events[-1])["result"]["isError"] is False
        assert moves.since() == {("tools/call", "ok", ""): 1}

        session_id = await initialize(http, agent.mcp)
        status, _ = await post(http, agent.mcp, rpc("tools/list"), session_headers(session_id))
        assert status == 200
        status, _ = await post(http, agent.mcp, rpc("tools/list"), session_headers("0" * 32))
        assert status == 404
        status, _ = await post(http, agent.mcp, rpc("tools/list"))
        assert status == 400
        assert moves.since() == {
            ("initialize", "ok", ""): 1,
            ("notifications/initialized", "ok", ""): 1,
            ("tools/list", "ok", ""): 1,
            ("tools/list", "error", "404"): 1,
            ("tools/list", "error", "-32600"): 1,
        }


async def test_legacy_messages(nats_server: NatsServer) -> None:
    async with (
        mcp_agent(nats_server.url) as agent,
        aiohttp.ClientSession() as http,
        http.get(agent.url + "/sse", headers={"Accept": "text/event-stream"}) as stream,
    ):
        moves = Moves(agent)
        events = sse_events(stream)
        endpoint = agent.url + (await anext(events))["data"]
        params = {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
        # Each answer arrives on the stream after it was counted.
        for request_id, (method, request_params) in enumerate(
            [("initialize", params), ("tools/call", call("list_agents", {})), ("tools/call", call("get_task", UNKNOWN_TASK))]
        ):
            status, _ = await post(http, endpoint, rpc(method, request_params, request_id))
            assert status == 202
            assert data_of(await anext(events))["id"] == request_id
        status, _ = await post(http, endpoint, {"jsonrpc": "2.0", "id": 9})
        assert status == 400
        assert moves.since() == {
            ("initialize", "ok", ""): 1,
            ("tools/call", "ok", ""): 1,
            ("tools/call", "error", "-31001"): 1,
            ("none", "error", "-32600"): 1,
        }


async def test_rpc_and_websocket(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        moves = Moves(agent)
        url = agent.url + "/rpc"
        status, reply = await post(http, url, rpc("list_tools"))
        assert status == 200 and reply["result"]["tools"]
        status, reply = await post(http, url, rpc("get_task", UNKNOWN_TASK))
        assert reply["error"]["code"] == -31001
        status, reply = await post(http, url, rpc("call_tool", call("get_task", UNKNOWN_TASK)))
        assert reply["result"]["isError"] is True
        status, reply = await post(http, url, [rpc("get_agent_info", {}, 1), rpc("nope", None, 2), {"jsonrpc": "2.0", "id": 3}])
        assert [r.get("error", {}).get("code") for r in reply] == [None, -32601, -32600]
        status, reply = await post(http, url, [])
        assert reply["error"]["code"] == -32600
        assert moves.since() == {
            ("list_tools", "ok", ""): 1,
            ("get_task", "error", "-31001"): 1,
            ("call_tool", "error", "-31001"): 1,
            ("get_agent_info", "ok", ""): 1,
            ("unknown", "error", "-32601"): 1,
            ("none", "error", "-32600"): 2,
        }

        async with http.ws_connect(agent.url + "/ws/mcp") as ws:
            await ws.send_json(rpc("tools/list"))
            assert (await ws.receive_json(timeout=10))["result"]["tools"]
            await ws.send_json(rpc("get_task", UNKNOWN_TASK))
            assert (await ws.receive_json(timeout=10))["error"]["code"] == -31001
            await ws.send_str("{broken")
            assert (await ws.receive_json(timeout=10))["error"]["code"] == -32700
        assert moves.since() == {("tools/list", "ok", ""): 1, ("get_task", "error", "-31001"): 1, ("none", "error", "-32700"): 1}


async def test_http_refusals(nats_server: NatsServer) -> None:
    limits: dict[str, Any] = {
        "auth": "jwt",
        "jwt_key": "a-per-swarm-signing-key-of-32-bytes!",
        "allowed_origins": [],
        "max_request_bytes": 1024,
        "rate_limit_per_second": 0.001,
        "rate_limit_burst": 1,
        "max_streams": 1,
    }
    async with mcp_agent(nats_server.url, **limits) as agent, aiohttp.ClientSession() as http:
        moves = Moves(agent)
        body, headers = modern_call("tools/list")
        status, _ = await post(http, agent.mcp, body, headers)
        assert status == 401
        status, _ = await post(http, agent.url + "/rpc", rpc("list_tools"), {"Origin": "https://elsewhere.example"})
        assert status == 403
        async with http.get(agent.url + "/ws/mcp", headers={"Connection": "Upgrade", "Upgrade": "websocket"}) as response:
            assert response.status == 401
        # Not JSON-RPC requests: refused, but not counted.
        async with http.delete(agent.mcp) as response:
            assert response.status == 401
        async with http.get(agent.url + "/sse") as response:
            assert response.status == 401
        assert moves.since() == {("none", "error", "401"): 2, ("none", "error", "403"): 1}

    async with mcp_agent(nats_server.url, **{**limits, "auth": "none"}) as agent, aiohttp.ClientSession() as http:
        moves = Moves(agent)
        status, _ = await post(http, agent.url + "/rpc", rpc("list_tools") | {"pad": "x" * 2000})
        assert status == 413  # the first request took the one token of the burst
        status, _ = await post(http, agent.url + "/rpc", rpc("list_tools"))
        assert status == 429
        assert moves.since() == {("none", "error", "413"): 1, ("none", "error", "429"): 1}

    async with mcp_agent(nats_server.url, max_streams=1) as agent, aiohttp.ClientSession() as http:
        moves = Moves(agent)
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket"}
        async with http.ws_connect(agent.url + "/ws/mcp"), http.get(agent.url + "/ws/mcp", headers=upgrade) as response:
            assert response.status == 503  # the one stream slot is taken
        assert moves.since() == {("none", "error", "503"): 1}


@asynccontextmanager
async def metrics_endpoint(agent: Agent) -> AsyncIterator[str]:
    """The runtime's metrics app (what run_agent serves on the metrics port), on a free port."""
    runner = web.AppRunner(build_metrics_app(agent.runtime.metrics), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        await runner.cleanup()


async def test_the_metrics_port_exports_the_counter(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, metrics_endpoint(agent) as url, aiohttp.ClientSession() as http:
        await post(http, agent.url + "/rpc", rpc("list_tools"))
        await post(http, agent.url + "/rpc", rpc("nope"))
        async with http.get(url) as response:
            text = await response.text()
        samples = {
            (s.labels["method"], s.labels["outcome"], s.labels["code"]): s.value
            for family in text_string_to_metric_families(text)
            if family.name == "kubeswarm_mcp_requests"
            for s in family.samples
            if s.name == "kubeswarm_mcp_requests_total"
        }
        assert samples == {("list_tools", "ok", ""): 1.0, ("unknown", "error", "-32601"): 1.0}
