"""The JetStream streams and KV buckets of a swarm, created if missing (a Swarm's own settings win)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.js import api
from nats.js.kv import KeyValue

from .config import StreamsConfig
from .connection import NatsConnection
from .names import SwarmNames


@dataclass(frozen=True)
class SwarmStores:
    tasks: KeyValue
    agents: KeyValue


def stream_configs(names: SwarmNames, streams: StreamsConfig) -> list[api.StreamConfig]:
    def stream(name: str, subject: str, retention: api.RetentionPolicy, **limits: Any) -> api.StreamConfig:
        return api.StreamConfig(
            name=name, subjects=[subject], retention=retention, num_replicas=streams.replicas,
            storage=api.StorageType.FILE, **limits,
        )

    max_age = streams.max_age_seconds or None
    dedup = streams.duplicate_window_seconds
    return [
        # Tasks never expire: they leave the work queue when acknowledged (or dead-lettered).
        stream(names.tasks_stream, names.all_tasks, api.RetentionPolicy.WORK_QUEUE, duplicate_window=dedup),
        stream(names.discoveries_stream, names.all_discoveries, api.RetentionPolicy.LIMITS, max_age=max_age),
        stream(names.dlq_stream, names.all_dlq, api.RetentionPolicy.LIMITS, max_age=max_age, duplicate_window=dedup),
    ]


async def ensure_swarm_stores(conn: NatsConnection, names: SwarmNames, streams: StreamsConfig) -> SwarmStores:
    for config in stream_configs(names, streams):
        await conn.ensure_stream(config)
    tasks = await conn.ensure_kv(
        api.KeyValueConfig(
            bucket=names.tasks_bucket, history=1, ttl=streams.max_age_seconds or None, replicas=streams.replicas
        )
    )
    # Presence entries expire through per-message TTLs (each agent its own heartbeat), not a bucket TTL.
    agents = await conn.ensure_kv(api.KeyValueConfig(bucket=names.agents_bucket, history=1, replicas=streams.replicas))
    return SwarmStores(tasks=tasks, agents=agents)


async def read_bucket(bucket: KeyValue, keys: str) -> list[bytes]:
    """Current values of the keys matching a pattern (deleted and expired keys left out)."""
    values: list[bytes] = []
    watcher = await bucket.watch(keys, ignore_deletes=True)
    try:
        async for entry in watcher:
            if entry is None:
                break
            if entry.value:
                values.append(entry.value)
            if entry.delta == 0:
                break
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return values
