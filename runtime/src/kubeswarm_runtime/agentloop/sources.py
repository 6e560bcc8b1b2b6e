"""An agent's toolbox from its configuration (``spec.tools``): the swarm's tools, other agents, remote MCP servers, A2A agents."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .a2a import A2aAgentTools
from .remote import McpServerTools
from .swarm import agent_tool, swarm_tools
from .toolbox import StaticTools, Toolbox, ToolSource

if TYPE_CHECKING:
    from ..runtime import AgentRuntime


def build_toolbox(runtime: AgentRuntime) -> Toolbox:
    config = runtime.config.tools
    timeout = config.tool_timeout_seconds
    local = swarm_tools(runtime, timeout) if config.swarm else []
    local += [agent_tool(runtime, agent, timeout) for agent in config.agents]
    remote: list[McpServerTools | A2aAgentTools] = [McpServerTools(server, timeout) for server in config.mcp_servers]
    remote += [A2aAgentTools(agent, timeout) for agent in config.a2a]
    sources: list[ToolSource] = [StaticTools(local), *remote]
    secrets = [secret for server in remote for secret in server.secrets]
    if runtime.config.model.api_key is not None:
        secrets.append(runtime.config.model.api_key.get_secret_value())
    return Toolbox(sources, config, secrets)
