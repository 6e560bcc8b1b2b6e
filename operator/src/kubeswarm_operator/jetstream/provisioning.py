"""A Swarm's JetStream streams, task consumers and KV buckets: desired configs (pure) and their provisioning.

Names and subjects come from the runtime's :class:`SwarmNames` and the base
stream configs from its :func:`stream_configs`, so operator and runtime agree
on every name; the Swarm adds its limits (``spec.streams``).  Provisioning is
level-based: what is missing is created, what differs is updated, what is the
same is left alone (so a second run makes no write).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubeswarm_runtime.config import McpConfig, StreamsConfig
from kubeswarm_runtime.connection import NatsConnection
from kubeswarm_runtime.names import PRIORITIES, Priority, SwarmNames
from kubeswarm_runtime.resources import StreamsSpec
from kubeswarm_runtime.stores import (
    bucket_configs,
    cluster_replicas,
    ensure_swarm_stores,
    mcp_store_configs,
    stream_configs,
    task_consumer_config,
)
from nats.js import api
from nats.js.errors import NotFoundError

KV_STREAM = "KV_{bucket}"
SERVER_DEFAULT_DUPLICATE_WINDOW = 120.0


def runtime_streams(spec: StreamsSpec, server_info: Mapping[str, Any]) -> StreamsConfig:
    """The Swarm's stream settings in the runtime's terms (limits it leaves open, ack wait, backoff: the runtime's defaults)."""
    caps = (
        {}
        if spec.max_bytes is None
        else {field: spec.max_bytes for field in ("discoveries_max_bytes", "mcp_events_max_bytes", "mcp_sessions_max_bytes")}
    )
    return StreamsConfig(
        replicas=spec.replicas or cluster_replicas(server_info),
        max_age_seconds=spec.max_age_seconds,
        max_deliver=spec.max_deliver,
        **caps,
    )


def desired_streams(names: SwarmNames, spec: StreamsSpec, server_info: Mapping[str, Any]) -> list[api.StreamConfig]:
    """The runtime's streams (and the MCP events stream it makes on first use) with the Swarm's discoveries retention."""
    streams = runtime_streams(spec, server_info)
    out = []
    for config in [*stream_configs(names, streams), mcp_store_configs(names, streams, McpConfig().session_ttl_seconds)[0]]:
        retention = api.RetentionPolicy(spec.discoveries_retention) if config.name == names.discoveries_stream else config.retention
        max_bytes = config.max_bytes if spec.max_bytes is None else _limit(spec.max_bytes)
        out.append(dataclasses.replace(config, retention=retention, max_bytes=max_bytes))
    return out


def _limit(value: int) -> int | None:
    return value if value > 0 else None


def dedup_window(window: float, max_age: float | None) -> float:
    """JetStream refuses a dedup window longer than the stream keeps messages; 0 means its 2-minute default."""
    window = window or SERVER_DEFAULT_DUPLICATE_WINDOW
    return min(window, max_age) if max_age else window


def desired_buckets(names: SwarmNames, spec: StreamsSpec, server_info: Mapping[str, Any]) -> list[api.KeyValueConfig]:
    """Registry, task state and MCP sessions, as the runtime creates them (listed here to converge their limits)."""
    streams = runtime_streams(spec, server_info)
    sessions = mcp_store_configs(names, streams, McpConfig().session_ttl_seconds)[1]
    return [*bucket_configs(names, streams), sessions]


def task_consumer(
    names: SwarmNames, capability: str, priority: Priority, spec: StreamsSpec, server_info: Mapping[str, Any]
) -> api.ConsumerConfig:
    """The durable work-queue consumer of one capability and priority, exactly as the runtime's TaskWorker makes it."""
    return task_consumer_config(names, capability, priority, runtime_streams(spec, server_info))


def desired_consumers(
    names: SwarmNames, capabilities: Iterable[str], spec: StreamsSpec, server_info: Mapping[str, Any]
) -> list[api.ConsumerConfig]:
    return [
        task_consumer(names, capability, priority, spec, server_info) for capability in sorted(set(capabilities)) for priority in PRIORITIES
    ]


# The settings of a stream a Swarm controls: compared, and updated in place when they differ.
STREAM_LIMITS = ("num_replicas", "max_age", "max_bytes", "max_msgs", "discard", "duplicate_window")


def stream_differs(live: api.StreamConfig, want: api.StreamConfig) -> bool:
    """Whether an update is needed: only the settings a Swarm controls are compared (unset and -1 both mean none)."""
    # No dedup window asked for is the server's default one.
    limits = [f for f in STREAM_LIMITS if f != "duplicate_window" or want.duplicate_window]
    return any(_unset(getattr(live, f)) != _unset(getattr(want, f)) for f in limits) or (
        want.retention is not None and live.retention != want.retention
    )


def _unset(value: Any) -> Any:
    return None if value in (None, -1, 0) else value


def consumer_differs(live: api.ConsumerConfig, want: api.ConsumerConfig) -> bool:
    return live.max_deliver != want.max_deliver or (live.num_replicas or 0) not in (0, want.num_replicas)


def kept_replicas(spec: StreamsSpec, live: int | None, wanted: int) -> int:
    """The replicas an existing stream, bucket or consumer converges on: the Swarm's own, lower or higher; else
    (counted from the cluster) never fewer than it has. A connection made while a node restarts is told of two
    servers and counts one replica: that must not scale R3 streams down."""
    return wanted if spec.replicas else max(live or 0, wanted)


@dataclass(frozen=True)
class Provisioned:
    """What one provisioning run did, for Events (empty when everything was in place)."""

    actions: tuple[str, ...]


async def provision(conn: NatsConnection, names: SwarmNames, spec: StreamsSpec, capabilities: Iterable[str]) -> Provisioned:
    """Create or update the swarm's streams, buckets and task consumers; delete consumers no member needs."""
    js = conn.js
    server = conn.server_info
    actions: list[str] = []
    for want in desired_streams(names, spec, server):
        assert want.name
        try:
            live = (await js.stream_info(want.name)).config
        except NotFoundError:
            await js.add_stream(want)
            actions.append(f"created stream {want.name}")
            continue
        want = dataclasses.replace(want, num_replicas=kept_replicas(spec, live.num_replicas, want.num_replicas or 1))
        if stream_differs(live, want):
            limits = {f: getattr(want, f) for f in STREAM_LIMITS}
            await js.update_stream(dataclasses.replace(live, retention=want.retention, **limits))
            actions.append(f"updated stream {want.name}")
    # The runtime's setup creates its buckets with exactly the options it relies on; it finds the streams above.
    await ensure_swarm_stores(conn, names, runtime_streams(spec, server))
    for bucket in desired_buckets(names, spec, server):
        actions += await _converge_bucket(conn, spec, bucket)
    actions += await _converge_consumers(conn, names, spec, desired_consumers(names, capabilities, spec, server))
    return Provisioned(tuple(actions))


async def _converge_bucket(conn: NatsConnection, spec: StreamsSpec, want: api.KeyValueConfig) -> list[str]:
    stream = KV_STREAM.format(bucket=want.bucket)
    try:
        live = (await conn.js.stream_info(stream)).config
    except NotFoundError:
        await conn.js.create_key_value(want)
        return [f"created bucket {want.bucket}"]
    want = dataclasses.replace(want, replicas=kept_replicas(spec, live.num_replicas, want.replicas))
    if live.num_replicas != want.replicas or _unset(live.max_age) != _unset(want.ttl) or _unset(live.max_bytes) != _unset(want.max_bytes):
        window = dedup_window(live.duplicate_window, want.ttl)
        await conn.js.update_stream(
            dataclasses.replace(live, num_replicas=want.replicas, max_age=want.ttl, max_bytes=want.max_bytes, duplicate_window=window)
        )
        return [f"updated bucket {want.bucket}"]
    return []


async def _converge_consumers(conn: NatsConnection, names: SwarmNames, spec: StreamsSpec, wanted: list[api.ConsumerConfig]) -> list[str]:
    js = conn.js
    actions = []
    live = {info.name: info.config for info in await js.consumers_info(names.tasks_stream)}
    for want in wanted:
        assert want.durable_name
        current = live.pop(want.durable_name, None)
        if current is not None:
            want = dataclasses.replace(want, num_replicas=kept_replicas(spec, current.num_replicas, want.num_replicas or 1))
        if current is None or consumer_differs(current, want):
            # add_consumer with an existing durable name updates the settings that may change.
            await js.add_consumer(names.tasks_stream, want)
            actions.append(f"{'created' if current is None else 'updated'} consumer {want.durable_name}")
    for stale in sorted(live):
        await js.delete_consumer(names.tasks_stream, stale)
        actions.append(f"deleted consumer {stale} (no member has its capability)")
    return actions


def swarm_streams(names: SwarmNames) -> list[str]:
    """Every JetStream stream a swarm has (a KV bucket is the stream KV_<bucket>)."""
    streams = [config.name for config in stream_configs(names, StreamsConfig())] + [names.mcp_events_stream]
    buckets = [KV_STREAM.format(bucket=b) for b in (names.agents_bucket, names.tasks_bucket, names.mcp_sessions_bucket)]
    return [name for name in [*streams, *buckets] if name]


async def remove(conn: NatsConnection, names: SwarmNames) -> list[str]:
    """Delete every stream and bucket of the swarm (the Swarm is being deleted)."""
    removed = []
    for stream in swarm_streams(names):
        try:
            await conn.js.delete_stream(stream)
            removed.append(stream)
        except NotFoundError:
            pass
    return removed


async def message_counts(conn: NatsConnection, names: SwarmNames) -> dict[str, int]:
    """Messages held in each of the swarm's streams (missing streams are left out)."""
    counts = {}
    for config in stream_configs(names, StreamsConfig()):
        assert config.name
        try:
            info = await conn.js.stream_info(config.name)
        except NotFoundError:
            continue
        counts[config.name] = info.state.messages
    return counts
