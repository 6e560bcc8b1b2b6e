"""Dead letters as operations on a real nats-server: list, show, replay (linked to the dead task) and purge,
through the swarm client, the MCP tools (official SDK client) and the ``kubeswarm dlq`` verbs; the waiting count in metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.providers import TaskContext
from kubeswarm_runtime.providers.base import PermanentTaskError
from kubeswarm_runtime.providers.echo import EchoHandler
from kubeswarm_runtime.tasks import DeadLetterNotFound, NotReplayable, TaskRecord, TaskState
from mcp.client.client import Client

from tests.integration.runtime_helpers import agent_config, running, swarm_client, unique_prefix, wait_for
from tests.integration.test_mcp_support import mcp_agent
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.integration


class Broken(EchoHandler):
    """Echo, but fails for good while ``broken`` (the outage a replay comes after)."""

    broken = True

    async def handle(self, ctx: TaskContext) -> Any:
        if self.broken and ctx.capability == "fragile":
            raise PermanentTaskError("the upstream is down")
        return await super().handle(ctx)


async def dead(client: SwarmClient, record: TaskRecord) -> TaskRecord:
    final = await client.tasks.wait(record.id, 20)
    assert final.state is TaskState.DEAD, final
    return final


async def test_list_show_replay_purge(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    handler = Broken()
    config = agent_config(nats_server.url, prefix, "worker", ["fragile", "echo"])
    async with running(config, handler) as runtime, swarm_client(nats_server.url, prefix) as client:
        first = await dead(client, await client.tasks.create("fragile", {"order": 1}, context_id="conversation-7"))
        second = await dead(client, await client.tasks.create("fragile", {"order": 2}))
        # A delivery that is no task at all is dead-lettered too, as a malformed letter.
        await client.conn.js.publish(client.names.task("echo"), b"not a task")
        await wait_for(lambda: _counts_are(client, {"fragile": 2, "echo": 1}), what="three dead letters")

        letters = await client.dead_letters.list()
        assert [(le.capability, le.task_id) for le in letters] == [("fragile", first.id), ("fragile", second.id), ("echo", None)]
        assert letters[0].reason == "permanent error: the upstream is down" and letters[0].attempts == 1
        assert letters[0].task is not None and letters[0].task.input == {"order": 1}
        assert [le.task_id for le in await client.dead_letters.list(capability="fragile", since_seq=letters[0].seq)] == [second.id]
        malformed = await client.dead_letters.get(seq=letters[2].seq)
        assert malformed.raw == "not a task" and malformed.reason.startswith("malformed task")
        assert (await client.dead_letters.get(task_id=second.id)).seq == letters[1].seq

        # The waiting count reaches the replica's metrics (refreshed every heartbeat).
        async def gauge_is_two() -> bool:
            return runtime.metrics.registry.get_sample_value("kubeswarm_dead_letters_waiting", {"capability": "fragile"}) == 2

        await wait_for(gauge_is_two, what="kubeswarm_dead_letters_waiting to count the letters")

        # The outage is over: the replay runs, linked to the dead task and its attempts; the letter is gone.
        handler.broken = False
        replayed = await client.dead_letters.replay(task_id=first.id)
        assert replayed.replay_of == first.id and replayed.id != first.id and replayed.context_id == "conversation-7"
        (life,) = replayed.history
        assert (life.task_id, life.attempts, life.reason) == (first.id, 1, "permanent error: the upstream is down")
        done = await client.tasks.wait(replayed.id, 20)
        assert done.state is TaskState.SUCCEEDED and done.result["echo"] == {"order": 1} and done.replay_of == first.id
        assert (await client.tasks.get(first.id)).state is TaskState.DEAD  # type: ignore[union-attr]  # the dead one stays as it was
        with pytest.raises(DeadLetterNotFound):
            await client.dead_letters.replay(task_id=first.id)
        with pytest.raises(DeadLetterNotFound):
            await client.dead_letters.replay(seq=letters[0].seq)
        with pytest.raises(NotReplayable):
            await client.dead_letters.replay(seq=letters[2].seq)

        # A task that dies again after its replay keeps the whole chain.
        handler.broken = True
        again = await dead(client, await client.dead_letters.replay(task_id=second.id))
        chained = await dead(client, await client.dead_letters.replay(task_id=again.id))
        assert [life.task_id for life in chained.history] == [second.id, again.id] and chained.replay_of == again.id

        assert await client.dead_letters.purge(seq=letters[2].seq) == 1
        assert await client.dead_letters.purge(capability="fragile") == 1
        assert await client.dead_letters.counts() == {}
        assert await client.dead_letters.list() == []


async def _counts_are(client: SwarmClient, expected: dict[str, int]) -> bool:
    return bool(await client.dead_letters.counts() == expected)


async def test_dead_letter_tools_over_mcp(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url) as agent, Client(agent.mcp) as mcp:
        swarm = agent.runtime.swarm
        record = await swarm.tasks.create("echo", {"fail": "permanent"})
        await dead(swarm, record)

        async def ok(name: str, arguments: dict[str, Any]) -> Any:
            result = await mcp.call_tool(name, arguments)
            assert not result.is_error, (name, result.content)
            return result.structured_content

        listed = await ok("list_dead_letters", {"capability": "echo"})
        assert [le["task_id"] for le in listed["dead_letters"]] == [record.id] and listed["waiting"] == {"echo": 1}
        seq = listed["dead_letters"][0]["seq"]
        assert (await ok("get_dead_letter", {"seq": seq}))["dead_letter"]["reason"].startswith("permanent error")
        bad = await mcp.call_tool("get_dead_letter", {"seq": seq, "task_id": record.id})
        assert bad.is_error and "exactly one" in bad.content[0].text  # type: ignore[union-attr]
        replayed = (await ok("replay_dead_letter", {"task_id": record.id}))["task"]
        assert replayed["replay_of"] == record.id and replayed["history"][0]["task_id"] == record.id
        gone = await mcp.call_tool("replay_dead_letter", {"task_id": record.id})
        assert gone.is_error and "no dead letter" in gone.content[0].text  # type: ignore[union-attr]
        await dead(swarm, TaskRecord.model_validate(replayed))  # the same input fails again
        assert (await ok("purge_dead_letters", {"all": True}))["purged"] == 1
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert tools["purge_dead_letters"].annotations.destructive_hint  # type: ignore[union-attr]


def kubeswarm(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESWARM_")}
    return subprocess.run([sys.executable, "-m", "kubeswarm_runtime.cli", *args], capture_output=True, text=True, timeout=60, env=env)


async def test_dlq_cli_against_the_swarms_nats(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    config = agent_config(nats_server.url, prefix, "worker", ["echo"])
    async with running(config), swarm_client(nats_server.url, prefix) as client:
        record = await dead(client, await client.tasks.create("echo", {"fail": "permanent"}))
        target = ("--nats-url", nats_server.url, "--prefix", prefix)
        listed = kubeswarm("dlq", "list", *target)
        assert listed.returncode == 0, listed.stderr
        assert record.id in listed.stdout and f"waiting under {prefix}: echo 1" in listed.stdout
        shown = kubeswarm("dlq", "show", record.id, *target)
        assert json.loads(shown.stdout)["task"]["input"] == {"fail": "permanent"}
        replayed = kubeswarm("dlq", "replay", record.id, *target)
        assert json.loads(replayed.stdout)["replay_of"] == record.id
        missing = kubeswarm("dlq", "show", record.id, *target)
        assert missing.returncode == 1 and "no dead letter" in missing.stderr
        unclear = kubeswarm("dlq", "purge", *target)
        assert unclear.returncode == 2 and "exactly one" in unclear.stderr
        await wait_for(lambda: _counts_are(client, {"echo": 1}), what="the replay to die again")
        purged = kubeswarm("dlq", "purge", "--all", *target)
        assert purged.stdout.strip() == "purged 1 dead letter"
