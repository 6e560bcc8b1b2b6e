"""The JetStream streams and KV buckets of a swarm, created if missing (a Swarm's own settings win)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from .config import StreamsConfig
from .connection import JS_API_PREFIX, JS_API_TIMEOUT, NatsConnection
from .names import PRIORITIES, Priority, SwarmNames


@dataclass(frozen=True)
class SwarmStores:
    tasks: KeyValue
    agents: KeyValue


def cluster_replicas(server_info: Mapping[str, Any]) -> int:
    """Replicas of a swarm's streams when none are set: 3 on a NATS cluster of three or more servers, else 1.

    The servers a client may connect to (``connect_urls`` of the server's INFO) count the cluster; a server
    with ``no_advertise`` lists none, and then a named cluster is taken to have three.
    """
    if not server_info.get("cluster"):
        return 1
    servers = server_info.get("connect_urls") or ()
    return 3 if not servers or len(servers) >= 3 else 1


def with_replicas(streams: StreamsConfig, conn: NatsConnection) -> StreamsConfig:
    """``streams`` with its replicas set, from the connected NATS when the configuration leaves them open."""
    return streams if streams.replicas else streams.model_copy(update={"replicas": cluster_replicas(conn.server_info)})


def _limit(value: int) -> int | None:
    return value if value > 0 else None


def _stream(streams: StreamsConfig, name: str, subject: str, retention: api.RetentionPolicy, **limits: Any) -> api.StreamConfig:
    max_age = limits.get("max_age")
    if "duplicate_window" in limits and max_age:
        # JetStream refuses a dedup window longer than the stream keeps messages.
        limits["duplicate_window"] = min(limits["duplicate_window"], max_age)
    return api.StreamConfig(
        name=name, subjects=[subject], retention=retention, num_replicas=streams.replicas or 1, storage=api.StorageType.FILE, **limits
    )


def stream_configs(names: SwarmNames, streams: StreamsConfig) -> list[api.StreamConfig]:
    """The tasks work queue, discoveries and dead letters, with their limits (the one definition: docs/runtime.md)."""
    max_age = streams.max_age_seconds or None
    dedup = streams.duplicate_window_seconds
    return [
        # Tasks leave the work queue when acknowledged or dead-lettered; a full queue refuses new tasks
        # (create_task fails) rather than dropping queued ones.
        _stream(
            streams,
            names.tasks_stream,
            names.all_tasks,
            api.RetentionPolicy.WORK_QUEUE,
            max_age=max_age,
            max_msgs=_limit(streams.tasks_max_messages),
            discard=api.DiscardPolicy.NEW,
            duplicate_window=dedup,
        ),
        _stream(
            streams,
            names.discoveries_stream,
            names.all_discoveries,
            api.RetentionPolicy.LIMITS,
            max_age=max_age,
            max_bytes=_limit(streams.discoveries_max_bytes),
            discard=api.DiscardPolicy.OLD,
            duplicate_window=dedup,  # a tool loop run again shares its discoveries with the same Nats-Msg-Id
        ),
        _stream(
            streams,
            names.dlq_stream,
            names.all_dlq,
            api.RetentionPolicy.LIMITS,
            max_age=max_age,
            max_msgs=_limit(streams.dead_letters_max_messages),
            discard=api.DiscardPolicy.OLD,
            duplicate_window=dedup,
        ),
    ]


def bucket_configs(names: SwarmNames, streams: StreamsConfig) -> tuple[api.KeyValueConfig, api.KeyValueConfig]:
    """The registry and the task state: one value per key, task state kept ``max_age_seconds``.

    Presence entries expire through per-message TTLs (each agent its own heartbeat), not a bucket TTL.
    """
    replicas = streams.replicas or 1
    return (
        api.KeyValueConfig(bucket=names.agents_bucket, history=1, replicas=replicas),
        api.KeyValueConfig(bucket=names.tasks_bucket, history=1, ttl=streams.max_age_seconds or None, replicas=replicas),
    )


def mcp_store_configs(names: SwarmNames, streams: StreamsConfig, session_ttl: float) -> tuple[api.StreamConfig, api.KeyValueConfig]:
    """The MCP stream events (kept for resumption on any replica) and the MCP sessions, both bounded in bytes."""
    events = _stream(
        streams,
        names.mcp_events_stream,
        names.all_mcp_events,
        api.RetentionPolicy.LIMITS,
        max_age=session_ttl,
        max_bytes=_limit(streams.mcp_events_max_bytes),
        discard=api.DiscardPolicy.OLD,
    )
    sessions = api.KeyValueConfig(
        bucket=names.mcp_sessions_bucket,
        history=1,
        ttl=session_ttl,
        max_bytes=_limit(streams.mcp_sessions_max_bytes),
        replicas=streams.replicas or 1,
    )
    return events, sessions


def task_consumer_config(names: SwarmNames, capability: str, priority: Priority, streams: StreamsConfig) -> api.ConsumerConfig:
    """The durable work-queue consumer of one capability and priority: every TaskWorker and the operator make it so."""
    return api.ConsumerConfig(
        durable_name=names.task_consumer(capability, priority),
        filter_subject=names.task(capability, priority),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=streams.ack_wait_seconds,
        max_deliver=streams.max_deliver,
        max_ack_pending=-1,
        num_replicas=streams.replicas or 1,
    )


async def task_backlog(conn: NatsConnection, names: SwarmNames, capabilities: Iterable[str]) -> int:
    """Tasks pending or unacknowledged for these capabilities, summed over priorities.

    A durable consumer reports ``num_pending + num_ack_pending``; where none
    exists yet (no Swarm provisioned it, no pod started) the messages waiting
    on its subject in the work queue are counted instead.
    """
    js = conn.js
    total = 0
    unconsumed: list[str] = []
    for capability in sorted(set(capabilities)):
        for priority in PRIORITIES:
            try:
                info = await js.consumer_info(names.tasks_stream, names.task_consumer(capability, priority))
            except NotFoundError:
                unconsumed.append(names.task(capability, priority))
                continue
            total += (info.num_pending or 0) + (info.num_ack_pending or 0)
    if unconsumed:
        try:
            waiting = (await js.stream_info(names.tasks_stream, subjects_filter=names.all_tasks)).state.subjects or {}
        except NotFoundError:
            waiting = {}
        total += sum(waiting.get(subject, 0) for subject in unconsumed)
    return total


async def ensure_swarm_stores(conn: NatsConnection, names: SwarmNames, streams: StreamsConfig) -> SwarmStores:
    streams = with_replicas(streams, conn)
    for config in stream_configs(names, streams):
        await conn.ensure_stream(config)
    agents, tasks = bucket_configs(names, streams)
    return SwarmStores(tasks=await conn.ensure_kv(tasks), agents=await conn.ensure_kv(agents))


# Pull at most this many entries per request when reading a bucket.
READ_PAGE = 1000
# The server removes a reader's consumer this long after a reader that died before deleting it.
READER_INACTIVE_SECONDS = 60.0
# Headers of a message that removes its key: a KV delete or purge, or a server-placed expiry marker.
_REMOVAL_HEADERS = ("KV-Operation", "Nats-Marker-Reason")


async def read_bucket(conn: NatsConnection, bucket: str, keys: str) -> dict[str, bytes]:
    """Current values of the keys of ``bucket`` matching a pattern, by last write (deleted and expired keys left out).

    Deterministic: an empty answer means no key matches (see :func:`read_stream`; nats-py's KV ``watch``/``keys``
    signal "no more entries" from a consumer-info count taken after the server may already have pushed the
    entries, so they can report an empty bucket before the entries arrive).
    """
    prefix = f"$KV.{bucket}."
    values: dict[str, bytes] = {}
    for msg in await read_stream(conn, f"KV_{bucket}", prefix + keys, deliver=api.DeliverPolicy.LAST_PER_SUBJECT):
        key = msg.subject[len(prefix) :]
        if is_value(msg):
            values[key] = msg.data
        else:
            values.pop(key, None)
    return values


def is_value(msg: Msg) -> bool:
    """Whether a message of a bucket's stream holds a value (not a delete, purge or expiry marker)."""
    return bool(msg.data) and not any(h in (msg.headers or {}) for h in _REMOVAL_HEADERS)


@dataclass(frozen=True)
class StreamPage:
    """Messages of one page of a stream, and where the next page starts (None: no more)."""

    messages: list[Msg]
    next: int | None


async def read_forward(conn: NatsConnection, stream: str, subjects: str, *, after_seq: int, limit: int) -> StreamPage:
    """At most ``limit`` messages on ``subjects`` after sequence ``after_seq``, oldest first; ``next`` is the last one's."""
    messages = await read_stream(conn, stream, subjects, start_seq=after_seq + 1 if after_seq else None, limit=limit)
    more = len(messages) == limit and bool(messages[-1].metadata.num_pending)
    return StreamPage(messages, messages[-1].metadata.sequence.stream if more else None)


async def read_backward(conn: NatsConnection, stream: str, subjects: str, *, before_seq: int, limit: int) -> StreamPage:
    """At most ``limit`` messages on ``subjects`` before sequence ``before_seq`` (0: the end), newest first.

    ``next`` is the oldest one's sequence (pass it as ``before_seq`` for the page after). Bounded work per page:
    the start of the page is found by a binary search over sequences, each step one consumer creation whose
    answer counts the matching messages from that sequence on (no message read), then at most ``limit``
    messages are pulled.
    """
    state = (await conn.js.stream_info(stream)).state
    end = min(before_seq, state.last_seq + 1) if before_seq else state.last_seq + 1
    if not state.messages or end <= state.first_seq:
        return StreamPage([], None)
    after = await _matching_from(conn, stream, subjects, end) if end <= state.last_seq else 0
    if await _matching_from(conn, stream, subjects, state.first_seq) - after <= limit:
        start, more = state.first_seq, False
    else:
        # The largest start with at least ``limit`` matches before ``end``: it has exactly ``limit``.
        low, high, more = state.first_seq, end - 1, True
        while low < high:
            middle = (low + high + 1) // 2
            if await _matching_from(conn, stream, subjects, middle) - after >= limit:
                low = middle
            else:
                high = middle - 1
        start = low
    messages = [m for m in await read_stream(conn, stream, subjects, start_seq=start, limit=limit) if m.metadata.sequence.stream < end]
    messages.reverse()
    return StreamPage(messages, messages[-1].metadata.sequence.stream if more and messages else None)


async def _matching_from(conn: NatsConnection, stream: str, subjects: str, seq: int) -> int:
    """How many messages on ``subjects`` the stream holds from sequence ``seq`` on (counted by the server, none read)."""
    name, info = await _reader(conn, stream, subjects, api.DeliverPolicy.BY_START_SEQUENCE, seq)
    await _drop_reader(conn, stream, name)
    return info.num_pending or 0


async def _reader(
    conn: NatsConnection, stream: str, subjects: str, deliver: api.DeliverPolicy, start_seq: int | None
) -> tuple[str, api.ConsumerInfo]:
    """A consumer to read with (no acks, pulled, in memory); its creation answer counts the messages it holds."""
    name = f"read-{secrets.token_hex(8)}"
    info = await conn.js.add_consumer(
        stream,
        api.ConsumerConfig(
            name=name,
            filter_subject=subjects,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if start_seq else deliver,
            opt_start_seq=start_seq,
            ack_policy=api.AckPolicy.NONE,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=READER_INACTIVE_SECONDS,
        ),
    )
    return name, info


async def _drop_reader(conn: NatsConnection, stream: str, name: str) -> None:
    with contextlib.suppress(nats.errors.Error):
        # No need to wait for the answer: the inactivity threshold removes the consumer should this be lost.
        await conn.nc.publish(f"{JS_API_PREFIX}.CONSUMER.DELETE.{stream}.{name}")


async def read_stream(
    conn: NatsConnection,
    stream: str,
    subjects: str,
    *,
    deliver: api.DeliverPolicy = api.DeliverPolicy.ALL,
    start_seq: int | None = None,
    limit: int | None = None,
) -> list[Msg]:
    """The messages of ``stream`` on ``subjects`` (oldest first, at most ``limit``), read to the end the server reports.

    A reader consumer is made for the read; its creation answer says how many messages it holds, and they are
    pulled until the server reports none pending (or ``limit`` is reached).
    """
    nc = conn.nc
    name, info = await _reader(conn, stream, subjects, deliver, start_seq)
    found: list[Msg] = []
    pending = info.num_pending or 0
    if limit is not None:
        pending = min(pending, limit)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox) if pending else None
    try:
        while pending:
            batch = min(READ_PAGE, pending)
            await nc.publish(f"{JS_API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{name}", b'{"batch":%d,"no_wait":true}' % batch, reply=inbox)
            assert sub is not None
            for _ in range(batch):
                msg = await sub.next_msg(timeout=JS_API_TIMEOUT)
                headers = msg.headers or {}
                status = headers.get("Status")
                if status is not None:
                    if status in (api.StatusCode.NO_MESSAGES, api.StatusCode.REQUEST_TIMEOUT):
                        pending = 0  # what was pending is gone (expired or purged meanwhile)
                        break
                    raise nats.errors.Error(f"reading stream {stream}: {status} {headers.get('Description', '')}".rstrip())
                found.append(msg)
                pending = msg.metadata.num_pending or 0
                if limit is not None and len(found) >= limit:
                    pending = 0
                if not pending:
                    break
    finally:
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        await _drop_reader(conn, stream, name)
    return found
