"""The agent's HTTP surface, raw: every error path, sessions, resumption, /rpc, /ws/mcp, /sse/discoveries, limits."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubeswarm_runtime.app import build_app
from kubeswarm_runtime.config import RuntimeConfig
from kubeswarm_runtime.mcp import serve_mcp
from kubeswarm_runtime.mcp.tools import SWARM_TOOLS
from kubeswarm_runtime.runtime import AgentRuntime
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.integration.runtime_helpers import wait_for
from tests.integration.test_mcp_support import (
    LEGACY,
    MODERN,
    data_of,
    initialize,
    mcp_agent,
    modern_call,
    post,
    rpc,
    session_headers,
    sse_events,
)
from tests.testbed.nats import NatsServer
from tests.testbed.procs import free_port

pytestmark = pytest.mark.integration


# -- /mcp, current revision


async def test_mcp_modern_errors(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        status, reply = await post(http, agent.mcp, b"{not json")
        assert status == 400 and reply["error"]["code"] == -32700 and reply["id"] is None
        status, reply = await post(http, agent.mcp, [rpc("tools/list")])
        assert status == 400 and reply["error"]["code"] == -32600
        status, reply = await post(http, agent.mcp, {"jsonrpc": "1.0", "id": 3, "method": "tools/list"})
        assert status == 400 and reply["error"]["code"] == -32600 and reply["id"] == 3

        body, headers = modern_call("no/such/method")
        status, reply = await post(http, agent.mcp, body, headers)
        assert status == 404 and reply["error"]["code"] == -32601
        body, headers = modern_call("tools/call", {"arguments": {}})
        status, reply = await post(http, agent.mcp, body, headers)
        assert reply["error"]["code"] == -32602 and "name" in reply["error"]["message"]

        body, headers = modern_call("tools/list")
        status, reply = await post(http, agent.mcp, body, {**headers, "Mcp-Method": "tools/call"})
        assert status == 400 and reply["error"]["code"] == -32020
        body, headers = modern_call("tools/call", {"name": "get_agent_info", "arguments": {}})
        status, reply = await post(http, agent.mcp, body, {**headers, "Mcp-Name": "list_agents"})
        assert status == 400 and reply["error"]["code"] == -32020
        encoded = "=?base64?" + base64.b64encode(b"get_agent_info").decode() + "?="
        status, reply = await post(http, agent.mcp, body, {**headers, "Mcp-Name": encoded})
        assert status == 200 and reply["result"]["resultType"] == "complete"

        body, headers = modern_call("tools/list")
        body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "1900-01-01"
        status, reply = await post(http, agent.mcp, body, {**headers, "MCP-Protocol-Version": "1900-01-01"})
        assert status == 400 and reply["error"]["code"] == -32022
        assert MODERN in reply["error"]["data"]["supported"] and reply["error"]["data"]["requested"] == "1900-01-01"
        status, reply = await post(http, agent.mcp, rpc("tools/list"), {"MCP-Protocol-Version": "1900-01-01"})
        assert status == 400 and reply["error"]["code"] == -32022

        status, reply = await post(http, agent.mcp, rpc("tools/list"), {"MCP-Protocol-Version": LEGACY})
        assert status == 400 and "Mcp-Session-Id" in reply["error"]["message"]
        async with http.get(agent.mcp, headers={"MCP-Protocol-Version": MODERN, "Accept": "text/event-stream"}) as response:
            assert response.status == 405


async def test_mcp_origin_check(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url, allowed_origins=["https://console.example"]) as agent, aiohttp.ClientSession() as http:
        body, headers = modern_call("tools/list")
        status, _ = await post(http, agent.mcp, body, {**headers, "Origin": "https://evil.example"})
        assert status == 403
        for origin in ("https://console.example", agent.url):
            status, reply = await post(http, agent.mcp, body, {**headers, "Origin": origin})
            assert status == 200 and reply["result"]["tools"]
        status, _ = await post(http, agent.url + "/rpc", rpc("list_tools"), {"Origin": "null"})
        assert status == 403


async def test_mcp_slow_tool_streams_over_sse_and_json_when_asked(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        body, headers = modern_call("tools/call", {"name": "request_capability", "arguments": {"capability": "echo", "input": 1}})
        async with http.post(agent.mcp, json=body, headers=headers) as response:
            assert response.content_type == "text/event-stream" and response.headers["X-Accel-Buffering"] == "no"
            events = [event async for event in sse_events(response)]
        reply = data_of(events[-1])
        assert reply["id"] == 1 and reply["result"]["structuredContent"]["result"]["echo"] == 1
        status, reply = await post(http, agent.mcp, body, {**headers, "Accept": "application/json"})
        assert status == 200 and reply["result"]["structuredContent"]["result"]["echo"] == 1


# -- /mcp, 2025 sessions


async def test_mcp_sessions_lifecycle(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        session_id = await initialize(http, agent.mcp)
        status, reply = await post(http, agent.mcp, rpc("tools/list"), session_headers(session_id))
        assert status == 200 and len(reply["result"]["tools"]) == len(SWARM_TOOLS) and "resultType" not in reply["result"]
        status, reply = await post(http, agent.mcp, rpc("ping", request_id=7), session_headers(session_id))
        assert status == 200 and reply == {"jsonrpc": "2.0", "id": 7, "result": {}}
        status, _ = await post(http, agent.mcp, rpc("tools/list"), session_headers(session_id, version="1900-01-01"))
        assert status == 400
        status, _ = await post(http, agent.mcp, rpc("tools/list"), session_headers("0" * 32))
        assert status == 404
        status, _ = await post(http, agent.mcp, rpc("tools/list"), session_headers("not-even-an-id"))
        assert status == 404
        async with http.get(agent.mcp, headers={"Accept": "text/event-stream"}) as response:
            assert response.status == 400  # GET without a session
        async with http.delete(agent.mcp, headers=session_headers(session_id)) as response:
            assert response.status == 204
        status, _ = await post(http, agent.mcp, rpc("tools/list"), session_headers(session_id))
        assert status == 404


async def test_mcp_session_expires(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url, session_ttl_seconds=1) as agent, aiohttp.ClientSession() as http:
        session_id = await initialize(http, agent.mcp)

        async def expired() -> bool:
            async with http.get(agent.url + "/healthz"):
                pass  # (no use of the session meanwhile: it would keep it alive)
            record = await agent.runtime.swarm.conn.js.key_value(agent.runtime.swarm.names.mcp_sessions_bucket)
            try:
                await record.get(session_id)
            except Exception:
                return True
            return False

        await wait_for(expired, timeout=30, what="the session to expire")
        status, _ = await post(http, agent.mcp, rpc("tools/list"), session_headers(session_id))
        assert status == 404


async def test_mcp_resumes_a_dropped_stream_without_losing_the_reply(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        session_id = await initialize(http, agent.mcp)
        call = rpc("tools/call", {"name": "request_capability", "arguments": {"capability": "gated", "input": "late"}}, request_id=9)
        async with http.post(agent.mcp, json=call, headers=session_headers(session_id)) as response:
            assert response.content_type == "text/event-stream"
            priming = await anext(sse_events(response))
            assert priming["data"] == "" and priming["retry"]
        # The connection is gone before the answer exists; the work goes on.
        await asyncio.wait_for(agent.handler.entered.wait(), 20)
        agent.handler.gate.set()
        resume = {**session_headers(session_id), "Accept": "text/event-stream", "Last-Event-ID": priming["id"]}
        async with http.get(agent.mcp, headers=resume) as response:
            assert response.status == 200
            events = [event async for event in sse_events(response)]
        reply = data_of(events[-1])
        assert reply["id"] == 9 and reply["result"]["structuredContent"]["result"]["echo"] == "late"
        assert events[-1]["id"].split("-")[0] == priming["id"].split("-")[0]
        async with http.get(agent.mcp, headers={**resume, "Last-Event-ID": "garbage"}) as response:
            assert response.status == 400


# -- /rpc


async def test_rpc_methods_and_errors(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        url = agent.url + "/rpc"
        status, reply = await post(http, url, rpc("list_tools"))
        assert status == 200 and len(reply["result"]["tools"]) == len(SWARM_TOOLS)
        params = {"agent_id": "test-agent", "discovery_type": "pattern", "content": "Test discovery", "confidence": 0.95}
        status, reply = await post(http, url, rpc("share_discovery", params, request_id=2))
        assert reply["id"] == 2 and reply["result"]["discovery"]["agent"] == "test-agent"
        assert reply["result"]["discovery"]["confidence"] == 0.95

        _, reply = await post(http, url, b'{"jsonrpc": "2.0", "method": ')
        assert reply["error"]["code"] == -32700
        _, reply = await post(http, url, {"jsonrpc": "2.0", "id": 4, "method": 12})
        assert reply["error"]["code"] == -32600 and reply["id"] == 4
        _, reply = await post(http, url, rpc("no_such_method"))
        assert reply["error"]["code"] == -32601
        _, reply = await post(http, url, rpc("share_discovery", {"content": "x", "confidence": 7}))
        assert reply["error"]["code"] == -32602
        assert set(reply["error"]["data"]["fields"]) == {"discovery_type", "confidence"}
        _, reply = await post(http, url, {"jsonrpc": "2.0", "id": 5, "method": "list_tools", "params": [1]})
        assert reply["error"]["code"] == -32602
        _, reply = await post(http, url, rpc("get_task", {"task_id": "nope"}))
        assert reply["error"]["code"] == -31001 and "nope" in reply["error"]["message"]

        batch = [rpc("list_tools", request_id=1), {"jsonrpc": "2.0", "method": "broadcast", "params": {"body": 1}}, 3]
        _, replies = await post(http, url, batch)
        assert [r.get("id") for r in replies] == [1, None] and replies[1]["error"]["code"] == -32600
        _, reply = await post(http, url, [])
        assert reply["error"]["code"] == -32600
        status, _ = await post(http, url, {"jsonrpc": "2.0", "method": "broadcast", "params": {"body": "note"}})
        assert status == 204


# -- /sse/discoveries


async def test_discovery_stream_filters_keepalive_and_resumption(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        share = agent.runtime.swarm.discoveries.share
        await share("pattern", "before anyone listened", agent="a1")  # replayed by default, as the seed's curl expects
        url = agent.url + "/sse/discoveries"
        async with http.get(url, headers={"Accept": "text/event-stream"}) as response:
            first = await anext(sse_events(response))
            assert data_of(first)["content"] == "before anyone listened"

        query = {"agent": "a1", "type": "pattern", "min_confidence": "0.5", "replay": "0"}
        async with http.get(url, params=query) as response:
            assert response.content_type == "text/event-stream"
            comment = await response.content.readuntil(b": keep-alive\n\n")  # idle: keep-alives
            assert comment.endswith(b": keep-alive\n\n")
            await share("pattern", "other agent", agent="a2")
            await share("pattern", "unsure", agent="a1", confidence=0.2)
            await share("bug", "other type", agent="a1")
            await share("pattern", "one", agent="a1", confidence=0.9)
            events = sse_events(response)
            first = await anext(events)
        assert data_of(first)["content"] == "one"
        # Dropped after "one"; more arrive; resuming from its id loses nothing.
        for text in ("two", "three"):
            await share("pattern", text, agent="a1")
        async with http.get(url, params=query, headers={"Last-Event-ID": first["id"]}) as response:
            events = sse_events(response)
            resumed = [data_of(await anext(events))["content"] for _ in range(2)]
        assert resumed == ["two", "three"]
        async with http.get(url, params={"min_confidence": "2"}) as response:
            assert response.status == 400


# -- /ws/mcp


async def test_websocket_rpc_pings_and_in_flight_limit(nats_server: NatsServer) -> None:
    async with (
        mcp_agent(nats_server.url, ws_max_in_flight=1) as agent,
        aiohttp.ClientSession() as http,
        http.ws_connect(agent.url + "/ws/mcp", autoping=False) as ws,
    ):
        await ws.send_json(rpc("list_tools"))
        reply = await ws.receive_json(timeout=10)
        assert len(reply["result"]["tools"]) == len(SWARM_TOOLS)
        await ws.send_str("{broken")
        assert (await ws.receive_json(timeout=10))["error"]["code"] == -32700
        await ws.send_json(rpc("request_capability", {"capability": "gated", "input": "ws"}, request_id=2))
        await asyncio.wait_for(agent.handler.entered.wait(), 20)
        await ws.send_json(rpc("list_tools", request_id=3))
        busy = await ws.receive_json(timeout=10)
        assert busy["id"] == 3 and busy["error"]["code"] == -31000
        agent.handler.gate.set()
        done = await ws.receive_json(timeout=20)
        assert done["id"] == 2 and done["result"]["result"]["echo"] == "ws"
        # Keep-alive: the server pings an idle connection.
        ping = await ws.receive(timeout=10)
        assert ping.type is aiohttp.WSMsgType.PING


# -- limits


async def test_rate_limit_size_limit_and_stream_cap(nats_server: NatsServer) -> None:
    limits: dict[str, Any] = {"rate_limit_per_second": 0.5, "rate_limit_burst": 2, "max_request_bytes": 1024, "max_streams": 1}
    async with mcp_agent(nats_server.url, **limits) as agent, aiohttp.ClientSession() as http:
        url = agent.url + "/rpc"
        status, _ = await post(http, url, rpc("list_tools") | {"pad": "x" * 2000})
        assert status == 413
        status, _ = await post(http, url, rpc("list_tools"))
        assert status == 200
        async with http.post(url, json=rpc("list_tools")) as response:
            assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
            # A JSON-RPC route answers a JSON-RPC error (id null: the body was not read), so SDK clients see why.
            refused = await response.json()
            assert refused["id"] is None and refused["error"]["code"] == -31002
            assert refused["error"]["data"] == {"reason": "rate_limited", "retryAfterSeconds": int(response.headers["Retry-After"])}
        assert (await http.get(agent.url + "/healthz")).status == 200  # probes are not limited

    async with mcp_agent(nats_server.url, max_streams=1) as agent, aiohttp.ClientSession() as http:
        url = agent.url + "/sse/discoveries"
        async with http.get(url) as held:
            assert held.status == 200
            async with http.get(url) as refused:
                assert refused.status == 503 and refused.headers["Retry-After"]


async def test_the_sdk_client_over_the_rate_limit_gets_our_reason_and_wait(nats_server: NatsServer) -> None:
    async with (
        mcp_agent(nats_server.url, rate_limit_per_second=0.01, rate_limit_burst=3) as agent,
        Client(streamable_http_client(agent.mcp), mode=MODERN) as sdk,
    ):

        async def spend_the_burst() -> None:
            for _ in range(4):  # spent within four calls, whatever the client sent before them
                await sdk.call_tool("get_agent_info", {})

        with pytest.raises(MCPError) as refused:
            await spend_the_burst()
        # Not the SDK's stand-in for an HTTP error (-32603 "Server returned an error response"): ours.
        assert refused.value.code == -31002 and refused.value.message.startswith("too many requests from this caller; retry after")
        assert refused.value.data is not None and refused.value.data["reason"] == "rate_limited"
        assert refused.value.data["retryAfterSeconds"] >= 1


async def test_slow_request_body_times_out(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url, request_read_timeout_seconds=0.3) as agent:
        port = int(agent.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"jsonrpc"')
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 20)
        assert b" 408 " in status_line
        writer.close()


async def test_before_the_swarm_connects_stateless_calls_work_and_sessions_wait() -> None:
    runtime = AgentRuntime(RuntimeConfig(agent="early", replica_id="early-1"))  # never started: no NATS
    app = build_app(runtime)
    serve_mcp(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/mcp"
            body, headers = modern_call("tools/list")
            status, reply = await post(http, url, body, headers)
            assert status == 200 and len(reply["result"]["tools"]) == len(SWARM_TOOLS)
            body, headers = modern_call("tools/call", {"name": "list_agents", "arguments": {}})
            status, reply = await post(http, url, body, headers)
            assert status == 200 and reply["result"]["isError"]
            params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
            async with http.post(url, json=rpc("initialize", params)) as response:  # a route carrying JSON-RPC: its error
                assert response.status == 503 and response.headers["Retry-After"] == "1"
                message = "this agent is not connected to the swarm yet; retry after 1 s"
                error = {"code": -31003, "message": message, "data": {"reason": "swarm_unavailable", "retryAfterSeconds": 1}}
                assert await response.json() == {"jsonrpc": "2.0", "id": None, "error": error}
            async with http.get(f"http://127.0.0.1:{port}/sse") as response:  # a stream: a problem
                assert response.status == 503 and response.headers["Retry-After"] == "1"
                assert await response.json() == {"error": "swarm_unavailable", "error_description": message}
    finally:
        await runner.cleanup()
