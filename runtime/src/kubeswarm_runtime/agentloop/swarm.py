"""The swarm's own tools for the model, served in process (the MCP tools' definitions and code, no HTTP hop), and
other Agents as tools (``spec.tools.agents``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..capabilities import CapabilityError
from ..config import AgentToolConfig
from ..delegation import CallOrigin
from ..mcp.tools import SWARM_TOOLS, ToolFailure, ToolSpec
from ..providers.base import ToolDefinition
from .toolbox import NAMESPACE_SEPARATOR, Tool, ToolError

if TYPE_CHECKING:
    from ..runtime import AgentRuntime

# The swarm tools a model gets (the MCP endpoint serves a few more, for operators: get_agent_info, list_tasks, cancel_task).
MODEL_SWARM_TOOLS = (
    "request_capability",
    "create_task",
    "get_task",
    "share_discovery",
    "list_discoveries",
    "list_agents",
    "send_message",
    "broadcast",
)
# What they create, others see: a re-run of the task must not create it twice.
SIDE_EFFECTS = frozenset({"create_task", "share_discovery", "send_message", "broadcast"})
# What hands work to another agent: bounded by the delegation depth.
DELEGATING = frozenset({"create_task", "request_capability", "send_message"})
AGENT_TOOL_PREFIX = "agent" + NAMESPACE_SEPARATOR


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def validation_message(exc: ValidationError) -> str:
    return "invalid arguments: " + "; ".join(f"{'.'.join(map(str, e['loc'])) or '(arguments)'}: {e['msg']}" for e in exc.errors())


def swarm_tool(runtime: AgentRuntime, spec: ToolSpec[Any, Any], timeout_seconds: float) -> Tool:
    async def run(arguments: dict[str, object], origin: CallOrigin) -> str:
        try:
            return dumps(await spec.call(runtime, arguments, origin))
        except ValidationError as exc:
            raise ToolError(validation_message(exc)) from None
        except ToolFailure as exc:
            raise ToolError(str(exc)) from None

    definition = ToolDefinition(spec.name, spec.description, spec.definition["inputSchema"])
    return Tool(definition, run, timeout_seconds, side_effect=spec.name in SIDE_EFFECTS, delegates=spec.name in DELEGATING)


def swarm_tools(runtime: AgentRuntime, timeout_seconds: float) -> list[Tool]:
    by_name = {spec.name: spec for spec in SWARM_TOOLS}
    return [swarm_tool(runtime, by_name[name], timeout_seconds) for name in MODEL_SWARM_TOOLS]


AGENT_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"input": {"description": 'What to ask the agent: text, or an object with a "prompt".'}},
    "required": ["input"],
    "additionalProperties": False,
}


def agent_tool(runtime: AgentRuntime, agent: AgentToolConfig, timeout_seconds: float) -> Tool:
    """Ask another Agent: through its capability (one of its replicas, load-balanced), or a direct query by its name."""

    async def run(arguments: dict[str, object], origin: CallOrigin) -> str:
        if set(arguments) != {"input"}:
            raise ToolError('invalid arguments: pass exactly {"input": ...}')
        swarm = runtime.swarm
        try:
            if agent.capability:
                answer = await swarm.capabilities.request(
                    agent.capability, arguments["input"], timeout_seconds=timeout_seconds, depth=origin.depth
                )
            else:
                reply = await swarm.messages.query(agent.name, arguments["input"], timeout_seconds=timeout_seconds, depth=origin.depth)
                answer = reply.body
        except CapabilityError as exc:
            raise ToolError(str(exc)) from None
        # An agent with a model answers {"text": ..., "usage": ...}: the text is its answer.
        text = answer.get("text") if isinstance(answer, dict) else None
        return text if isinstance(text, str) else dumps(answer)

    route = f"its capability {agent.capability!r}" if agent.capability else "a direct message"
    description = (agent.description or f"Ask the agent {agent.name!r} and get its answer.") + f" (Reached through {route}.)"
    definition = ToolDefinition(AGENT_TOOL_PREFIX + agent.name, description, AGENT_INPUT_SCHEMA)
    return Tool(definition, run, timeout_seconds, delegates=True)
