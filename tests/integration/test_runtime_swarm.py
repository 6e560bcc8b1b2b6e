"""Presence, capability request/reply with its breaker, discoveries, direct messages, probes and metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubeswarm_runtime.app import build_app, build_metrics_app
from kubeswarm_runtime.capabilities import CapabilityError, CapabilityUnavailable
from kubeswarm_runtime.config import StreamsConfig
from kubeswarm_runtime.messages import RECEIVED_KEPT_BYTES, RECEIVED_KEPT_MESSAGES
from kubeswarm_runtime.names import SwarmNames
from kubeswarm_runtime.providers import TaskContext
from kubeswarm_runtime.providers.echo import EchoHandler
from kubeswarm_runtime.stores import ensure_swarm_stores

from tests.integration.runtime_helpers import (
    agent_config,
    running,
    runtime_process,
    swarm_client,
    unique_prefix,
    wait_for,
)
from tests.testbed.nats import NatsServer
from tests.testbed.procs import free_port

pytestmark = pytest.mark.integration


async def test_presence_lists_agents_and_drops_silent_ones(nats_server: NatsServer, tmp_path: Path) -> None:
    prefix = unique_prefix()
    in_process = agent_config(nats_server.url, prefix, "planner", ["plan"], role="lead")
    crashing = agent_config(nats_server.url, prefix, "coder", ["code", "review"])
    async with running(in_process), swarm_client(nats_server.url, prefix) as client:
        process = runtime_process(crashing, tmp_path)
        try:

            async def both_listed() -> bool:
                return {a.id for a in await client.agents.list()} == {in_process.replica_id, crashing.replica_id}

            await wait_for(both_listed, what="both agents registered")
            coder = await client.agents.get(crashing.replica_id)
            assert coder is not None
            assert (coder.agent, coder.capabilities, coder.version) == ("coder", ["code", "review"], crashing.version)
            assert [a.id for a in await client.agents.list(capability="plan")] == [in_process.replica_id]
            assert (await client.agents.get(in_process.replica_id)).role == "lead"  # type: ignore[union-attr]
            process.kill()  # no goodbye: only the heartbeats stop
            killed_at = time.monotonic()

            async def coder_gone() -> bool:
                return crashing.replica_id not in {a.id for a in await client.agents.list()}

            await wait_for(coder_gone, timeout=10, what="the killed agent to drop out")
            # Within 3 heartbeats (plus one heartbeat of polling slack).
            assert time.monotonic() - killed_at <= 4 * crashing.heartbeat_seconds + 1
        finally:
            process.stop()


async def test_graceful_stop_leaves_registry_at_once(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    config = agent_config(nats_server.url, prefix, "a", [], heartbeat_seconds=30)
    async with swarm_client(nats_server.url, prefix) as client:
        async with running(config):
            assert [a.id for a in await client.agents.list()] == [config.replica_id]
        assert await client.agents.list() == []


async def test_capability_request_reply_load_balanced(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    a = agent_config(nats_server.url, prefix, "t", ["translate"])
    b = agent_config(nats_server.url, prefix, "t", ["translate"])
    async with running(a) as ra, running(b) as rb, swarm_client(nats_server.url, prefix) as client:
        results = await asyncio.gather(*(client.capabilities.request("translate", {"i": i}) for i in range(40)))
        assert [r["echo"]["i"] for r in results] == list(range(40))
        served = [r.metrics.messages.labels("in", "capability_request")._value.get() for r in (ra, rb)]
        assert sum(served) == 40
        assert min(served) > 0, served


class MeetingHandler(EchoHandler):
    """Echo, once ``parties`` calls are inside it at the same time; records the most that ever were."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.inside = 0
        self.most_inside = 0
        self.all_in = asyncio.Event()

    async def handle(self, ctx: TaskContext) -> Any:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        if self.inside >= self.parties:
            self.all_in.set()
        try:
            await self.all_in.wait()
            return await super().handle(ctx)
        finally:
            self.inside -= 1


