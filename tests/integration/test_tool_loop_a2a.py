"""spec.tools.a2a: an agent's model asks external A2A agents through the official a2a-sdk client — an agent built with
the official a2a-sdk server (bearer token from a Secret's variable), and another kubeswarm agent's A2A endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubeswarm_runtime.tasks import TaskState

from examples.tools.scripted_model import Script
from tests.integration.runtime_helpers import agent_config, running, swarm_client, unique_prefix
from tests.integration.test_mcp_support import mcp_agent
from tests.integration.tool_helpers import example_server, model_config, scripted_model
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.integration

TOKEN = "a2a-bearer-token"
ASKER: Script = {
    "asker": [
        {"tool_calls": [{"name": "a2a__shouter", "arguments": {"input": "{{prompt}}", "skill": "shout"}}]},
        {"tool_calls": [{"name": "a2a__shouter", "arguments": {"input": "fail"}}]},
        {"tool_calls": [{"name": "a2a__swarm", "arguments": {"input": {"n": 7}}}]},
        {"text": "answer: {{results}}"},
    ]
}


async def test_the_model_asks_external_a2a_agents(nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBESWARM_A2A_HEADER_0_0", f"Bearer {TOKEN}")
    prefix = unique_prefix()
    with example_server("examples.tools.echo_a2a", tmp_path, "--token", TOKEN) as port:
        async with scripted_model(ASKER) as (url, requests), mcp_agent(nats_server.url) as other:
            tools = {
                "a2a": [
                    {"name": "shouter", "url": f"http://127.0.0.1:{port}", "header_env": {"Authorization": "KUBESWARM_A2A_HEADER_0_0"}},
                    {"name": "swarm", "url": other.url, "description": "Another kubeswarm agent, over A2A."},
                ]
            }
            asker = agent_config(nats_server.url, prefix, "asker", ["ask"], model=model_config("anthropic", url, "asker"), tools=tools)
            async with running(asker), swarm_client(nats_server.url, prefix) as client:
                done = await client.tasks.wait((await client.tasks.create("ask", "hello there")).id, 60)
    assert done.state is TaskState.SUCCEEDED, done.error
    steps = [s for s in done.steps or [] if s["kind"] == "tool"]
    assert [(s["tool"], s["outcome"]) for s in steps] == [("a2a__shouter", "ok"), ("a2a__shouter", "error"), ("a2a__swarm", "ok")]
    assert steps[0]["output"] == "HELLO THERE!"  # the official server's task, its artifact
    assert "TASK_STATE_FAILED: asked to fail" in steps[1]["output"]  # a failed remote task is the tool's error, for the model
    assert '"echo":{"n":7' in steps[2]["output"].replace(" ", "")  # our own A2A endpoint ran it as a swarm task
    # The model was shown the card's description and skills, and no token reached the steps.
    tools_offered = {t["name"]: t for t in requests[0]["body"]["tools"]}
    assert (
        "Repeats what it is sent" in tools_offered["a2a__shouter"]["description"]
        and "shout" in tools_offered["a2a__shouter"]["description"]
    )
    assert TOKEN not in str(done.steps)
