"""Two agent processes behind "one Service": a client whose requests alternate between them, without sticky sessions."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import httpx2
import pytest
from kubeswarm_runtime.mcp.tools import SWARM_TOOLS
from mcp.client.client import Client
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.integration.runtime_helpers import agent_config, runtime_process, unique_prefix, wait_for
from tests.integration.test_mcp_support import data_of, initialize, rpc, session_headers, sse_events
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.integration


class Alternating(httpx2.AsyncBaseTransport):
    """Sends each request to the next replica in turn, as a Service without session affinity may."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = itertools.cycle(ports)
        self.used: list[int] = []
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = next(self.ports)
        self.used.append(port)
        request.url = request.url.copy_with(port=port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def two_replicas(nats_url: str, log_dir: Path) -> AsyncIterator[list[int]]:
    """Two runtime processes of one agent; their MCP ports."""
    prefix = unique_prefix()
    processes = [runtime_process(agent_config(nats_url, prefix, "agent", ["echo"]), log_dir) for _ in range(2)]
    ports = [int(p.env["KUBESWARM_MCP__PORT"]) for p in processes if p.env is not None]
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                for port in ports:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                            if response.status != 200:
                                return False
                    except aiohttp.ClientError:
                        return False
                return True

            await wait_for(ready, timeout=60, what="both replicas ready")
        yield ports
    finally:
        for process in processes:
            process.stop()


async def test_sdk_client_alternating_between_replicas(nats_server: NatsServer, tmp_path: Path) -> None:
    async with two_replicas(nats_server.url, tmp_path) as ports:
        for mode in ("legacy", "auto"):
            transport = Alternating(ports)
            async with (
                httpx2.AsyncClient(transport=transport) as http,
                Client(streamable_http_client(f"http://127.0.0.1:{ports[0]}/mcp", http_client=http), mode=mode) as client,
            ):
                assert len((await client.list_tools()).tools) == len(SWARM_TOOLS)
                for i in range(4):
                    result = await client.call_tool("request_capability", {"capability": "echo", "input": i})
                    assert not result.is_error and result.structured_content is not None
                    assert result.structured_content["result"]["echo"] == i
                    assert not (await client.call_tool("get_agent_info", {})).is_error
            assert set(transport.used) == set(ports), mode


async def test_raw_session_resume_and_delete_across_replicas(nats_server: NatsServer, tmp_path: Path) -> None:
    async with two_replicas(nats_server.url, tmp_path) as ports, aiohttp.ClientSession() as http:
        a, b = (f"http://127.0.0.1:{port}/mcp" for port in ports)
        session_id = await initialize(http, a)
        # A request that takes a while, on A; the client drops after the priming event and resumes on B.
        call = rpc("tools/call", {"name": "request_capability", "arguments": {"capability": "echo", "input": {"sleep": 1}}}, 5)
        async with http.post(a, json=call, headers=session_headers(session_id)) as response:
            priming = await anext(sse_events(response))
        resume = {**session_headers(session_id), "Accept": "text/event-stream", "Last-Event-ID": priming["id"]}
        async with http.get(b, headers=resume) as response:
            events = [event async for event in sse_events(response)]
        reply = data_of(events[-1])
        assert reply["id"] == 5 and reply["result"]["structuredContent"]["result"]["echo"] == {"sleep": 1}
        async with http.delete(b, headers=session_headers(session_id)) as response:
            assert response.status == 204
        async with http.post(a, json=rpc("tools/list"), headers=session_headers(session_id)) as response:
            assert response.status == 404


async def test_legacy_sse_messages_to_the_other_replica(nats_server: NatsServer, tmp_path: Path) -> None:
    async with two_replicas(nats_server.url, tmp_path) as ports:
        transport = Alternating([ports[1], ports[0]])  # the stream on one replica, the first POST on the other

        def factory(
            headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None, auth: httpx2.Auth | None = None
        ) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(transport=transport, headers=headers, timeout=timeout, auth=auth)

        async with (
            sse_client(f"http://127.0.0.1:{ports[0]}/sse", httpx_client_factory=factory) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("get_agent_info", {})
            assert not result.is_error
        assert set(transport.used) == set(ports)
