"""Listings read from KV buckets (tasks, agents, cancellations) on a real nats-server: complete right after the writes.

nats-py's KV watch (and ``keys()``, built on it) can signal "no more entries" before the
entries arrive: a listing made through it right after a write came back empty or short now and
then. Each test repeats write-then-read-several-times-at-once many times (the concurrent reads
make that race show in a few percent of the reads), each read checked.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from kubeswarm_runtime import stores
from kubeswarm_runtime.presence import AgentInfo
from kubeswarm_runtime.providers.echo import EchoHandler
from kubeswarm_runtime.stores import read_bucket
from kubeswarm_runtime.tasks import TaskWorker

from tests.integration.runtime_helpers import agent_config, swarm_client, unique_prefix, wait_for
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.integration

ROUNDS = 150
READERS = 4


async def test_tasks_listed_right_after_creation(nats_server: NatsServer) -> None:
    async with swarm_client(nats_server.url, unique_prefix()) as client:
        assert (await client.tasks.list()).tasks == []
        created: list[str] = []
        for i in range(ROUNDS):
            created.append((await client.tasks.create("listing", i)).id)
            listings = await asyncio.gather(*(client.tasks.list(limit=ROUNDS) for _ in range(READERS)))
            for listed in listings:
                assert [task.id for task in listed.tasks] == created[::-1], f"round {i}"


def agent_entry(replica: str) -> bytes:
    now = time.time()
    info = AgentInfo(
        id=replica,
        agent="listing",
        role="worker",
        capabilities=["x"],
        version="test",
        load=0,
        concurrency=1,
        heartbeat_seconds=60,
        started_at=now,
        last_seen=now,
    )
    return info.model_dump_json().encode()


async def test_agents_listed_right_after_registering(nats_server: NatsServer) -> None:
    async with swarm_client(nats_server.url, unique_prefix()) as client:
        registered: list[str] = []
        for i in range(ROUNDS):
            replica = f"listing-{i:04d}"
            await client.stores.agents.put(replica, agent_entry(replica))
            registered.append(replica)
            for listed in await asyncio.gather(*(client.agents.list() for _ in range(READERS))):
                assert [agent.id for agent in listed] == registered, f"round {i}"


async def test_known_cancellations_loaded_before_a_worker_starts(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    async with swarm_client(nats_server.url, prefix) as client:
        config = agent_config(nats_server.url, prefix, "listing", [])
        cancelled = set()
        for i in range(ROUNDS // 2):
            task = await client.tasks.create("elsewhere", i)
            await client.tasks.cancel(task.id)
            cancelled.add(task.id)
            workers = [
                TaskWorker(client.conn, client.names, client.stores.tasks, config, EchoHandler(), client.conn.metrics)
                for _ in range(READERS)
            ]
            try:
                # What start() awaits before its first fetch, checked right when it returns.
                await asyncio.gather(*(worker._watch_cancellations() for worker in workers))
                for worker in workers:
                    assert worker.cancelled == cancelled, f"round {i}"
            finally:
                await asyncio.gather(*(worker.stop(0) for worker in workers))


async def test_read_bucket_reads_live_keys_only_page_by_page(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "READ_PAGE", 3)
    async with swarm_client(nats_server.url, unique_prefix()) as client:
        conn, bucket, kv = client.conn, client.names.tasks_bucket, client.stores.tasks
        assert await read_bucket(conn, bucket, ">") == {}
        for i in range(10):
            await kv.put(f"task.{i}", b"first")
        await kv.put("task.3", b"second")
        await kv.delete("task.4")
        await kv.purge("task.5")
        await kv.put("cancel.1", b"1")
        expected = {f"task.{i}": b"first" for i in (0, 1, 2, 6, 7, 8, 9)} | {"task.3": b"second"}
        assert await read_bucket(conn, bucket, "task.>") == expected
        assert await read_bucket(conn, bucket, "cancel.>") == {"cancel.1": b"1"}
        assert list(await read_bucket(conn, bucket, "task.>")) == [*(f"task.{i}" for i in (0, 1, 2, 6, 7, 8, 9)), "task.3"]
        for key in list(expected):
            await kv.delete(key)
        assert await read_bucket(conn, bucket, "task.>") == {}

        # Every read removes its consumer.
        stream = f"KV_{bucket}"

        async def no_readers() -> bool:
            return (await conn.js.stream_info(stream)).state.consumer_count == 0

        await wait_for(no_readers, what="the readers' consumers deleted")


async def test_tasks_listed_page_by_page_newest_change_first(nats_server: NatsServer) -> None:
    """Each call reads one page (a cursor, not the whole bucket); filters apply to the page; a change moves a task first."""
    async with swarm_client(nats_server.url, unique_prefix()) as client:
        created = [(await client.tasks.create("pages" if i % 2 else "other", i)).id for i in range(25)]
        await client.tasks.cancel(created[3])  # its last change is now the newest
        newest_first = [created[3], *(t for t in reversed(created) if t != created[3])]
        await client.stores.tasks.put("cancel.x", b"1")  # other keys of the bucket are not tasks
        pages, cursor = [], 0
        while True:
            page = await client.tasks.list(limit=10, cursor=cursor)
            pages.append([t.id for t in page.tasks])
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [t for p in pages for t in p] == newest_first
        filtered = await client.tasks.list(limit=10, capability="pages")
        assert [t.id for t in filtered.tasks] == [t for t in newest_first[:10] if int(t in created[1::2])]
        assert filtered.next_cursor is not None


async def test_discoveries_listed_page_by_page(nats_server: NatsServer) -> None:
    async with swarm_client(nats_server.url, unique_prefix()) as client:
        for i in range(7):
            await client.discoveries.share("note", i)
        await client.conn.js.publish(client.names.discovery("someone", "note"), b"not a discovery")
        seen, since, pages = [], 0, 0
        while True:
            page = await client.discoveries.page(type="note", since_seq=since, limit=3)
            seen += [d.content for d in page.discoveries]
            pages += 1
            since = page.last_seq
            if not page.more:
                break
        # The unreadable record is skipped, and the page that held it still moves the cursor on.
        assert (seen, pages) == (list(range(7)), 3)
