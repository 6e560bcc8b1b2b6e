"""Admission on the MCP port of a runtime process (real nats-server): past ``max_in_flight``, 429 + Retry-After before
any work; while the replica drains, 503; under the bound every request is served, and nothing is lost either way.
On a route carrying JSON-RPC the refusal's body is a JSON-RPC error, which the official MCP SDK client surfaces."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.tasks import TaskState
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.integration.runtime_helpers import agent_config, running, runtime_process, swarm_client, unique_prefix, wait_for
from tests.integration.test_mcp_support import LEGACY, MODERN, data_of, modern_call, post, rpc, sse_events
from tests.testbed.nats import NatsServer
from tests.testbed.procs import ManagedProcess

pytestmark = pytest.mark.integration

MAX_IN_FLIGHT = 4
LIMITS = {"KUBESWARM_MCP__MAX_IN_FLIGHT": str(MAX_IN_FLIGHT), "KUBESWARM_MCP__RATE_LIMIT_PER_SECOND": "0"}
OVERLOADED = f"this replica serves at most {MAX_IN_FLIGHT} requests at once; retry after 1 s"
# A hook to POST to, a route carrying no JSON-RPC (its key unset: admission answers before the hook is looked at).
HOOK = {"KUBESWARM_TRIGGERS": json.dumps({"webhooks": [{"name": "deploys", "capability": "echo", "key_env": "KUBESWARM_WEBHOOK_KEY_0"}]})}


def rpc_refusal(code: int, message: str, reason: str) -> dict[str, Any]:
    """The body of a refusal before any work on a route carrying JSON-RPC: an error of no request (``id`` null)."""
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message, "data": {"reason": reason, "retryAfterSeconds": 1}}}


@dataclass
class Replica:
    process: ManagedProcess
    prefix: str  # its swarm's subject prefix
    url: str  # http://127.0.0.1:<mcp port>
    metrics: str  # its /metrics URL

    async def create_task(self, http: aiohttp.ClientSession, arguments: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        """create_task over MCP (2026-07-28, a JSON answer): status, headers, body."""
        body, headers = modern_call("tools/call", {"name": "create_task", "arguments": arguments})
        async with http.post(self.url + "/mcp", json=body, headers={**headers, "Accept": "application/json"}) as response:
            return response.status, dict(response.headers), await response.json(content_type=None)

    async def sample(self, http: aiohttp.ClientSession, line: str) -> float | None:
        async with http.get(self.metrics) as response:
            for text in (await response.text()).splitlines():
                if text.startswith(line + " "):
                    return float(text.split()[-1])
        return None


@asynccontextmanager
async def replica(nats_url: str, prefix: str, log_dir: Path, capabilities: list[str], env: dict[str, str]) -> AsyncIterator[Replica]:
    process = runtime_process(agent_config(nats_url, prefix, "front", capabilities), log_dir, LIMITS | env)
    assert process.env is not None
    found = Replica(
        process,
        prefix,
        f"http://127.0.0.1:{process.env['KUBESWARM_MCP__PORT']}",
        f"http://127.0.0.1:{process.env['KUBESWARM_METRICS_PORT']}/metrics",
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                try:
                    async with http.get(found.url + "/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, timeout=60, what="the replica ready")
        yield found
    finally:
        process.stop()


@asynccontextmanager
async def served(
    nats_url: str, log_dir: Path, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Replica, SwarmClient, aiohttp.ClientSession]]:
    """A replica serving echo (``env``: more of its settings), a swarm client of its swarm, and an HTTP client without a
    connection cap."""
    prefix = unique_prefix()
    async with (
        replica(nats_url, prefix, log_dir, ["echo"], env or {}) as front,
        swarm_client(nats_url, prefix) as client,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
    ):
        yield front, client, http


def hold_every_place(front: Replica, http: aiohttp.ClientSession) -> list[asyncio.Task[tuple[int, dict[str, str], Any]]]:
    """MAX_IN_FLIGHT callers waiting on tasks of a capability nobody serves yet: the replica's places all taken (once
    :func:`all_held` is true), until a worker for "held" comes."""
    return [
        asyncio.create_task(front.create_task(http, {"capability": "held", "task_id": f"held-{i}", "wait_seconds": 60}))
        for i in range(MAX_IN_FLIGHT)
    ]


async def all_held(client: SwarmClient) -> None:
    async def all_created() -> bool:
        return all([await client.tasks.get(f"held-{i}") is not None for i in range(MAX_IN_FLIGHT)])

    await wait_for(all_created, what="the held tasks created")


async def test_past_the_bound_429_with_retry_after_before_any_work(nats_server: NatsServer, tmp_path: Path) -> None:
    async with served(nats_server.url, tmp_path, HOOK) as (front, client, http):
        held = hold_every_place(front, http)
        await all_held(client)
        status, headers, body = await front.create_task(http, {"capability": "echo", "task_id": "over"})
        assert status == 429
        assert headers["Retry-After"] == "1" and headers["Content-Type"].startswith("application/json")
        assert body == rpc_refusal(-31000, OVERLOADED, "overloaded")
        assert await client.tasks.get("over") is None  # refused before any work
        a2a = rpc("GetTask", {"id": "over"})
        async with http.post(front.url + "/a2a", json=a2a, headers={"A2A-Version": "1.0"}) as response:  # JSON-RPC too
            assert response.status == 429 and response.headers["Retry-After"] == "1"
            assert await response.json() == rpc_refusal(-31000, OVERLOADED, "overloaded")
        async with http.post(front.url + "/hooks/deploys", json={"ref": "main"}) as response:  # no JSON-RPC: a problem
            assert response.status == 429 and response.headers["Retry-After"] == "1"
            assert await response.json() == {"error": "overloaded", "error_description": OVERLOADED}
        async with http.get(front.url + "/readyz") as response:
            assert response.status == 200  # probes (and streams) are not requests doing work
        assert await front.sample(http, 'kubeswarm_admission_rejected_total{reason="in_flight"}') == 3.0
        assert await front.sample(http, 'kubeswarm_mcp_requests_total{code="429",method="none",outcome="error"}') == 1.0
        assert await front.sample(http, 'kubeswarm_a2a_requests_total{code="429",method="none",outcome="error"}') == 1.0

        # A worker for "held" comes: the admitted callers get their results, and the refused one, retrying, is admitted.
        async with running(agent_config(nats_server.url, front.prefix, "worker", ["held"])):
            for answer in await asyncio.gather(*held):
                assert answer[0] == 200
                assert answer[2]["result"]["structuredContent"]["task"]["state"] == TaskState.SUCCEEDED

        async def retried() -> bool:
            return (await front.create_task(http, {"capability": "echo", "task_id": "over"}))[0] == 200

        await wait_for(retried, what="the refused call admitted on retry")
        assert (await client.tasks.wait("over", 30)).state is TaskState.SUCCEEDED


async def test_the_sdk_client_past_the_bound_gets_our_reason_and_wait(nats_server: NatsServer, tmp_path: Path) -> None:
    async with (
        served(nats_server.url, tmp_path) as (front, client, http),
        Client(streamable_http_client(front.url + "/mcp"), mode=MODERN) as modern,
        Client(streamable_http_client(front.url + "/mcp"), mode="legacy") as session,  # initialized while places are free
    ):
        assert session.protocol_version == LEGACY
        initialized = 'kubeswarm_mcp_requests_total{code="",method="notifications/initialized",outcome="ok"}'

        async def session_settled() -> bool:  # the SDK posts its notification after the handshake, on its own
            return await front.sample(http, initialized) == 1.0

        await wait_for(session_settled, what="the session's notification answered (its place free)")
        held = hold_every_place(front, http)
        await all_held(client)
        for sdk in (modern, session):
            with pytest.raises(MCPError) as refused:
                await sdk.call_tool("get_agent_info", {})
            # Not the SDK's stand-in for an HTTP error (-32603 "Server returned an error response"): our error.
            assert (refused.value.code, refused.value.message) == (-31000, OVERLOADED)
            assert refused.value.data == {"reason": "overloaded", "retryAfterSeconds": 1}
        async with running(agent_config(nats_server.url, front.prefix, "worker", ["held"])):
            assert [answer[0] for answer in await asyncio.gather(*held)] == [200] * MAX_IN_FLIGHT
        assert not (await session.call_tool("get_agent_info", {})).is_error  # places free again: the session goes on


async def test_websocket_messages_take_places_of_the_same_bound(nats_server: NatsServer, tmp_path: Path) -> None:
    async with served(nats_server.url, tmp_path) as (front, client, http), http.ws_connect(front.url + "/ws/mcp") as ws:
        # One connection's messages (fewer than its own limit, 32) take all the replica's places.
        for i in range(MAX_IN_FLIGHT):
            await ws.send_json(rpc("create_task", {"capability": "held", "task_id": f"ws-{i}", "wait_seconds": 60}, request_id=i))

        async def all_created() -> bool:
            return all([await client.tasks.get(f"ws-{i}") is not None for i in range(MAX_IN_FLIGHT)])

        await wait_for(all_created, what="the held tasks created")
        await ws.send_json(rpc("create_task", {"capability": "echo", "task_id": "ws-over"}, request_id=99))
        busy = await ws.receive_json(timeout=10)
        assert busy["id"] == 99 and busy["error"]["code"] == -31000
        assert f"on this replica (limit {MAX_IN_FLIGHT})" in busy["error"]["message"]
        assert (await front.create_task(http, {"capability": "echo", "task_id": "http-over"}))[0] == 429  # the same places
        assert await client.tasks.get("ws-over") is None and await client.tasks.get("http-over") is None
        async with running(agent_config(nats_server.url, front.prefix, "worker", ["held"])):
            replies = [await ws.receive_json(timeout=30) for _ in range(MAX_IN_FLIGHT)]
        assert sorted(reply["id"] for reply in replies) == list(range(MAX_IN_FLIGHT))
        assert all(reply["result"]["task"]["state"] == TaskState.SUCCEEDED for reply in replies)
        # The places are free again: an HTTP call is admitted.
        assert (await front.create_task(http, {"capability": "echo", "task_id": "http-after"}))[0] == 200


async def test_legacy_answers_keep_their_request_place_until_sent(nats_server: NatsServer, tmp_path: Path) -> None:
    async with (
        served(nats_server.url, tmp_path) as (front, client, http),
        http.get(front.url + "/sse", headers={"Accept": "text/event-stream"}) as stream,
    ):
        events = sse_events(stream)
        endpoint = front.url + (await anext(events))["data"]
        hello = {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
        assert (await post(http, endpoint, rpc("initialize", hello, request_id=100)))[0] == 202
        assert data_of(await anext(events))["id"] == 100
        # Each call is accepted (202) at once; its answer, still running, keeps the request's place.
        for i in range(MAX_IN_FLIGHT):
            arguments = {"capability": "held", "task_id": f"legacy-{i}", "wait_seconds": 60}
            assert (await post(http, endpoint, rpc("tools/call", {"name": "create_task", "arguments": arguments}, request_id=i)))[0] == 202

        async def all_created() -> bool:
            return all([await client.tasks.get(f"legacy-{i}") is not None for i in range(MAX_IN_FLIGHT)])

        await wait_for(all_created, what="the held tasks created")
        status, body = await post(http, endpoint, rpc("tools/list", request_id=99))
        assert status == 429 and body == rpc_refusal(-31000, OVERLOADED, "overloaded")
        async with running(agent_config(nats_server.url, front.prefix, "worker", ["held"])):
            answered = [data_of(await anext(events))["id"] for _ in range(MAX_IN_FLIGHT)]
        assert sorted(answered) == list(range(MAX_IN_FLIGHT))

        async def admitted() -> bool:  # a place frees once each answer is sent
            return (await post(http, endpoint, rpc("tools/list", request_id=101)))[0] == 202

        await wait_for(admitted, what="a place free again")


async def test_a2a_streams_that_follow_a_task_give_their_place_back(nats_server: NatsServer, tmp_path: Path) -> None:
    async with served(nats_server.url, tmp_path) as (front, client, http):
        # More followers than places: streams are capped by max_streams, not by the places of work.
        followers = MAX_IN_FLIGHT + 1
        for i in range(followers):
            await client.tasks.create("held", i, task_id=f"followed-{i}")
        streams = [
            await http.post(
                front.url + "/a2a",
                json=rpc("SubscribeToTask", {"id": f"followed-{i}"}, request_id=i),
                headers={"A2A-Version": "1.0", "Accept": "text/event-stream"},
            )
            for i in range(followers)
        ]
        try:
            assert [response.status for response in streams] == [200] * followers
            for response in streams:
                assert data_of(await anext(sse_events(response)))["result"]["task"]["status"]["state"] == "TASK_STATE_SUBMITTED"
            assert (await front.create_task(http, {"capability": "echo", "task_id": "beside-followers"}))[0] == 200
        finally:
            for response in streams:
                response.close()


async def test_a_flood_past_the_bound_loses_nothing_and_runs_nothing_twice(nats_server: NatsServer, tmp_path: Path) -> None:
    callers = 12 * MAX_IN_FLIGHT
    task_ids = [uuid.uuid4().hex for _ in range(callers)]
    refused: list[int] = []
    async with served(nats_server.url, tmp_path) as (front, client, http):

        async def caller(task_id: str) -> dict[str, Any]:
            # Each waits for its result in the call, so places stay taken while the replica runs the tasks.
            while True:
                status, headers, body = await front.create_task(http, {"capability": "echo", "task_id": task_id, "wait_seconds": 30})
                if status not in (429, 503):
                    assert status == 200, body
                    task: dict[str, Any] = body["result"]["structuredContent"]["task"]
                    return task
                refused.append(status)
                await asyncio.sleep(float(headers["Retry-After"]))  # as a well-behaved client does

        tasks = await asyncio.gather(*(caller(task_id) for task_id in task_ids))
        assert sorted(task["id"] for task in tasks) == sorted(task_ids)
        assert all(task["state"] == TaskState.SUCCEEDED for task in tasks)
        assert refused and set(refused) == {429}  # the flood went past the bound
        for task_id in task_ids:
            record = await client.tasks.get(task_id)
            assert record is not None and record.state is TaskState.SUCCEEDED
        succeeded = 'kubeswarm_tasks_total{capability="echo",outcome="succeeded"}'
        assert await front.sample(http, succeeded) == callers  # each ran once
        assert await front.sample(http, 'kubeswarm_admission_rejected_total{reason="in_flight"}') == len(refused)


async def test_a_draining_replica_answers_503_with_retry_after(nats_server: NatsServer, tmp_path: Path) -> None:
    async with served(nats_server.url, tmp_path) as (front, client, http), Client(front.url + "/mcp", mode=MODERN) as sdk:
        # A long task keeps the replica draining (its shutdown grace) after SIGTERM.
        assert (await front.create_task(http, {"capability": "echo", "task_id": "long", "input": {"sleep": 60}}))[0] == 200

        async def long_running() -> bool:
            record = await client.tasks.get("long")
            return record is not None and record.state is TaskState.RUNNING

        await wait_for(long_running, what="the long task running")
        os.kill(front.process.pid, signal.SIGTERM)
        answers: list[tuple[int, dict[str, str], Any]] = []

        async def refused() -> bool:
            answers.append(await front.create_task(http, {"capability": "echo"}))
            return answers[-1][0] == 503

        await wait_for(refused, what="a 503 from the draining replica")
        _, headers, body = answers[-1]
        assert headers["Retry-After"] == "1"
        assert body == rpc_refusal(-31003, "this replica is shutting down; retry after 1 s", "draining")
        with pytest.raises(MCPError) as raised:
            await sdk.call_tool("get_agent_info", {})
        assert (raised.value.code, raised.value.data) == (-31003, {"reason": "draining", "retryAfterSeconds": 1})
        assert await front.sample(http, 'kubeswarm_admission_rejected_total{reason="draining"}') == 2.0
        assert await front.sample(http, 'kubeswarm_mcp_requests_total{code="503",method="none",outcome="error"}') == 2.0
