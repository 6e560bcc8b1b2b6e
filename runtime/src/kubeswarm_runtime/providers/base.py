"""What a task handler is (one async call from a task's input to its result), and what a chat model is
(messages and tool definitions in, text or tool calls out): the shapes every provider translates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


class PermanentTaskError(Exception):
    """The task can never succeed (bad input, 4xx from the model API): dead-letter it without retrying."""


@dataclass(frozen=True)
class TaskContext:
    task_id: str
    capability: str
    input: Any
    attempt: int
    agent: str
    # How many delegations deep this task is (0: created from outside the swarm's models).
    depth: int = 0
    # The tool-loop steps so far (appended by the loop, written into the task's state by the worker).
    steps: list[dict[str, Any]] = field(default_factory=list)
    # Called after each step: the worker publishes the task's running state with its steps.
    on_step: Callable[[], None] = lambda: None


class TaskHandler(Protocol):
    async def handle(self, ctx: TaskContext) -> Any: ...

    async def close(self) -> None: ...


def prompt_of(task_input: Any) -> tuple[str, str | None]:
    """(prompt, system prompt) of a task input: a string, or an object with "prompt" and optional "system"."""
    if isinstance(task_input, str):
        return task_input, None
    if isinstance(task_input, dict) and isinstance(task_input.get("prompt"), str):
        system = task_input.get("system")
        return task_input["prompt"], system if isinstance(system, str) else None
    raise PermanentTaskError('task input must be a string or an object with a "prompt" string')


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    # Set when the model's arguments could not be read (e.g. not JSON): returned to the model as the call's error.
    invalid: str | None = None


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    name: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation, provider-neutral: the user's prompt, the model's answer, or tool results."""

    role: Literal["user", "assistant", "tool"]
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    results: tuple[ToolResult, ...] = ()


@dataclass(frozen=True)
class ModelReply:
    text: str
    tool_calls: tuple[ToolCall, ...]
    usage: dict[str, int]
    stop_reason: str | None
    model: str | None


class ChatModel(Protocol):
    """A model API: one round trip, with token usage recorded (kubeswarm_llm_tokens_total)."""

    async def reply(self, system: str | None, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> ModelReply: ...

    async def close(self) -> None: ...


def usage_of(raw: Any, kinds: dict[str, str]) -> dict[str, int]:
    """A provider's usage object → {token kind: count}, keeping the kinds we count."""
    return {kinds[k]: int(v) for k, v in (raw or {}).items() if k in kinds and isinstance(v, int) and v}
