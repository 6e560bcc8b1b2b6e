"""What a task handler is: one async call from a task's input to its result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class PermanentTaskError(Exception):
    """The task can never succeed (bad input, 4xx from the model API): dead-letter it without retrying."""


@dataclass(frozen=True)
class TaskContext:
    task_id: str
    capability: str
    input: Any
    attempt: int
    agent: str


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
