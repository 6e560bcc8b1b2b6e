"""What the model may call: tools by the name it sees, filtered by allow/deny lists, with what a call needs to know."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from ..config import ToolsConfig
from ..delegation import CallOrigin
from ..providers.base import ToolDefinition

# What model APIs accept as a tool name (Anthropic, Bedrock and OpenAI agree on this).
MODEL_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NAMESPACE_SEPARATOR = "__"


class ToolError(Exception):
    """A tool call failed; the message goes back to the model (the task goes on)."""


class ToolTimeout(ToolError):
    pass


# A tool's implementation: JSON arguments and the caller → the result as text for the model.
ToolRun = Callable[[dict[str, object], CallOrigin], Awaitable[str]]


@dataclass(frozen=True)
class Tool:
    definition: ToolDefinition
    run: ToolRun
    timeout_seconds: float
    # Creates something other agents see (a task, a discovery, a message): the call carries an idempotency key.
    side_effect: bool = False
    # Hands work to another agent: the call carries the delegation depth, refused past the limit.
    delegates: bool = False

    @property
    def name(self) -> str:
        return self.definition.name


def model_tool_name(namespace: str, name: str) -> str:
    """``<namespace>__<name>`` in the characters and length model APIs accept."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{namespace}{NAMESPACE_SEPARATOR}{name}")[:64]


def allowed(name: str, allow: Sequence[str], deny: Sequence[str]) -> bool:
    """Allow and deny entries are tool names or shell patterns (``search__*``); deny wins."""
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in deny):
        return False
    return not allow or any(fnmatch.fnmatchcase(name, pattern) for pattern in allow)


class ToolSource:
    """A group of tools that may have to be fetched (an MCP server's list)."""

    async def tools(self) -> list[Tool]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class StaticTools(ToolSource):
    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools = list(tools)

    async def tools(self) -> list[Tool]:
        return self._tools


class Toolbox:
    """The tools of one agent: its sources, filtered by ``spec.tools.allow``/``deny``; secret values to keep out of steps."""

    def __init__(self, sources: Sequence[ToolSource] = (), config: ToolsConfig | None = None, secrets: Iterable[str] = ()) -> None:
        self.sources = list(sources)
        self.config = config or ToolsConfig()
        self.secrets = [s for s in secrets if s]

    async def tools(self) -> dict[str, Tool]:
        """The tools offered now, by name; a source that cannot list its tools is left out (and logs why)."""
        found: dict[str, Tool] = {}
        for source in self.sources:
            for tool in await source.tools():
                if allowed(tool.name, self.config.allow, self.config.deny):
                    found.setdefault(tool.name, tool)
        return found

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    async def close(self) -> None:
        for source in self.sources:
            await source.close()
