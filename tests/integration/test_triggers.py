"""Triggers on a real nats-server: cron (one task per tick whatever the replica count, the tick's task made on start
when every replica was down at the tick) and HMAC-signed webhooks (202 with the task, 401 and nothing for a bad signature)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
from kubeswarm_runtime.config import CronTriggerConfig, TriggersConfig
from kubeswarm_runtime.runtime import AgentRuntime
from kubeswarm_runtime.tasks import TaskState
from kubeswarm_runtime.triggers import CronTriggers, last_tick, next_tick, tick_task_id

from tests.integration.runtime_helpers import agent_config, running, swarm_client, unique_prefix, wait_for
from tests.integration.test_mcp_support import mcp_agent
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.integration

EVERY_MINUTE = {"name": "report", "schedule": "* * * * *", "capability": "echo", "input": {"report": "daily"}}
KEY = "a-webhook-key-of-enough-length"


def succeeded(runtimes: list[AgentRuntime]) -> int:
    return sum(
        int(r.metrics.registry.get_sample_value("kubeswarm_tasks_total", {"capability": "echo", "outcome": "succeeded"}) or 0)
        for r in runtimes
    )


def clock_at(moment: datetime) -> Any:
    """A clock that reads ``moment`` now and runs on in real time from there."""
    offset = moment.timestamp() - time.time()
    return lambda: time.time() + offset


async def test_one_task_per_tick_whatever_the_replicas(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    trigger = CronTriggerConfig.model_validate(EVERY_MINUTE)
    configs = [agent_config(nats_server.url, prefix, "reporter", ["echo"]) for _ in range(3)]
    async with (
        running(configs[0]) as a,
        running(configs[1]) as b,
        running(configs[2]) as c,
        swarm_client(nats_server.url, prefix) as client,
    ):
        # Three replicas reach the same tick (each keeps the schedule): one task, run once.
        tick = next_tick(trigger, datetime.now().astimezone())
        schedulers = [CronTriggers(r.swarm.tasks, r.config) for r in (a, b, c)]
        records = await asyncio.gather(*(s.fire(trigger, tick) for s in schedulers))
        assert {r.id for r in records} == {tick_task_id("reporter", "report", tick)}
        done = await client.tasks.wait(records[0].id, 20)
        assert done.state is TaskState.SUCCEEDED and done.result["echo"] == {"report": "daily"}
        await asyncio.gather(*(s.fire(trigger, tick) for s in schedulers))  # late copies of the same tick
        assert [t.id for t in (await client.tasks.list()).tasks] == [records[0].id]
        assert succeeded([a, b, c]) == 1


async def test_the_schedule_fires_on_the_tick(nats_server: NatsServer) -> None:
    """The replicas' own loops, on a clock set just before a minute's tick: the tick's task appears, once."""
    prefix = unique_prefix()
    trigger = CronTriggerConfig.model_validate(EVERY_MINUTE)
    upcoming = next_tick(trigger, datetime.now().astimezone() + timedelta(minutes=5))
    clock = clock_at(upcoming - timedelta(seconds=0.3))
    config = agent_config(nats_server.url, prefix, "reporter", ["echo"], streams={"duplicate_window_seconds": 20})
    async with running(config) as one, running(config.model_copy(update={"replica_id": "reporter-2"})) as two:
        loops = [
            CronTriggers(r.swarm.tasks, r.config.model_copy(update={"triggers": TriggersConfig(cron=[trigger])}), clock) for r in (one, two)
        ]
        for loop in loops:
            loop.start()
        try:
            expected = tick_task_id("reporter", "report", upcoming)

            async def ran() -> bool:
                record = await one.swarm.tasks.get(expected)
                return record is not None and record.state is TaskState.SUCCEEDED

            await wait_for(ran, what="the tick's task to run")
            assert [t.id for t in (await one.swarm.tasks.list()).tasks] == [expected]  # no catch-up task: the last tick is minutes back
        finally:
            for loop in loops:
                await loop.stop()
        assert succeeded([one, two]) == 1


