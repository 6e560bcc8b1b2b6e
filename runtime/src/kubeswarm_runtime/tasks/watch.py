"""The timers of running tasks: a task's late "running" state, then its timeout."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from .records import TaskMessage, TaskState

# A task still running after this long gets its "running" state written; quicker ones go from
# pending straight to their outcome, which saves a write per task when tasks are short.
RUNNING_STATE_DELAY_SECONDS = 0.05


class RunWatch:
    """One running task's timers: first its late "running" state (kept by :class:`RunWatches`), then its timeout."""

    __slots__ = ("expired", "handle", "publish_running", "runner", "state", "stopped", "task", "timeout")

    def __init__(
        self,
        task: TaskMessage,
        state: Callable[..., bytes],
        timeout: float,
        publish_running: Callable[[TaskMessage, bytes], None],
        runner: asyncio.Task[None],
    ) -> None:
        self.task = task
        self.state = state
        self.timeout = timeout
        self.publish_running = publish_running
        self.runner = runner
        self.expired = False
        self.stopped = False
        self.handle: asyncio.TimerHandle | None = None

    def running(self, late_by: float) -> None:
        # Advisory and late: a lost "running" write is overwritten by the outcome, so it is not confirmed.
        self.publish_running(self.task, self.state(TaskState.RUNNING))
        self.expire_in(self.timeout - RUNNING_STATE_DELAY_SECONDS - late_by)

    def expire_in(self, seconds: float) -> None:
        self.handle = asyncio.get_running_loop().call_later(max(seconds, 0), self._expire)

    def _expire(self) -> None:
        self.expired = True
        self.runner.cancel()

    def stop(self) -> None:
        self.stopped = True
        if self.handle is not None:
            self.handle.cancel()
        # It waits in the FIFO until its due time: not holding the task, its runner and its state meanwhile.
        del self.task, self.state, self.runner


class RunWatches:
    """The "running" timers of a worker's tasks: one loop timer for all, not one per task.

    Every task waits the same delay, so their deadlines come in the order they started: a FIFO
    and one timer for its head. A task that outlives the delay (a slow one) then gets its own
    timeout timer. A quick task costs an append and a flag, where a timer of its own (a heap
    push, then a cancelled handle left in the loop's heap) cost several times more.
    """

    def __init__(self, timeout: float, publish_running: Callable[[TaskMessage, bytes], None]) -> None:
        self.timeout = timeout
        self.publish_running = publish_running
        self._due: deque[tuple[float, RunWatch]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, task: TaskMessage, state: Callable[..., bytes], runner: asyncio.Task[None]) -> RunWatch:
        watch = RunWatch(task, state, self.timeout, self.publish_running, runner)
        if self.timeout <= RUNNING_STATE_DELAY_SECONDS:
            watch.expire_in(self.timeout)
            return watch
        loop = asyncio.get_running_loop()
        due = loop.time() + RUNNING_STATE_DELAY_SECONDS
        self._due.append((due, watch))
        if self._timer is None:
            self._timer = loop.call_at(due, self._fire)
        return watch

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._due
        while due and due[0][0] <= now:
            at, watch = due.popleft()
            if not watch.stopped:
                watch.running(now - at)
        self._timer = loop.call_at(due[0][0], self._fire) if due else None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
