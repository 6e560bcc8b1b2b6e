"""Hostile input at every door of an agent (issue 14): wrong types, batch and WebSocket floods, deep nesting, poison tasks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from kubeswarm_runtime.mcp.fanout import SUBSCRIBER_QUEUE, DiscoveryFanout, DiscoveryFilter
from kubeswarm_runtime.tasks import TaskState

from tests.integration.runtime_helpers import agent_config, running, swarm_client, unique_prefix, wait_for
from tests.integration.test_mcp_support import (
    GatedHandler,
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


async def test_a_malformed_task_too_large_to_dead_letter_whole_does_not_stop_the_worker(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent:
        swarm = agent.runtime.swarm
        dlq = await swarm.conn.js.subscribe(swarm.names.dlq("echo"), stream=swarm.names.dlq_stream)
        # Not a task, and escaped into a dead letter it would pass the server's payload limit.
        await swarm.conn.js.publish(swarm.names.task("echo"), b"\x00" * 500_000)
        letter = json.loads((await dlq.next_msg(timeout=10)).data)
        assert letter["reason"].startswith("malformed task") and letter["size"] == 500_000
        record = await swarm.tasks.create("echo", "after the poison")

        async def done() -> bool:
            current = await swarm.tasks.get(record.id)
            return current is not None and current.state is TaskState.SUCCEEDED

        await wait_for(done, 20, "the task after the malformed one")
        async with aiohttp.ClientSession() as http, http.get(agent.url + "/healthz") as response:
            assert response.status == 200


async def test_liveness_fails_once_the_task_worker_stopped_taking_tasks(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        loop = agent.runtime.worker._loop_task
        assert loop is not None
        loop.cancel()  # as any unforeseen error ending the fetch loop would

        async def unhealthy() -> bool:
            async with http.get(agent.url + "/healthz") as response:
                return response.status == 503

        await wait_for(unhealthy, 10, "/healthz to fail")


async def test_a_discovery_subscriber_that_stops_reading_is_dropped_and_counted(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent:
        runtime = agent.runtime
        fanout = DiscoveryFanout(runtime)
        stalled = await fanout.subscribe(DiscoveryFilter())
        try:
            for n in range(SUBSCRIBER_QUEUE + 1):
                await runtime.swarm.discoveries.share("flood", n)

            async def dropped() -> bool:
                return stalled.overflowed

            await wait_for(dropped, 20, "the stalled subscriber to overflow")
            assert stalled.queue.qsize() == SUBSCRIBER_QUEUE
            assert runtime.metrics.buffer_dropped.labels("discovery_stream")._value.get() == 1
        finally:
            await fanout.stop()


async def test_capability_requests_waiting_for_a_slot_are_bounded(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    handler = GatedHandler()
    config = agent_config(nats_server.url, prefix, "agent", ["gated"], concurrency=1)
    async with running(config, handler) as runtime, swarm_client(nats_server.url, prefix) as client:
        holding = asyncio.ensure_future(client.capabilities.request("gated", "holds the only slot", timeout_seconds=30))
        await asyncio.wait_for(handler.entered.wait(), 10)
        subject, inbox = client.names.capability("gated"), client.conn.nc.new_inbox()
        for _ in range(12):  # 10.8 MB waiting: past the subscription's 8 MiB
            await client.conn.nc.publish(subject, b'"' + b"x" * 900_000 + b'"', reply=inbox)
        dropped = runtime.metrics.buffer_dropped.labels("nats_subscription")

        async def some_dropped() -> bool:
            return bool(dropped._value.get() >= 1)

        await wait_for(some_dropped, 20, "the flood to be dropped")
        handler.gate.set()
        assert (await holding)["echo"] == "holds the only slot"


async def test_a_legacy_sse_session_has_a_bounded_number_of_requests_in_flight(nats_server: NatsServer) -> None:
    async with (
        mcp_agent(nats_server.url, ws_max_in_flight=1) as agent,
        aiohttp.ClientSession() as http,
        http.get(agent.url + "/sse", headers={"Accept": "text/event-stream"}) as stream,
    ):
        events = sse_events(stream)
        endpoint = agent.url + (await anext(events))["data"]
        held = rpc("tools/call", {"name": "request_capability", "arguments": {"capability": "gated", "input": "x"}}, request_id=1)
        assert (await post(http, endpoint, held))[0] == 202
        await asyncio.wait_for(agent.handler.entered.wait(), 10)
        assert (await post(http, endpoint, rpc("tools/list", request_id=2)))[0] == 202
        busy = data_of(await anext(events))
        assert busy["id"] == 2 and busy["error"]["code"] == -31000
        agent.handler.gate.set()
        assert data_of(await anext(events))["id"] == 1


async def test_a_streamable_session_has_a_bounded_number_of_streamed_requests_in_flight(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url, ws_max_in_flight=1) as agent, aiohttp.ClientSession() as http:
        session_id = await initialize(http, agent.mcp)
        call = {"name": "request_capability", "arguments": {"capability": "gated", "input": "x"}}
        async with http.post(agent.mcp, json=rpc("tools/call", call, request_id=1), headers=session_headers(session_id)) as first:
            assert first.content_type == "text/event-stream"
            await asyncio.wait_for(agent.handler.entered.wait(), 10)
        # The client left; its work goes on (resumable), and still counts.
        status, reply = await post(http, agent.mcp, rpc("tools/call", call, request_id=2), session_headers(session_id))
        assert status == 200 and reply["error"]["code"] == -31000, reply
        agent.handler.gate.set()


async def test_an_rpc_batch_runs_at_most_ws_max_in_flight_of_its_messages_at_once(nats_server: NatsServer) -> None:
    # Rate limit off (mcp_agent's default): the batch's size is bounded only by the body, its concurrency by this.
    async with mcp_agent(nats_server.url, ws_max_in_flight=2) as agent, aiohttp.ClientSession() as http:
        url = agent.url + "/rpc"
        calls = [rpc("create_task", {"capability": "gated", "task_id": f"b{i}", "wait_seconds": 60}, request_id=i) for i in range(5)]
        batch = asyncio.create_task(post(http, url, calls))

        async def listed() -> list[str]:
            _, reply = await post(http, url, rpc("list_tasks", {}))
            return sorted(task["id"] for task in reply["result"]["tasks"])

        async def two_started() -> bool:
            return len(await listed()) >= 2

        await wait_for(two_started, 20, "the batch's first two tasks")
        first = await listed()
        assert len(first) == 2, first
        for _ in range(5):  # while the gate holds both, no third message starts
            assert await listed() == first
        agent.handler.gate.set()
        status, replies = await asyncio.wait_for(batch, 30)
        assert status == 200 and sorted(r["id"] for r in replies) == list(range(5))
        assert {r["result"]["task"]["state"] for r in replies} == {TaskState.SUCCEEDED.value}, replies[0]
        assert await listed() == [f"b{i}" for i in range(5)]