async def test_capability_requests_are_served_concurrently_up_to_concurrency(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    handler = MeetingHandler(parties=3)
    config = agent_config(nats_server.url, prefix, "t", ["meet"], concurrency=3)
    async with running(config, handler), swarm_client(nats_server.url, prefix) as client:
        # Each call returns only once three are in the handler together: served one at a time, none would.
        requests = (client.capabilities.request("meet", i, timeout_seconds=10) for i in range(7))
        results = await asyncio.gather(*requests)
        assert [r["echo"] for r in results] == list(range(7))
        assert handler.most_inside == 3


async def test_capability_errors_and_breaker(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    async with swarm_client(nats_server.url, prefix) as client:
        client.capabilities.breaker_threshold = 2
        client.capabilities.breaker_cooldown = 0.5
        with pytest.raises(CapabilityUnavailable, match="no agent offers capability 'nobody'"):
            await client.capabilities.request("nobody", {})
        with pytest.raises(CapabilityUnavailable, match="no agent"):
            await client.capabilities.request("nobody", {})
        # Open: fails fast without asking NATS.
        with pytest.raises(CapabilityUnavailable, match="circuit open"):
            await client.capabilities.request("nobody", {})
        async with running(agent_config(nats_server.url, prefix, "n", ["nobody"])):

            async def half_open() -> bool:
                return client.capabilities.breaker("nobody").state == "half-open"

            await wait_for(half_open, timeout=5, what="breaker half-open")
            assert (await client.capabilities.request("nobody", "hi"))["echo"] == "hi"
            assert client.capabilities.breaker("nobody").state == "closed"
            with pytest.raises(CapabilityError, match="failed: echo: asked to fail permanently"):
                await client.capabilities.request("nobody", {"fail": "permanent"})


async def test_discoveries_shared_and_seen_by_peer(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    async with (
        running(agent_config(nats_server.url, prefix, "scout", [])) as scout,
        running(agent_config(nats_server.url, prefix, "peer", [])) as peer,
    ):
        follow = peer.swarm.discoveries.follow(type="finding")
        seen = asyncio.ensure_future(anext(follow))
        shared = await scout.swarm.discoveries.share("finding", {"what": "a bug"}, tags=["x"])
        got = await asyncio.wait_for(seen, 10)
        await follow.aclose()
        assert (got.agent, got.content, got.seq) == ("scout", {"what": "a bug"}, shared.seq)
        await scout.swarm.discoveries.share("note", "n")
        listed = await peer.swarm.discoveries.list()
        assert [d.type for d in listed] == ["finding", "note"]
        assert [d.type for d in await peer.swarm.discoveries.list(since_seq=listed[0].seq or 0)] == ["note"]
        assert await peer.swarm.discoveries.list(agent="nobody") == []


async def test_direct_messages_and_broadcast(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    a = agent_config(nats_server.url, prefix, "alice", [])
    b = agent_config(nats_server.url, prefix, "bob", [])
    async with running(a) as alice, running(b) as bob:
        answer = await alice.swarm.messages.query("bob", {"q": 1}, timeout_seconds=5)
        assert answer.kind == "response"
        assert answer.body["echo"] == {"q": 1}
        await alice.swarm.messages.send(b.replica_id, "command", {"do": "x"})
        query = await asyncio.wait_for(bob.swarm.messages.received.get(), 5)
        assert query.kind == "query"
        command = await asyncio.wait_for(bob.swarm.messages.received.get(), 5)
        assert (command.kind, command.sender, command.body) == ("command", a.replica_id, {"do": "x"})
        await bob.swarm.messages.broadcast("hello all")

        async def alice_heard() -> bool:
            return any(m.kind == "broadcast" for m in alice.swarm.messages.received)

        await wait_for(alice_heard, timeout=5, what="broadcast received")


async def test_received_messages_are_bounded_in_number_and_bytes(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    async with running(agent_config(nats_server.url, prefix, "bob", [])) as bob, swarm_client(nats_server.url, prefix) as client:
        received, metrics = bob.swarm.messages.received, bob.metrics
        heard = metrics.messages.labels("in", "broadcast")
        dropped = metrics.buffer_dropped.labels("received_messages")
        for _ in range(20):
            await client.messages.broadcast("x" * 850_000)  # nobody reads them
        for n in range(150):
            await client.messages.broadcast(n)

        async def all_heard() -> bool:
            return bool(heard._value.get() == 170)

        await wait_for(all_heard, 30, "170 broadcasts received")
        assert len(received) == RECEIVED_KEPT_MESSAGES and [m.body for m in received] == list(range(50, 150))
        assert dropped._value.get() == 70
        for _ in range(20):
            await client.messages.broadcast("x" * 850_000)

        async def all_big_ones_heard() -> bool:
            return bool(heard._value.get() == 190)

        await wait_for(all_big_ones_heard, 30, "the big broadcasts received")
        assert 0 < received.bytes <= RECEIVED_KEPT_BYTES and len(received) == 4
        assert metrics.registry.get_sample_value("kubeswarm_received_messages_bytes") == received.bytes


async def test_probes_and_metrics(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    config = agent_config(nats_server.url, prefix, "m", ["m"])
    async with running(config) as runtime, swarm_client(nats_server.url, prefix) as client:
        app_port, metrics_port = free_port(), free_port()
        runners = []
        for app, port in ((build_app(runtime), app_port), (build_metrics_app(runtime.metrics), metrics_port)):
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
        try:
            await client.tasks.wait((await client.tasks.create("m", "x")).id, 10)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{app_port}/healthz") as resp:
                    assert resp.status == 200
                async with http.get(f"http://127.0.0.1:{app_port}/readyz") as resp:
                    assert resp.status == 200
                async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                    text = await resp.text()
                for line in (
                    'kubeswarm_tasks_total{capability="m",outcome="succeeded"} 1.0',
                    "kubeswarm_nats_connected 1.0",
                    'kubeswarm_messages_total{direction="in",kind="task"} 1.0',
                    "kubeswarm_task_duration_seconds_count",
                ):
                    assert line in text
                runtime.draining = True
                async with http.get(f"http://127.0.0.1:{app_port}/readyz") as resp:
                    assert resp.status == 503
                runtime.draining = False
        finally:
            for runner in runners:
                await runner.cleanup()


async def test_existing_stream_settings_win(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    names = SwarmNames(prefix)
    async with swarm_client(nats_server.url, prefix) as client:
        info = await client.conn.js.stream_info(names.discoveries_stream)
        custom = info.config.evolve(max_age=123.0)
        await client.conn.js.update_stream(custom)
        await ensure_swarm_stores(client.conn, names, StreamsConfig(max_age_seconds=999))
        assert (await client.conn.js.stream_info(names.discoveries_stream)).config.max_age == 123.0
