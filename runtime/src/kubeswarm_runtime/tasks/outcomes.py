"""Where a worker's task outcomes go: the task's state (confirmed), its result, dead letters, and the task metrics.

The one interface the worker and its success committer write through, so
neither reaches into the other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from nats.aio.msg import Msg

from ..codec import encode_json
from ..connection import NatsConnection, publish_patiently
from ..fastpath import Publish, ack, acked, publish_all
from ..metrics import RuntimeMetrics
from ..names import SwarmNames, task_key
from .records import DeadLetter, TaskMessage, TaskRecord, TaskState

log = logging.getLogger(__name__)

# A dead letter of a malformed delivery keeps this much of its raw bytes: escaped into JSON, a whole
# message near the server's payload limit would not fit in the letter.
MALFORMED_BYTES_KEPT = 64 * 1024


class TaskOutcomes:
    def __init__(self, conn: NatsConnection, names: SwarmNames, replica_id: str, metrics: RuntimeMetrics) -> None:
        self.conn = conn
        self.names = names
        self.replica_id = replica_id
        self.metrics = metrics
        # Hot-path constants: subject prefixes and metric children (labels() costs a lock and a lookup per call).
        self.state_prefix = f"$KV.{names.tasks_bucket}.{task_key('')}"
        self._result_prefix = names.task_result("")
        self._events = names.events(replica_id)
        self._results_out = metrics.messages.labels("out", "task_result")
        self._outcomes: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        self._background: set[asyncio.Future[None]] = set()

    def count(self, capability: str, outcome: str, tasks: int = 1) -> None:
        counter = self._outcomes.get((capability, outcome))
        if counter is None:
            counter = self._outcomes[capability, outcome] = self.metrics.tasks.labels(capability, outcome)
        counter.inc(tasks)

    def observe_duration(self, capability: str, seconds: float) -> None:
        histogram = self._durations.get(capability)
        if histogram is None:
            histogram = self._durations[capability] = self.metrics.task_duration.labels(capability)
        histogram.observe(seconds)

    def state_subject(self, task_id: str) -> str:
        return self.state_prefix + task_id

    async def write_state(self, task: TaskMessage, record: bytes) -> bool:
        """Store a task's state, confirmed, before its message is acked (so the two never disagree)."""
        return await publish_patiently(self.conn.js, self.state_subject(task.id), record)

    def publish_running(self, task: TaskMessage, running: bytes) -> None:
        """The advisory "running" state, unconfirmed, in the background."""
        self._in_background(self.conn.nc.publish(self.state_subject(task.id), running))

    def publish_step(self, task: TaskMessage, running: bytes, step: dict[str, Any]) -> None:
        """A tool-loop step: the running state with the steps so far, and the step alone on ``P.agent.<replica>.events``."""
        self.publish_running(task, running)
        event = encode_json({"event": "task_step", "task_id": task.id, "capability": task.capability, "step": step})
        self._in_background(self.conn.nc.publish(self._events, event))

    def _in_background(self, publish: Coroutine[Any, Any, None]) -> None:
        publishing = asyncio.ensure_future(publish)
        self._background.add(publishing)
        publishing.add_done_callback(self._background.discard)

    async def succeeded(self, msg: Msg, task: TaskMessage, record: bytes) -> None:
        """Its state is stored: publish the result, ack the delivery, count it."""
        await self.deliver_successes([(msg, task, record)])
        self.count_succeeded(task.capability, 1)

    async def deliver_successes(self, successes: Sequence[tuple[Msg, TaskMessage, bytes]]) -> None:
        """Their states are stored: publish each result, then ack its delivery, handed to the client at once
        (counted apart, see ``count_succeeded``)."""
        if not successes:
            return
        result_prefix = self._result_prefix
        publishes: list[Publish] = []
        for msg, task, record in successes:
            publishes.append((result_prefix + task.id, "", record))
            publishes.append(ack(msg))
        await publish_all(self.conn.nc, publishes)
        for msg, _, _ in successes:
            acked(msg)

    def count_succeeded(self, capability: str, tasks: int) -> None:
        """``tasks`` successes of ``capability`` delivered: counted at once (an inc costs a lock)."""
        self._results_out.inc(tasks)
        self.count(capability, "succeeded", tasks)

    async def dead_letter(self, msg: Msg, task: TaskMessage, attempts: int, reason: str, steps: list[dict[str, Any]] | None = None) -> None:
        if await self.send_dead_letter(task, attempts, reason, steps):
            await msg.term()
        # else: no ack; the task is delivered again (or reported by the max-deliveries advisory).

    async def send_dead_letter(self, task: TaskMessage, attempts: int, reason: str, steps: list[dict[str, Any]] | None = None) -> bool:
        letter = DeadLetter(task=task, reason=reason, attempts=attempts, agent=self.replica_id, dead_at=time.time())
        sent = await publish_patiently(
            self.conn.js, self.names.dlq(task.capability), letter.model_dump_json().encode(), headers={"Nats-Msg-Id": f"dlq-{task.id}"}
        )
        if not sent:
            return False
        dead = TaskRecord.of(
            task, TaskState.DEAD, attempts=attempts, error=reason, agent=self.replica_id, finished_at=time.time(), steps=steps
        )
        await self.write_state(task, dead.model_dump_json().encode())
        self.metrics.dead_letters.labels(task.capability).inc()
        log.warning("task %s dead-lettered: %s", task.id, reason)
        return True

    async def reject_malformed(self, msg: Msg, capability: str, error: str) -> None:
        """A delivery that is not a task: dead-lettered with its reason (outcome ``dead``), then terminated.

        Terminated even when no dead letter could be sent (outcome ``discarded``, logged): no worker can
        ever run it, and a delivery that comes back forever would hold a worker's slot each time.
        """
        letter = {
            "raw": msg.data[:MALFORMED_BYTES_KEPT].decode(errors="replace"),
            "size": len(msg.data),
            "reason": f"malformed task: {error}",
            "dead_at": time.time(),
        }
        if await publish_patiently(self.conn.js, self.names.dlq(capability), json.dumps(letter).encode()):
            self.metrics.dead_letters.labels(capability).inc()
            self.count(capability, "dead")
        else:
            log.error("a malformed task of %s could not be dead-lettered; discarded: %s", capability, error)
            self.count(capability, "discarded")
        await msg.term()
