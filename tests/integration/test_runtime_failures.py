"""Crashes, rolling restarts and NATS failover: no task lost, none left running twice."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import nats
import pytest
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.config import RuntimeConfig
from kubeswarm_runtime.tasks import DeadLetter, TaskRecord, TaskState
from nats.aio.msg import Msg

from tests.integration.runtime_helpers import (
    agent_config,
    running,
    runtime_process,
    swarm_client,
    unique_prefix,
    wait_for,
)
from tests.testbed.nats import CLUSTER_PATIENCE, NatsCluster, NatsServer

pytestmark = pytest.mark.integration


async def _running_on(client: SwarmClient, task_id: str, replica: str) -> bool:
    record = await client.tasks.get(task_id)
    return record is not None and record.state is TaskState.RUNNING and record.agent == replica


async def _kill_9_while_running(client: SwarmClient, config: RuntimeConfig, task_input: object, logs: Path) -> TaskRecord:
    """Run ``config`` as a process, give it a task, and SIGKILL it while the task runs."""
    process = runtime_process(config, logs)
    try:
        task = await client.tasks.create(config.capabilities[0], task_input)
        await wait_for(lambda: _running_on(client, task.id, config.replica_id), what="task running in the process")
        process.kill()
    finally:
        process.stop()
    return task


async def test_task_redelivered_after_kill_9_mid_task(nats_server: NatsServer, tmp_path: Path) -> None:
    prefix = unique_prefix()
    async with swarm_client(nats_server.url, prefix) as client:
        task = await _kill_9_while_running(client, agent_config(nats_server.url, prefix, "w", ["slow"]), {"sleep": 1.0}, tmp_path)
        survivor = agent_config(nats_server.url, prefix, "w", ["slow"])
        async with running(survivor):
            record = await client.tasks.wait(task.id, 30)
        assert record.state is TaskState.SUCCEEDED
        assert record.agent == survivor.replica_id
        assert record.attempts == 2


async def test_crash_on_last_delivery_is_dead_lettered(nats_server: NatsServer, tmp_path: Path) -> None:
    prefix = unique_prefix()
    async with swarm_client(nats_server.url, prefix) as client:
        dlq = await client.conn.js.subscribe(client.names.dlq("hang"), stream=client.names.dlq_stream)
        # One delivery allowed: the runner is killed during it, so the server gives up on the task.
        crashing = agent_config(nats_server.url, prefix, "w", ["hang"], streams={"max_deliver": 1})
        task = await _kill_9_while_running(client, crashing, {"sleep": 60}, tmp_path)
        async with running(agent_config(nats_server.url, prefix, "w", ["hang"], streams={"max_deliver": 1})):
            letter = DeadLetter.model_validate_json((await dlq.next_msg(timeout=20)).data)
            assert letter.task.id == task.id
            assert "without an outcome" in letter.reason
            record = await client.tasks.wait(task.id, 10)
            assert record.state is TaskState.DEAD


async def test_rolling_restart_under_load_loses_nothing_and_runs_nothing_twice(nats_server: NatsServer, tmp_path: Path) -> None:
    prefix = unique_prefix()
    ran: Counter[str] = Counter()
    async with swarm_client(nats_server.url, prefix) as client:
        sub = await client.conn.nc.subscribe(f"$KV.{client.names.tasks_bucket}.task.>")
        old = [agent_config(nats_server.url, prefix, "w", ["job"], concurrency=4, shutdown_grace_seconds=0.2) for _ in range(2)]
        processes = [runtime_process(c, tmp_path) for c in old]
        try:
            tasks = [await client.tasks.create("job", {"i": i, "sleep": 0.5}) for i in range(60)]
            await wait_for(lambda: _some_done(client, 8), what="work under way")
            # Roll: a new replica comes up, each old one gets SIGTERM (in-flight tasks run past its grace).
            new = agent_config(nats_server.url, prefix, "w", ["job"], concurrency=8)
            async with running(new):
                for process in processes:
                    process.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                for process in processes:
                    await asyncio.to_thread(process.popen.wait, 30)  # type: ignore[union-attr]
                    assert process.popen.returncode == 0  # type: ignore[union-attr]
                records = await asyncio.gather(*(client.tasks.wait(t.id, 60) for t in tasks))
        finally:
            for process in processes:
                process.stop()
        assert all(r.state is TaskState.SUCCEEDED for r in records)
        # Every "running" state written is one attempt started; a task handed back on shutdown shows
        # "pending" after it. Started twice is only allowed if the first start was handed back.
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                break
            record = TaskRecord.model_validate_json(msg.data)
            if record.state is TaskState.RUNNING:
                ran[record.id] += 1
            elif record.state is TaskState.PENDING and record.attempts:
                ran[record.id] -= 1
        assert set(ran) == {t.id for t in tasks}
        assert set(ran.values()) == {1}, {k: v for k, v in ran.items() if v != 1}


async def _some_done(client: SwarmClient, count: int) -> bool:
    return len((await client.tasks.list(state=TaskState.SUCCEEDED, limit=1000)).tasks) >= count


async def test_nats_node_killed_during_stream_of_tasks_loses_none(nats_cluster: NatsCluster) -> None:
    prefix = unique_prefix()
    streams = {"replicas": 3}
    config = agent_config(nats_cluster.url, prefix, "w", ["ha"], concurrency=8, streams=streams)
    second = agent_config(nats_cluster.url, prefix, "w", ["ha"], streams=streams)
    async with running(config), running(second), swarm_client(nats_cluster.url, prefix) as client:
        created: list[str] = []
        await _replicated(client)
        for i in range(150):
            if i == 50:
                nats_cluster.kill(0)
            created.append(await _create_retrying(client, i))
        await asyncio.to_thread(nats_cluster.restart, 0)
        records = await asyncio.gather(*(client.tasks.wait(task_id, 90) for task_id in created))
    assert [r.state for r in records] == [TaskState.SUCCEEDED] * 150
    assert [r.result["echo"]["i"] for r in records] == list(range(150))


async def _replicated(client: SwarmClient) -> None:
    """Wait until the task stream and bucket have a leader and every follower current: a group whose leader is killed
    before its followers joined it elects no one (seen when node 0 died 50 ms after creating them)."""

    async def current() -> bool:
        for stream in (client.names.tasks_stream, f"KV_{client.names.tasks_bucket}"):
            cluster = (await client.conn.js.stream_info(stream)).cluster
            replicas = (cluster.replicas or []) if cluster is not None else []
            if cluster is None or not cluster.leader or len(replicas) < 2 or not all(r.current for r in replicas):
                return False
        return True

    # Under a full CI run a fresh R3 group can take over a minute to have every follower current (60 s ran out once).
    await wait_for(current, CLUSTER_PATIENCE, "the task stream and bucket replicated on every node")


async def _create_retrying(client: SwarmClient, i: int, extra: dict[str, object] | None = None) -> str:
    # The producer side retries with the same task id: dedup makes that safe during a failover.
    # Until a deadline: an election on a busy machine can outlast a count of quick refusals ("no responders").
    task_id = f"task-{i}"
    deadline = time.monotonic() + CLUSTER_PATIENCE
    while True:
        try:
            await client.tasks.create("ha", {"i": i, **(extra or {})}, task_id=task_id)
            return task_id
        except Exception as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not create {task_id} during failover") from exc
            await asyncio.sleep(0.25)


async def test_failover_with_lost_acks_loses_none_and_completes_none_twice(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    """Tasks flow while a NATS node and then a runtime replica are killed (kill -9): acks in flight are lost.

    Every task succeeds, and each is recorded as completed exactly once: a redelivery of a task whose
    ack was lost finds its state final and is acked, not run again. Streams are replicated as the cluster (3).
    """
    prefix = unique_prefix()
    in_process = agent_config(nats_cluster.url, prefix, "w", ["ha"], concurrency=8)
    doomed = agent_config(nats_cluster.url, prefix, "w", ["ha"], concurrency=8)
    # The runs that completed, per task: (replica, start) of each "succeeded" write. A write repeated after a lost
    # answer (the same run's outcome written again) is the same run; a task run again has another start.
    completions: dict[str, set[tuple[str | None, float | None]]] = defaultdict(set)
    # Watched through a node that stays up: every write of a task's state, in order.
    observer = await nats.connect(nats_cluster.urls[2])
    process = runtime_process(doomed, tmp_path)
    try:
        async with running(in_process), swarm_client(nats_cluster.url, prefix) as client:

            async def on_state(msg: Msg) -> None:
                record = TaskRecord.model_validate_json(msg.data)
                if record.state is TaskState.SUCCEEDED:
                    completions[record.id].add((record.agent, record.started_at))

            await observer.subscribe(f"$KV.{client.names.tasks_bucket}.task.>", cb=on_state)
            created: list[str] = []
            await _replicated(client)
            for i in range(200):
                if i == 50:
                    nats_cluster.kill(0)
                if i == 100:
                    process.kill()
                if i == 150:
                    await asyncio.to_thread(nats_cluster.restart, 0)
                created.append(await _create_retrying(client, i, {"sleep": 0.02}))
            records = await asyncio.gather(*(client.tasks.wait(task_id, 120) for task_id in created))
            await wait_for(lambda: _all_seen(completions, created), what="every completion seen by the observer")
    finally:
        process.stop()
        await observer.close()
    lost = [r.id for r in records if r.state is not TaskState.SUCCEEDED]
    twice = {task_id: runs for task_id, runs in completions.items() if len(runs) > 1}
    assert (lost, twice) == ([], {})


async def _all_seen(completions: dict[str, set[tuple[str | None, float | None]]], created: list[str]) -> bool:
    return all(completions.get(task_id) for task_id in created)
