"""The timers of running tasks: the late "running" state of slow tasks only, then their timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubeswarm_runtime.tasks import TaskMessage, TaskState
from kubeswarm_runtime.tasks.watch import RUNNING_STATE_DELAY_SECONDS, RunWatches

pytestmark = pytest.mark.unit


def task(name: str) -> TaskMessage:
    return TaskMessage(id=name, capability="c", input=None, created_at=time.time())


def state(_state: TaskState, **_fields: Any) -> bytes:
    return _state.value.encode()


async def forever() -> None:
    """A task's runner that only ends when cancelled."""
    await asyncio.Event().wait()


async def until(condition: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def test_only_slow_tasks_get_a_running_state_then_a_timeout() -> None:
    published: list[tuple[str, bytes]] = []
    watches = RunWatches(RUNNING_STATE_DELAY_SECONDS + 0.2, lambda t, data: published.append((t.id, data)))
    runner = asyncio.create_task(forever())
    try:
        quick = watches.start(task("quick"), state, runner)
        quick.stop()
        slow = watches.start(task("slow"), state, runner)  # due after the quick one: its state proves the quick one's time passed
        await until(lambda: bool(published), "the slow task's running state")
        assert published == [("slow", TaskState.RUNNING.value.encode())]
        assert not runner.cancelled() and not slow.expired
        await until(runner.cancelled, "the slow task's timeout")
        assert slow.expired and not quick.expired
    finally:
        runner.cancel()
        watches.close()


async def test_a_timeout_within_the_running_delay_expires_without_a_running_state() -> None:
    published: list[str] = []
    watches = RunWatches(RUNNING_STATE_DELAY_SECONDS / 5, lambda t, _data: published.append(t.id))
    runner = asyncio.create_task(forever())
    try:
        watch = watches.start(task("short"), state, runner)
        await until(runner.cancelled, "the timeout")
        assert watch.expired and published == []
    finally:
        runner.cancel()
        watches.close()


async def test_a_task_that_ends_after_its_running_state_does_not_expire() -> None:
    published: list[str] = []
    watches = RunWatches(RUNNING_STATE_DELAY_SECONDS + 0.05, lambda t, _data: published.append(t.id))
    runner = asyncio.create_task(forever())
    witness = asyncio.create_task(forever())
    try:
        stopped = watches.start(task("stopped"), state, runner)
        watches.start(task("witness"), state, witness)
        await until(lambda: "stopped" in published, "its running state")
        stopped.stop()
        await until(witness.cancelled, "the timeout of a task started after it")
        assert published == ["stopped", "witness"]
        assert not runner.cancelled() and not stopped.expired
    finally:
        runner.cancel()
        witness.cancel()
        watches.close()
