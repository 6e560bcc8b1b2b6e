"""What a task is on the queue, in the tasks bucket and in the dead-letter stream (the shapes every part shares)."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..codec import encode_json
from ..names import Priority


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    FAILED = "failed"  # the last attempt failed; a retry is scheduled
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # dead-lettered: out of deliveries or a permanent error
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED})


class PastAttempts(BaseModel):
    """How a task that was replayed from the dead letters ended before: the link back and what happened."""

    model_config = ConfigDict(frozen=True)

    task_id: str = Field(description="The id the task had when it died.")
    attempts: int
    reason: str
    agent: str
    dead_at: float


class TaskMessage(BaseModel):
    """What sits on the work queue."""

    model_config = ConfigDict(frozen=True)

    id: str
    capability: str
    priority: Priority = Priority.NORMAL
    input: Any = None
    created_at: float
    # An A2A conversation this task belongs to (A2A's contextId); None for tasks created otherwise.
    context_id: str | None = None
    # Set on a task replayed from the dead letters: the id it replays and each earlier life, oldest first.
    replay_of: str | None = None
    history: list[PastAttempts] = Field(default_factory=list)
    # Delegations between the swarm's outside caller and this task (a model's create_task adds one).
    depth: int = 0


class TaskRecord(BaseModel):
    """A task's state in the tasks bucket, also published on ``P.task.result.<id>`` when it ends."""

    model_config = ConfigDict(frozen=True)

    id: str
    capability: str
    priority: Priority
    state: TaskState
    attempts: int = 0
    input: Any = None
    result: Any = None
    error: str | None = None
    agent: str | None = None
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    context_id: str | None = None
    replay_of: str | None = None
    history: list[PastAttempts] = Field(default_factory=list)
    depth: int = 0
    steps: list[dict[str, Any]] | None = None  # the tool loop's steps (docs/tools.md)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def of(cls, task: TaskMessage, state: TaskState, **fields: Any) -> TaskRecord:
        # Built from an already validated task once or twice per task: skip validating it again.
        return cls.model_construct(
            id=task.id,
            capability=task.capability,
            priority=task.priority,
            input=task.input,
            created_at=task.created_at,
            context_id=task.context_id,
            replay_of=task.replay_of,
            history=task.history,
            depth=task.depth,
            state=state,
            updated_at=time.time(),
            **fields,
        )


def encode_record(
    task: TaskMessage,
    state: TaskState,
    *,
    attempts: int,
    agent: str,
    started_at: float,
    result: Any = None,
    error: str | None = None,
    finished_at: float | None = None,
    steps: list[dict[str, Any]] | None = None,
) -> bytes:
    """A worker's ``TaskRecord`` of ``task``, serialized without building the model (the hot path of every task)."""
    record: dict[str, Any] = {
        "id": task.id,
        "capability": task.capability,
        "priority": task.priority,
        "state": state,
        "attempts": attempts,
        "input": task.input,
        "result": result,
        "error": error,
        "agent": agent,
        "created_at": task.created_at,
        "updated_at": time.time(),
        "started_at": started_at,
        "finished_at": finished_at,
    }
    # The links of A2A and replayed tasks, and a tool loop's depth and steps, only where set: most tasks carry none.
    if task.context_id is not None:
        record["context_id"] = task.context_id
    if task.replay_of is not None:
        record["replay_of"] = task.replay_of
        record["history"] = task.history
    if task.depth:
        record["depth"] = task.depth
    if steps:
        record["steps"] = steps
    return encode_json(record)


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    task: TaskMessage
    reason: str
    attempts: int
    agent: str
    dead_at: float


class TaskNotFound(LookupError):
    pass
