"""The timers of one running task: its late "running" state, then its timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .records import TaskMessage, TaskState

# A task still running after this long gets its "running" state written; quicker ones go from
# pending straight to their outcome, which saves a write per task when tasks are short.
RUNNING_STATE_DELAY_SECONDS = 0.05


class RunWatch:
    """One timer per running task: first its late "running" state, then its timeout.

    A quick task only ever costs the first timer (cancelled when it ends); ``asyncio.timeout``
    plus a separate timer would cost several times more on every task.
    """

    __slots__ = ("expired", "handle", "publish_running", "runner", "state", "task", "timeout")

    def __init__(
        self,
        task: TaskMessage,
        state: Callable[..., bytes],
        timeout: float,
        publish_running: Callable[[TaskMessage, bytes], None],
    ) -> None:
        self.task = task
        self.state = state
        self.timeout = timeout
        self.publish_running = publish_running
        self.expired = False
        runner = asyncio.current_task()
        assert runner is not None
        self.runner = runner
        loop = asyncio.get_running_loop()
        if timeout > RUNNING_STATE_DELAY_SECONDS:
            self.handle = loop.call_later(RUNNING_STATE_DELAY_SECONDS, self._running)
        else:
            self.handle = loop.call_later(timeout, self._expire)

    def _running(self) -> None:
        # Advisory and late: a lost "running" write is overwritten by the outcome, so it is not confirmed.
        self.publish_running(self.task, self.state(TaskState.RUNNING))
        self.handle = asyncio.get_running_loop().call_later(self.timeout - RUNNING_STATE_DELAY_SECONDS, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self.runner.cancel()

    def stop(self) -> None:
        self.handle.cancel()
