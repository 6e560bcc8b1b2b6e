"""Every stream and bucket of a swarm is limited, and replicated as the NATS cluster by default (real 3-node cluster)."""

from __future__ import annotations

import functools

import pytest
from kubeswarm_operator.jetstream.connections import NatsPool, NatsTarget
from kubeswarm_operator.jetstream.provisioning import KV_STREAM, provision, swarm_streams
from kubeswarm_runtime.connection import NatsConnection
from kubeswarm_runtime.mcp.state import McpState
from kubeswarm_runtime.names import SwarmNames
from kubeswarm_runtime.resources import StreamsSpec
from kubeswarm_runtime.stores import cluster_replicas
from nats.js import api

from tests.integration.runtime_helpers import agent_config, running, unique_prefix, wait_for
from tests.testbed.nats import CLUSTER_PATIENCE, NatsCluster, until_served

pytestmark = pytest.mark.integration

MIB = 1 << 20


async def test_runtime_creates_limited_streams_replicated_over_the_cluster(nats_cluster: NatsCluster) -> None:
    prefix = unique_prefix()
    names = SwarmNames(prefix)
    config = agent_config(nats_cluster.url, prefix, "w", ["cap"], streams={"replicas": None})
    async with running(config) as runtime:
        mcp = McpState(runtime, 60)
        # The MCP layer makes its stores on first use: new R3 ones, whose leaders may not answer at once.
        await until_served(mcp.sessions, idempotent=True)
        js = runtime.conn.js

        async def stream_config(name: str) -> api.StreamConfig:
            return (await until_served(lambda: js.stream_info(name), idempotent=True)).config

        wanted = (names.tasks_stream, names.discoveries_stream, names.dlq_stream, names.mcp_events_stream)
        configs = {name: await stream_config(name) for name in wanted}
        tasks_kv = await stream_config(KV_STREAM.format(bucket=names.tasks_bucket))
        sessions = await stream_config(KV_STREAM.format(bucket=names.mcp_sessions_bucket))
    assert {c.num_replicas for c in configs.values()} == {3} and tasks_kv.num_replicas == 3
    tasks = configs[names.tasks_stream]
    assert tasks.max_age and tasks.max_msgs and tasks.max_msgs > 0 and tasks.discard == api.DiscardPolicy.NEW
    assert configs[names.discoveries_stream].max_bytes == 64 * MIB
    assert (configs[names.dlq_stream].max_msgs or -1) > 0
    assert tasks_kv.max_age and tasks_kv.max_msgs_per_subject == 1
    assert configs[names.mcp_events_stream].max_bytes == 32 * MIB
    assert sessions.max_bytes == 8 * MIB and sessions.num_replicas == 3


async def test_provisioning_limits_and_replicates_existing_unlimited_streams_in_place(nats_cluster: NatsCluster) -> None:
    """Streams made before the limits (one replica, no age, size or count limit) are updated, not recreated."""
    names = SwarmNames(unique_prefix())
    conn = await NatsPool(connect_timeout=3).get(NatsTarget(nats_cluster.url))
    try:
        js = conn.js
        # Made again alike if an answer timed out; the task published with an id, so that a repeat is dropped.
        for config in (
            api.StreamConfig(name=names.tasks_stream, subjects=[names.all_tasks], retention=api.RetentionPolicy.WORK_QUEUE),
            api.StreamConfig(name=names.discoveries_stream, subjects=[names.all_discoveries]),
            api.StreamConfig(name=names.mcp_events_stream, subjects=[names.all_mcp_events]),
        ):
            await until_served(functools.partial(js.add_stream, config), idempotent=True)
        await until_served(lambda: js.create_key_value(api.KeyValueConfig(bucket=names.mcp_sessions_bucket, history=1)), idempotent=True)
        # A new stream's interest reaches the other servers a moment later ("no responders").
        await until_served(lambda: js.publish(names.task("cap"), b"{}", headers={"Nats-Msg-Id": "queued"}), idempotent=True)

        done = await provision(conn, names, StreamsSpec(), ["cap"])
        assert f"updated stream {names.tasks_stream}" in done.actions
        assert f"updated bucket {names.mcp_sessions_bucket}" in done.actions

        updated = (names.tasks_stream, names.discoveries_stream, names.mcp_events_stream)

        async def scaled_up() -> bool:
            # A stream's info shows the old config for a moment while its new replicas catch up.
            return all([(await js.stream_info(name)).config.num_replicas == 3 for name in updated])

        # Scaling R1 streams to R3 copies their data to two new servers: slower on a busy CI machine (20 s ran out once).
        await wait_for(scaled_up, timeout=CLUSTER_PATIENCE, what="the updated streams on three replicas")
        tasks = await js.stream_info(names.tasks_stream)
        assert tasks.state.messages == 1  # updated in place: the queued task is still there
        assert tasks.config.max_age and tasks.config.max_msgs and tasks.config.max_msgs > 0
        assert (await js.stream_info(names.discoveries_stream)).config.max_bytes == 64 * MIB
        assert (await js.stream_info(names.mcp_events_stream)).config.max_bytes == 32 * MIB
        sessions = (await js.stream_info(KV_STREAM.format(bucket=names.mcp_sessions_bucket))).config
        assert sessions.max_bytes == 8 * MIB and sessions.num_replicas == 3

        # Level-based: a run finds everything in place (once the replicas' answers agree: a scaled stream's info
        # can show the old replica count for a moment under load).
        async def in_place() -> bool:
            return (await provision(conn, names, StreamsSpec(), ["cap"])).actions == ()

        await wait_for(in_place, timeout=CLUSTER_PATIENCE, what="a provisioning run that writes nothing")
    finally:
        await conn.close()


async def test_auto_replicas_never_lower_existing_streams_while_a_node_is_down(nats_cluster: NatsCluster) -> None:
    """An operator connecting during a rolling restart is told of two servers (auto replicas: 1): R3 stays R3."""
    names = SwarmNames(unique_prefix())

    async def replicas(conn: NatsConnection) -> dict[str, int | None]:
        js = conn.js
        streams = {
            name: (await until_served(functools.partial(js.stream_info, name), idempotent=True)).config for name in swarm_streams(names)
        }
        consumers = await until_served(functools.partial(js.consumers_info, names.tasks_stream), idempotent=True)
        return {name: config.num_replicas for name, config in streams.items()} | {c.name: c.config.num_replicas for c in consumers}

    first = await NatsPool(connect_timeout=3).get(NatsTarget(nats_cluster.url))
    try:
        await until_served(lambda: provision(first, names, StreamsSpec(), ["cap"]), idempotent=True)
        made = await replicas(first)
    finally:
        await first.close()
    assert len(made) == len(swarm_streams(names)) + 3 and set(made.values()) == {3}

    nats_cluster.stop_node(2)
    second = await NatsPool(connect_timeout=3).get(NatsTarget(nats_cluster.url))
    try:
        # The scenario: this connection's INFO names two servers, so auto replicas count one.
        assert len(second.server_info["connect_urls"]) == 2 and cluster_replicas(second.server_info) == 1
        done = await until_served(lambda: provision(second, names, StreamsSpec(), ["cap"]), idempotent=True)
        assert await replicas(second) == made
        assert done.actions == ()
    finally:
        await second.close()
