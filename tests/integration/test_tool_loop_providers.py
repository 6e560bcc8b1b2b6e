"""The tool loop over each chat provider against the scripted stand-in (Anthropic Messages, Bedrock Converse, OpenAI
Chat Completions): multi-turn tool use, concurrent calls, tool errors back to the model, limits, steps and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubeswarm_runtime.agentloop.loop import LimitReached
from kubeswarm_runtime.agentloop.toolbox import StaticTools, Tool, Toolbox, ToolError
from kubeswarm_runtime.config import ToolsConfig
from kubeswarm_runtime.delegation import CallOrigin
from kubeswarm_runtime.metrics import RuntimeMetrics
from kubeswarm_runtime.providers import TaskContext, build_handler
from kubeswarm_runtime.providers.base import ToolDefinition

from examples.tools.scripted_model import Script
from tests.integration.tool_helpers import model_config, scripted_model

pytestmark = pytest.mark.integration

PROVIDERS = ["anthropic", "bedrock", "openai"]
NUMBERS = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}
NOTHING: dict[str, Any] = {"type": "object", "properties": {}}


def calculator_tools(arrived: list[str]) -> Toolbox:
    both_running = asyncio.Event()

    async def add(arguments: dict[str, Any], _origin: CallOrigin) -> str:
        return str(arguments["a"] + arguments["b"])

    async def broken(_arguments: dict[str, Any], _origin: CallOrigin) -> str:
        raise ToolError("broken tool failed: disk full")

    async def meet(arguments: dict[str, Any], _origin: CallOrigin) -> str:
        # Finishes only once both calls run at the same time: the loop runs a turn's calls concurrently.
        arrived.append(str(arguments))
        if len(arrived) == 2:
            both_running.set()
        await asyncio.wait_for(both_running.wait(), 10)
        return "met"

    tools = [
        Tool(ToolDefinition("add", "Add two numbers.", NUMBERS), add, 5),
        Tool(ToolDefinition("broken", "Always fails.", NOTHING), broken, 5),
        Tool(ToolDefinition("meet", "Waits for the other meet call.", NOTHING), meet, 15),
    ]
    return Toolbox([StaticTools(tools)], ToolsConfig(max_turns=4, max_tool_calls=10))


SCRIPT: Script = {
    "calc": [
        {
            "tool_calls": [
                {"name": "add", "arguments": {"a": 2, "b": 3}},
                {"name": "broken", "arguments": {}},
                {"name": "nope", "arguments": {}},
            ]
        },
        {"tool_calls": [{"name": "meet", "arguments": {"who": "x"}}, {"name": "meet", "arguments": {"who": "y"}}]},
        {"text": "final after {{results}}"},
    ],
    "loop": [{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}}], "repeat": True}],
}


def ctx(prompt: str = "compute") -> TaskContext:
    return TaskContext("task1", "calc", prompt, 1, "calculator")


def second_request_results(api: str, body: dict[str, Any]) -> list[tuple[str, bool]]:
    """(content, is error) of the tool results a provider sent, in its own shape."""
    if api == "anthropic":
        blocks = body["messages"][-1]["content"]
        return [(b["content"], b["is_error"]) for b in blocks if b["type"] == "tool_result"]
    if api == "bedrock":
        blocks = body["messages"][-1]["content"]
        return [(b["toolResult"]["content"][0]["text"], b["toolResult"]["status"] == "error") for b in blocks]
    return [(m["content"], False) for m in body["messages"] if m["role"] == "tool"][:3]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_multi_turn_tool_use(provider: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    arrived: list[str] = []
    metrics = RuntimeMetrics()
    async with scripted_model(SCRIPT) as (url, requests):
        handler = build_handler(model_config(provider, url, "calc"), metrics, calculator_tools(arrived))
        task = ctx()
        try:
            result = await handler.handle(task)
        finally:
            await handler.close()
    assert result["turns"] == 3 and result["tool_calls"] == 5
    assert result["text"].startswith("final after met")
    assert len(requests) == 3
    results = second_request_results(provider, requests[1]["body"])
    assert results[0] == ("5", False)
    assert "broken tool failed: disk full" in results[1][0]
    assert "no tool named 'nope'" in results[2][0]
    if provider != "openai":  # Chat Completions has no error flag on tool messages
        assert [error for _, error in results] == [False, True, True]
    # Every request offered the tools, in the provider's shape.
    first = requests[0]["body"]
    offered = {"anthropic": lambda: first["tools"], "bedrock": lambda: first["toolConfig"]["tools"], "openai": lambda: first["tools"]}
    assert len(offered[provider]()) == 3
    kinds = [(s["kind"], s.get("tool"), s.get("outcome")) for s in task.steps]
    assert kinds == [
        ("model", None, None),
        ("tool", "add", "ok"),
        ("tool", "broken", "error"),
        ("tool", "nope", "error"),
        ("model", None, None),
        ("tool", "meet", "ok"),
        ("tool", "meet", "ok"),
        ("model", None, None),
    ]
    assert metrics.tool_calls.labels("add", "ok")._value.get() == 1
    assert metrics.tool_calls.labels("broken", "error")._value.get() == 1
    assert metrics.tool_calls.labels("unknown", "error")._value.get() == 1
    assert metrics.llm_tokens.labels(provider, "calc", "output")._value.get() == 30


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_turns": 3}, "maxTurns (3) reached without a final answer"),
        ({"max_tool_calls": 2}, "maxToolCalls (2) would be exceeded"),
        ({"max_tokens_per_task": 1}, "maxTokensPerTask (1) used up after 1 turns"),
    ],
)
async def test_limits_fail_the_task_naming_the_limit(limits: dict[str, int], reason: str) -> None:
    async with scripted_model(SCRIPT) as (url, requests):
        toolbox = Toolbox(calculator_tools([]).sources, ToolsConfig(**limits))
        handler = build_handler(model_config("openai", url, "loop"), RuntimeMetrics(), toolbox)
        task = ctx()
        with pytest.raises(LimitReached, match=reason.replace("(", r"\(").replace(")", r"\)")):
            await handler.handle(task)
        await handler.close()
    assert task.steps[0]["kind"] == "model"  # what happened until then is kept
    assert len(requests) <= 3


async def test_openai_needs_no_key_for_a_local_endpoint() -> None:
    """A local OpenAI-compatible endpoint (vLLM, Ollama) needs no key: none is sent."""
    script: Script = {"m": [{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}, {"text": "{{results}}"}]}
    async with scripted_model(script) as (url, requests):
        config = model_config("openai", url, "m").model_copy(update={"api_key": None})
        handler = build_handler(config, RuntimeMetrics(), calculator_tools([]))
        result = await handler.handle(ctx())
        await handler.close()
    assert result["text"] == "3"
    assert requests[0]["headers"] and "authorization" not in {k.lower() for k in requests[0]["headers"]}