async def test_a_tick_missed_during_a_restart_is_run_once_on_start(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    trigger = CronTriggerConfig.model_validate(EVERY_MINUTE)
    config = agent_config(nats_server.url, prefix, "reporter", ["echo"])
    tick = last_tick(trigger, datetime.now().astimezone() - timedelta(minutes=10))
    async with running(config) as runtime, swarm_client(nats_server.url, prefix) as client:
        with_cron = runtime.config.model_copy(update={"triggers": TriggersConfig(cron=[trigger])})
        # Every replica was down at the tick; one starts 30 s later: the tick's task is made then.
        restarted = CronTriggers(runtime.swarm.tasks, with_cron, clock_at(tick + timedelta(seconds=30)))
        record = await restarted.catch_up(trigger)
        assert record is not None and record.id == tick_task_id("reporter", "report", tick)
        assert (await client.tasks.wait(record.id, 20)).state is TaskState.SUCCEEDED
        # A second replica starting then as well: the same task, not run again.
        again = await CronTriggers(runtime.swarm.tasks, with_cron, clock_at(tick + timedelta(seconds=40))).catch_up(trigger)
        assert again is not None and again.id == record.id and again.state is TaskState.SUCCEEDED
        # Past the dedup window a tick is not made up (it could no longer be told from a new one).
        hourly = CronTriggerConfig(name="hourly", schedule="0 * * * *", capability="echo")
        hour = last_tick(hourly, tick)
        late = CronTriggers(runtime.swarm.tasks, with_cron, clock_at(hour + timedelta(seconds=config.streams.duplicate_window_seconds + 5)))
        assert await late.catch_up(hourly) is None
        assert succeeded([runtime]) == 1


def signed(body: bytes, key: str = KEY) -> dict[str, str]:
    return {"X-Signature-256": "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()}


async def test_a_signed_webhook_call_is_a_task_and_a_bad_signature_creates_nothing(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBESWARM_WEBHOOK_KEY_0", KEY)
    hooks = {"webhooks": [{"name": "deploys", "capability": "echo", "key_env": "KUBESWARM_WEBHOOK_KEY_0"}]}
    async with mcp_agent(nats_server.url, fields={"triggers": hooks}) as agent, aiohttp.ClientSession() as http:
        url = agent.url + "/hooks/deploys"
        body = json.dumps({"ref": "main", "sha": "abc123"}).encode()
        for headers in ({}, signed(body, "another-key"), {"X-Signature-256": "sha256=00"}, signed(b"other body")):
            async with http.post(url, data=body, headers=headers) as response:
                assert response.status == 401 and (await response.json())["error"] == "invalid_signature"
        assert (await agent.runtime.swarm.tasks.list()).tasks == []

        async with http.post(url, data=body, headers=signed(body) | {"Idempotency-Key": "delivery-1"}) as response:
            assert response.status == 202
            task_id = (await response.json())["task_id"]
        done = await agent.runtime.swarm.tasks.wait(task_id, 20)
        assert done.state is TaskState.SUCCEEDED and done.input == {"ref": "main", "sha": "abc123"}
        # The sender retries the same delivery: the same task. GitHub's header name works too; text bodies are text.
        async with http.post(
            url, data=body, headers={"X-Hub-Signature-256": signed(body)["X-Signature-256"], "Idempotency-Key": "delivery-1"}
        ) as response:
            assert response.status == 202 and (await response.json())["task_id"] == task_id
        async with http.post(url, data=b"plain text", headers=signed(b"plain text")) as response:
            text_task = (await response.json())["task_id"]
        assert (await agent.runtime.swarm.tasks.wait(text_task, 20)).input == "plain text"
        async with http.post(agent.url + "/hooks/nope", data=body, headers=signed(body)) as response:
            assert response.status == 404
        assert len((await agent.runtime.swarm.tasks.list()).tasks) == 2


async def test_a_webhook_without_its_key_refuses_every_call(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBESWARM_WEBHOOK_KEY_0", raising=False)
    hooks = {"webhooks": [{"name": "deploys", "capability": "echo", "key_env": "KUBESWARM_WEBHOOK_KEY_0"}]}
    async with mcp_agent(nats_server.url, fields={"triggers": hooks}) as agent, aiohttp.ClientSession() as http:
        async with http.post(agent.url + "/hooks/deploys", data=b"{}", headers=signed(b"{}", "")) as response:
            assert response.status == 503
        assert (await agent.runtime.swarm.tasks.list()).tasks == []
