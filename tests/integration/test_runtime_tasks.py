"""Task delivery guarantees on a real nats-server: load-balancing, retries, dead letters, dedup, priorities, cancel."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.names import Priority, task_key
from kubeswarm_runtime.stores import ensure_swarm_stores, task_consumer_config
from kubeswarm_runtime.tasks import DeadLetter, TaskMessage, TaskRecord, TaskState

from tests.integration.runtime_helpers import agent_config, running, swarm_client, unique_prefix, wait_for
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.integration


async def test_task_round_trip_and_load_balancing(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    configs = [agent_config(nats_server.url, prefix, "worker", ["sum"], concurrency=2) for _ in range(3)]
    async with running(configs[0]), running(configs[1]), running(configs[2]), swarm_client(nats_server.url, prefix) as client:
        # Each task takes a moment, so all replicas must share the queue.
        created = [await client.tasks.create("sum", {"n": i, "sleep": 0.05}) for i in range(30)]
        records = await asyncio.gather(*(client.tasks.wait(t.id, 30) for t in created))
        assert all(r.state is TaskState.SUCCEEDED for r in records)
        assert [r.result["echo"]["n"] for r in records] == list(range(30))
        by_replica = Counter(r.agent for r in records)
        assert set(by_replica) == {c.replica_id for c in configs}, by_replica


async def test_retry_then_success(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    async with running(agent_config(nats_server.url, prefix, "w", ["flaky"])), swarm_client(nats_server.url, prefix) as client:
        task = await client.tasks.create("flaky", {"fail_attempts": 2})
        record = await client.tasks.wait(task.id, 20)
        assert record.state is TaskState.SUCCEEDED
        assert record.attempts == 3


async def test_dead_letter_after_last_delivery_and_on_permanent_error(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    async with running(agent_config(nats_server.url, prefix, "w", ["doomed"])), swarm_client(nats_server.url, prefix) as client:
        dlq = await client.conn.js.subscribe(client.names.dlq("doomed"), stream=client.names.dlq_stream)
        always = await client.tasks.create("doomed", {"fail_attempts": 99, "what": "retryable"})
        permanent = await client.tasks.create("doomed", {"fail": "permanent"})
        dead = {r.id: r for r in [await client.tasks.wait(always.id, 20), await client.tasks.wait(permanent.id, 20)]}
        assert dead[always.id].state is TaskState.DEAD
        assert dead[always.id].attempts == 3
        assert dead[permanent.id].state is TaskState.DEAD
        assert dead[permanent.id].attempts == 1
        letters = {}
        for _ in range(2):
            letter = DeadLetter.model_validate_json((await dlq.next_msg(timeout=5)).data)
            letters[letter.task.id] = letter
        assert letters[always.id].task.input == {"fail_attempts": 99, "what": "retryable"}
        assert "last of 3 deliveries" in letters[always.id].reason
        assert "permanent" in letters[permanent.id].reason


async def test_duplicate_task_ids_run_once(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    async with swarm_client(nats_server.url, prefix) as client:
        for _ in range(3):
            await client.tasks.create("once", {"x": 1}, task_id="same-id")
        # A raw duplicate publish with the same Nats-Msg-Id is dropped by the stream too.
        await client.conn.js.publish(client.names.task("once"), b"{}", headers={"Nats-Msg-Id": "same-id"})
        info = await client.conn.js.stream_info(client.names.tasks_stream)
        assert info.state.messages == 1
        async with running(agent_config(nats_server.url, prefix, "w", ["once"])) as agent:
            record = await client.tasks.wait("same-id", 20)
            assert record.state is TaskState.SUCCEEDED
            await wait_for(lambda: _no_backlog(client, "once"), what="queue empty")
            assert agent.metrics.tasks.labels("once", "succeeded")._value.get() == 1


async def _no_backlog(client: SwarmClient, capability: str) -> bool:
    return await client.tasks.backlog(capability) == 0


async def test_priorities_served_high_first(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    async with swarm_client(nats_server.url, prefix) as client:
        order = [Priority.LOW, Priority.NORMAL, Priority.HIGH] * 4
        tasks = [await client.tasks.create("p", {"i": i}, priority=p) for i, p in enumerate(order)]
        async with running(agent_config(nats_server.url, prefix, "w", ["p"], concurrency=1)):
            records = await asyncio.gather(*(client.tasks.wait(t.id, 30) for t in tasks))
        served = [r.priority for r in sorted(records, key=lambda r: r.started_at or 0)]
        assert served == [Priority.HIGH] * 4 + [Priority.NORMAL] * 4 + [Priority.LOW] * 4


async def test_cancel_pending_and_running(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    async with swarm_client(nats_server.url, prefix) as client:
        pending = await client.tasks.create("c", {"x": 1})
        assert (await client.tasks.cancel(pending.id)).state is TaskState.CANCELLED
        async with running(agent_config(nats_server.url, prefix, "w", ["c"])) as agent:
            await wait_for(lambda: _no_backlog(client, "c"), what="cancelled task removed from the queue")
            assert agent.metrics.tasks.labels("c", "cancelled")._value.get() == 1
            slow = await client.tasks.create("c", {"sleep": 60})
            await wait_for(lambda: _state_is(client, slow.id, TaskState.RUNNING), what="slow task running")
            await client.tasks.cancel(slow.id)
            record = await client.tasks.wait(slow.id, 10)
            assert record.state is TaskState.CANCELLED
            await wait_for(lambda: _no_backlog(client, "c"), what="cancelled running task acked")
            await wait_for(lambda: _true(not agent.worker.inflight), what="handler stopped")
        assert (await client.tasks.get(pending.id)).state is TaskState.CANCELLED  # type: ignore[union-attr]


async def _state_is(client: SwarmClient, task_id: str, state: TaskState) -> bool:
    record = await client.tasks.get(task_id)
    return record is not None and record.state is state


async def _true(value: bool) -> bool:
    return value


async def test_results_published_on_result_subject(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    async with running(agent_config(nats_server.url, prefix, "w", ["r"])), swarm_client(nats_server.url, prefix) as client:
        sub = await client.conn.nc.subscribe(client.names.task_result("fixed-id"))
        await client.tasks.create("r", "hello", task_id="fixed-id")
        payload = json.loads((await sub.next_msg(timeout=10)).data)
        assert payload["state"] == "succeeded"
        assert payload["result"]["echo"] == "hello"
        listed = await client.tasks.list(capability="r")
        assert [t.id for t in listed.tasks] == ["fixed-id"]


async def test_long_task_kept_alive_past_ack_wait(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    config = agent_config(nats_server.url, prefix, "w", ["long"], streams={"ack_wait_seconds": 0.6})
    async with running(config), swarm_client(nats_server.url, prefix) as client:
        task = await client.tasks.create("long", {"sleep": 2.0})
        record = await client.tasks.wait(task.id, 20)
        assert record.state is TaskState.SUCCEEDED
        assert record.attempts == 1  # "in progress" kept the delivery: never redelivered


async def test_a_redelivered_task_already_finished_is_acked_not_run_again(nats_server: NatsServer) -> None:
    """An ack lost in a failover: the task's state says succeeded, yet it is delivered again."""
    prefix = unique_prefix()
    config = agent_config(nats_server.url, prefix, "w", ["again"])
    async with swarm_client(nats_server.url, prefix) as client:
        await ensure_swarm_stores(client.conn, client.names, config.streams)
        await client.conn.js.add_consumer(
            client.names.tasks_stream, task_consumer_config(client.names, "again", Priority.NORMAL, config.streams)
        )
        task = await client.tasks.create("again", {"x": 1})
        # Another replica ran it to the end and stored that, but its ack never reached the server.
        first = await client.conn.js.pull_subscribe_bind(client.names.task_consumer("again"), stream=client.names.tasks_stream)
        [delivery] = await first.fetch(1, timeout=5)
        finished = TaskRecord.of(TaskMessage.model_validate_json(delivery.data), TaskState.SUCCEEDED, agent="lost-ack", attempts=1)
        await client.conn.js.publish(f"$KV.{client.names.tasks_bucket}.{task_key(task.id)}", finished.model_dump_json().encode())
        await delivery.nak()
        await first.unsubscribe()
        async with running(config) as agent:
            await wait_for(lambda: _no_backlog(client, "again"), what="the redelivery acked")
            assert agent.metrics.tasks.labels("again", "duplicate")._value.get() == 1
            assert agent.metrics.tasks.labels("again", "succeeded")._value.get() == 0
        record = await client.tasks.get(task.id)
        assert record is not None and record.agent == "lost-ack"  # not run a second time
