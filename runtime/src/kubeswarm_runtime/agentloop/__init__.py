"""The tool-use loop of a task (docs/tools.md): the model answers or asks for tool calls, the runtime runs them.

Layers: ``toolbox`` (what a tool is, allow/deny) → ``remote`` (MCP servers) and ``swarm`` (the swarm's own
tools and other agents, in process) → ``loop``. The loop imports no tool source: the runtime hands it a toolbox.
"""
