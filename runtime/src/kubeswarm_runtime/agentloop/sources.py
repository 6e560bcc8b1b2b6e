"""An agent's toolbox from its configuration (``spec.tools``): the swarm's tools, other agents, remote MCP servers."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    remote = [McpServerTools(server, timeout) for server in config.mcp_servers]
    sources: list[ToolSource] = [StaticTools(local), *remote]
    secrets = [secret for server in remote for secret in server.secrets]
    if runtime.config.model.api_key is not None:
        secrets.append(runtime.config.model.api_key.get_secret_value())
    return Toolbox(sources, config, secrets)
