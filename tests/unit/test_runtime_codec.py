"""The task worker's hot-path encodings agree with the pydantic models they stand in for."""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import pytest
from kubeswarm_runtime.codec import encode_json
from kubeswarm_runtime.names import Priority
from kubeswarm_runtime.tasks import PastAttempts, TaskMessage, TaskRecord, TaskState, encode_record
from pydantic import BaseModel

pytestmark = pytest.mark.unit


class Point(BaseModel):
    x: int
    y: float


class Holder(BaseModel):
    """An ``Any`` field, as TaskRecord.result and .input are."""

    result: Any = None


@dataclasses.dataclass
class Pair:
    a: str
    b: list[int]


@pytest.mark.parametrize(
    "value",
    [
        None,
        "text é",
        7,
        2.5,
        2**70,
        [1, None, "x"],
        {"nested": {"k": [True, False]}},
        Point(x=1, y=2.0),
        Pair("a", [1, 2]),
        b"raw",
        datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        {"model": Point(x=3, y=0.5)},
    ],
)
def test_encode_json_matches_pydantic(value: Any) -> None:
    expected = Holder(result=value).model_dump_json()
    assert json.loads(encode_json({"result": value})) == json.loads(expected)


def test_encode_json_never_fails_on_unknown_types() -> None:
    assert json.loads(encode_json({"what": object()}))["what"].startswith("<object object")


def test_encode_record_is_a_task_record() -> None:
    task = TaskMessage(id="t1", capability="echo", priority=Priority.HIGH, input={"n": 1}, created_at=100.0, depth=2)
    steps = [{"turn": 1, "kind": "tool", "tool": "get_task", "outcome": "ok"}]
    data = encode_record(
        task, TaskState.SUCCEEDED, attempts=2, agent="r1", started_at=101.0, result={"echo": 1}, finished_at=102.0, steps=steps
    )
    record = TaskRecord.model_validate_json(data)
    assert record.model_dump(exclude={"updated_at"}) == {
        "id": "t1",
        "capability": "echo",
        "priority": Priority.HIGH,
        "state": TaskState.SUCCEEDED,
        "attempts": 2,
        "input": {"n": 1},
        "result": {"echo": 1},
        "error": None,
        "agent": "r1",
        "created_at": 100.0,
        "started_at": 101.0,
        "finished_at": 102.0,
        "context_id": None,
        "replay_of": None,
        "history": [],
        "depth": 2,
        "steps": steps,
    }
    # The same fields in the same order as the model writes them; the links (A2A context, replay) only where set.
    assert list(json.loads(data)) == list(json.loads(record.model_dump_json(exclude={"context_id", "replay_of", "history"})))
    past = PastAttempts(task_id="t0", attempts=3, reason="boom", agent="r0", dead_at=99.0)
    linked = task.model_copy(update={"context_id": "c1", "replay_of": "t0", "history": [past]})
    data = encode_record(linked, TaskState.RUNNING, attempts=1, agent="r1", started_at=101.0)
    record = TaskRecord.model_validate_json(data)
    assert (record.context_id, record.replay_of, record.history) == ("c1", "t0", [past])
    assert list(json.loads(data)) == list(json.loads(record.model_dump_json(exclude={"steps"})))
