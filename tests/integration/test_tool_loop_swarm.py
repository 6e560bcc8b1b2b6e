"""The tool loop on a real NATS: agents cooperating through the swarm's tools and an MCP server built with the
official SDK, tool errors and timeouts back to the model, limits, the delegation depth, and a crash mid-loop."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from kubeswarm_runtime.config import RuntimeConfig
from kubeswarm_runtime.runtime import AgentRuntime
from kubeswarm_runtime.tasks import TaskRecord, TaskState
from nats.aio.msg import Msg

from examples.tools.scripted_model import Script
from tests.integration.runtime_helpers import agent_config, config_env, running, swarm_client, unique_prefix, wait_for
from tests.integration.test_mcp_auth import SWARM_KEY, hs256
from tests.integration.test_mcp_support import mcp_agent
from tests.integration.tool_helpers import model_config, model_env, scripted_model, weather_server
from tests.testbed.nats import NatsServer
from tests.testbed.procs import ManagedProcess

pytestmark = pytest.mark.integration

COOPERATION: Script = {
    "planner": [
        {
            "tool_calls": [
                {"name": "request_capability", "arguments": {"capability": "research", "input": "tides of {{prompt}}"}},
                {"name": "weather__forecast", "arguments": {"city": "{{prompt}}"}},
            ]
        },
        {
            "tool_calls": [
                {"name": "share_discovery", "arguments": {"discovery_type": "plan", "content": "{{results}}"}},
                {"name": "create_task", "arguments": {"capability": "write", "input": "article on {{prompt}}", "wait_seconds": 30}},
                {"name": "get_task", "arguments": {"task_id": "no-such-task"}},
            ]
        },
        {"text": "report: {{results}}"},
    ],
    "researcher": [{"text": "notes: {{prompt}} rise twice a day"}],
    "writer": [{"text": "article: {{prompt}}"}],
}


def config(nats: NatsServer, prefix: str, agent: str, capabilities: list[str], provider: str, url: str, **fields: Any) -> RuntimeConfig:
    return agent_config(nats.url, prefix, agent, capabilities, model=model_config(provider, url, agent), **fields)


@asynccontextmanager
async def agents(*configs: RuntimeConfig) -> AsyncIterator[list[AgentRuntime]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running(c)) for c in configs]


async def test_agents_cooperate_through_swarm_tools_and_an_mcp_server(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    prefix = unique_prefix()
    with weather_server(tmp_path) as weather:
        async with scripted_model(COOPERATION) as (url, _requests):
            tools = {"mcp_servers": [{"name": "weather", "url": weather, "timeout_seconds": 10}]}
            planner = config(nats_server, prefix, "planner", ["plan"], "openai", url, tools=tools)
            researcher = config(nats_server, prefix, "researcher", ["research"], "anthropic", url)
            writer = config(nats_server, prefix, "writer", ["write"], "bedrock", url)
            async with agents(planner, researcher, writer), swarm_client(nats_server.url, prefix) as client:
                task = await client.tasks.create("plan", "Brest")
                done = await client.tasks.wait(task.id, 60)
                written = (await client.tasks.list(capability="write")).tasks
                plans = await client.discoveries.list(type="plan")
    assert done.state is TaskState.SUCCEEDED, done.error
    text = done.result["text"]
    assert "article: article on Brest" in text  # the writer's answer, through create_task
    assert "no task 'no-such-task'" in text  # a tool error went back to the model
    assert done.result["turns"] == 3 and done.result["tool_calls"] == 5
    # The delegated task carries the depth and the idempotency key of its step.
    assert [(t.id, t.depth) for t in written] == [(f"{task.id}-t2c1", 1)]
    # The discovery holds what the researcher (by capability) and the MCP server answered.
    assert len(plans) == 1 and plans[0].agent == "planner"
    assert "rise twice a day" in plans[0].content and "Brest: sunny" in plans[0].content
    steps = done.steps or []
    assert [(s.get("tool"), s.get("outcome")) for s in steps if s["kind"] == "tool"] == [
        ("request_capability", "ok"),
        ("weather__forecast", "ok"),
        ("share_discovery", "ok"),
        ("create_task", "ok"),
        ("get_task", "error"),
    ]


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_a_hanging_tool_server_times_out_and_the_task_goes_on(nats_server: NatsServer, tmp_path: Path, transport: str) -> None:
    script: Script = {
        "caller": [
            {
                "tool_calls": [
                    {"name": "weather__hang", "arguments": {"seconds": 600}},
                    {"name": "weather__forecast", "arguments": {"city": "Oslo"}},
                ]
            },
            {"text": "{{results}}"},
        ]
    }
    prefix = unique_prefix()
    with weather_server(tmp_path, transport) as weather:
        async with scripted_model(script) as (url, _requests):
            tools = {"swarm": False, "mcp_servers": [{"name": "weather", "url": weather, "transport": transport, "timeout_seconds": 2}]}
            caller = config(nats_server, prefix, "caller", ["call"], "openai", url, tools=tools)
            async with agents(caller) as (runtime,), swarm_client(nats_server.url, prefix) as client:
                done = await client.tasks.wait((await client.tasks.create("call", "go")).id, 30)
                metrics = runtime.metrics
    assert done.state is TaskState.SUCCEEDED, done.error
    assert "weather__hang did not answer within 2s" in done.result["text"]
    assert "Oslo: sunny" in done.result["text"]
    assert metrics.tool_calls.labels("weather__hang", "timeout")._value.get() == 1
    assert metrics.tool_calls.labels("weather__forecast", "ok")._value.get() == 1


CIRCLE: Script = {
    "ping": [
        {"tool_calls": [{"name": "create_task", "arguments": {"capability": "pong", "input": "{{prompt}}", "wait_seconds": 60}}]},
        {"text": "ping got {{results}}"},
    ],
    "pong": [
        {"tool_calls": [{"name": "create_task", "arguments": {"capability": "ping", "input": "{{prompt}}", "wait_seconds": 60}}]},
        {"text": "pong got {{results}}"},
    ],
}


async def test_a_delegation_circle_stops_at_the_depth_limit(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    async with scripted_model(CIRCLE) as (url, _requests):
        limits = {"max_delegation_depth": 2}
        ping = config(nats_server, prefix, "ping", ["ping"], "openai", url, tools=limits)
        pong = config(nats_server, prefix, "pong", ["pong"], "openai", url, tools=limits)
        async with agents(ping, pong), swarm_client(nats_server.url, prefix) as client:
            done = await client.tasks.wait((await client.tasks.create("ping", "hello")).id, 60)
            created = (await client.tasks.list()).tasks
    assert done.state is TaskState.SUCCEEDED, done.error
    assert "delegation depth limit reached: this task is 2 delegations deep and maxDelegationDepth is 2" in done.result["text"]
    assert sorted(t.depth for t in created) == [0, 1, 2]
    refused = [s for t in created for s in t.steps or [] if s.get("outcome") == "refused"]
    assert len(refused) == 1 and refused[0]["tool"] == "create_task"


async def test_max_turns_fails_the_task_with_the_limit_named(nats_server: NatsServer) -> None:
    script: Script = {"looper": [{"tool_calls": [{"name": "list_agents", "arguments": {}}], "repeat": True}]}
    prefix = unique_prefix()
    async with scripted_model(script) as (url, requests):
        looper = config(nats_server, prefix, "looper", ["loop"], "anthropic", url, tools={"max_turns": 3})
        async with agents(looper), swarm_client(nats_server.url, prefix) as client:
            events: list[dict[str, Any]] = []

            async def on_event(msg: Msg) -> None:
                events.append(json.loads(msg.data))

            await client.conn.nc.subscribe(f"{prefix}.agent.*.events", cb=on_event)
            task = await client.tasks.create("loop", "go")
            done = await client.tasks.wait(task.id, 30)

            async def all_steps_seen() -> bool:
                return len(events) >= 5

            await wait_for(all_steps_seen, 10, "the steps as events")
    assert done.state is TaskState.DEAD
    assert "maxTurns (3) reached without a final answer" in (done.error or "")
    assert len(requests) == 3  # a limit is permanent: not retried
    assert [s["kind"] for s in done.steps or []] == ["model", "tool", "model", "tool", "model"]
    # Each step was also published as it happened, on the agent's events subject.
    assert [(e["event"], e["task_id"], e["step"]["kind"]) for e in events] == [("task_step", task.id, s["kind"]) for s in done.steps or []]


async def test_messages_sent_again_with_their_id_are_taken_once(nats_server: NatsServer) -> None:
    prefix = unique_prefix()
    async with (
        agents(agent_config(nats_server.url, prefix, "listener", [])) as (listener,),
        swarm_client(nats_server.url, prefix) as client,
    ):
        for message_id in ("step-1", "step-1", "step-2"):
            await client.messages.send("listener", "command", {"n": message_id}, message_id=message_id)
        for message_id in ("all-1", "all-1", "all-2"):
            await client.messages.broadcast({"n": message_id}, message_id=message_id)

        async def last_ones_arrived() -> bool:
            return {"step-2", "all-2"} <= {m.id for m in listener.swarm.messages.received}

        await wait_for(last_ones_arrived, 10, "the last messages")
        taken = [m.id for m in listener.swarm.messages.received]
    assert sorted(taken) == ["all-1", "all-2", "step-1", "step-2"]


CRASHY: Script = {
    "crashy": [
        {
            "tool_calls": [
                {"name": "share_discovery", "arguments": {"discovery_type": "finding", "content": "found {{prompt}}"}},
                {"name": "create_task", "arguments": {"capability": "write", "input": "write {{prompt}}"}},
            ]
        },
        {"tool_calls": [{"name": "request_capability", "arguments": {"capability": "slow", "input": {"sleep": 3}, "timeout_seconds": 30}}]},
        {"text": "finished"},
    ]
}


def agent_process(config: RuntimeConfig, url: str, log_dir: Path) -> ManagedProcess:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESWARM_")}
    env |= config_env(config) | model_env("openai", url, config.agent)
    process = ManagedProcess(config.replica_id, [sys.executable, "-m", "kubeswarm_runtime"], log_dir / f"{config.replica_id}.log", env=env)
    process.start()
    return process


async def test_a_task_killed_mid_loop_is_run_again_without_duplicates(nats_server: NatsServer, tmp_path: Path) -> None:
    prefix = unique_prefix()
    async with scripted_model(CRASHY) as (url, _requests):
        helpers = [agent_config(nats_server.url, prefix, "writer", ["write"]), agent_config(nats_server.url, prefix, "sleeper", ["slow"])]
        async with agents(*helpers), swarm_client(nats_server.url, prefix) as client:
            first = agent_process(agent_config(nats_server.url, prefix, "crashy", ["crash"]), url, tmp_path)
            second = None
            try:
                task = await client.tasks.create("crash", "gold")

                async def in_second_turn() -> bool:
                    # The first turn's effects are done and the second turn's call is running.
                    return bool(await client.discoveries.list(type="finding")) and bool((await client.tasks.list(capability="write")).tasks)

                await wait_for(in_second_turn, 30, "the loop's first turn")
                first.kill()
                second = agent_process(agent_config(nats_server.url, prefix, "crashy", ["crash"]), url, tmp_path)
                done: TaskRecord = await client.tasks.wait(task.id, 60)
                findings = await client.discoveries.list(type="finding")
                written = (await client.tasks.list(capability="write")).tasks
            finally:
                first.stop()
                if second is not None:
                    second.stop()
    assert done.state is TaskState.SUCCEEDED, done.error
    assert done.attempts == 2 and done.result["text"] == "finished"
    assert len(findings) == 1 and findings[0].content == "found gold"
    assert [t.id for t in written] == [f"{task.id}-t1c1"]


async def test_another_agent_by_name_answers_a_direct_query(nats_server: NatsServer) -> None:
    """spec.tools.agents without a capability: the tool asks the agent by its name (one of its replicas answers)."""
    script: Script = {"asker": [{"tool_calls": [{"name": "agent__helper", "arguments": {"input": "hi"}}]}, {"text": "{{results}}"}]}
    prefix = unique_prefix()
    async with scripted_model(script) as (url, requests):
        asker = config(nats_server, prefix, "asker", ["ask"], "openai", url, tools={"swarm": False, "agents": [{"name": "helper"}]})
        helper = agent_config(nats_server.url, prefix, "helper", [])
        async with agents(asker, helper), swarm_client(nats_server.url, prefix) as client:
            done = await client.tasks.wait((await client.tasks.create("ask", "go")).id, 30)
    assert done.state is TaskState.SUCCEEDED, done.error
    assert json.loads(done.result["text"]) == {"echo": "hi", "agent": "helper", "capability": "query"}
    assert [t["function"]["name"] for t in requests[0]["body"]["tools"]] == ["agent__helper"]  # swarm: false leaves only it


async def test_an_agent_of_another_swarm_as_an_mcp_server_with_a_bearer_from_a_secret(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Agent's MCP endpoint (JWT auth) as a tool server: the header's value comes from the environment (a Secret in a pod)
    and never shows in the task's record."""
    token = hs256()
    monkeypatch.setenv("KUBESWARM_TOOL_HEADER_0_0", f"Bearer {token}")
    script: Script = {"caller": [{"tool_calls": [{"name": "lab__list_agents", "arguments": {}}]}, {"text": "{{results}}"}]}
    auth: dict[str, Any] = {"auth": "jwt", "jwt_key": SWARM_KEY, "audience": "kubeswarm", "required_scopes": ["swarm:use"]}
    async with mcp_agent(nats_server.url, **auth) as lab, scripted_model(script) as (url, _requests):
        server = {"name": "lab", "url": lab.mcp, "header_env": {"Authorization": "KUBESWARM_TOOL_HEADER_0_0"}}
        prefix = unique_prefix()
        caller = config(nats_server, prefix, "caller", ["call"], "openai", url, tools={"swarm": False, "mcp_servers": [server]})
        async with agents(caller), swarm_client(nats_server.url, prefix) as client:
            done = await client.tasks.wait((await client.tasks.create("call", "go")).id, 30)
    assert done.state is TaskState.SUCCEEDED, done.error
    assert lab.runtime.config.replica_id in done.result["text"]  # the other swarm's agents, listed by its endpoint
    assert token not in done.model_dump_json()
