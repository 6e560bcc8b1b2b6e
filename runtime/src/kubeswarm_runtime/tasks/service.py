"""The client side of tasks: create, get, list, cancel, wait; any process connected to the swarm can use it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from .. import tracing
from ..connection import NatsConnection
from ..names import Priority, SwarmNames, cancel_key, task_key
from ..stores import is_value, read_backward, task_backlog
from ..unreadable import UnreadableRecords
from .records import PastAttempts, TaskMessage, TaskNotFound, TaskRecord, TaskState

log = logging.getLogger(__name__)


async def stored_record(bucket: KeyValue, task_id: str) -> TaskRecord | None:
    """A task's state as stored in the tasks bucket; None if it has none."""
    try:
        entry = await bucket.get(task_key(task_id))
    except KeyNotFoundError:
        return None
    return TaskRecord.model_validate_json(entry.value) if entry.value else None


@dataclass(frozen=True)
class TaskPage:
    tasks: list[TaskRecord]
    next_cursor: int | None  # pass as ``cursor`` for the next (older) page; None: no more


class TaskService:
    """Create and follow tasks; any process connected to the swarm can use it."""

    def __init__(self, conn: NatsConnection, names: SwarmNames, bucket: KeyValue) -> None:
        self.conn = conn
        self.names = names
        self.bucket = bucket
        self.unreadable = UnreadableRecords("task", conn.metrics.unreadable_records)

    async def create(
        self,
        capability: str,
        task_input: Any = None,
        *,
        priority: Priority = Priority.NORMAL,
        task_id: str | None = None,
        context_id: str | None = None,
        replay_of: str | None = None,
        history: Sequence[PastAttempts] = (),
        depth: int = 0,
    ) -> TaskRecord:
        """Queue a task. Creating the same ``task_id`` twice returns the first one (deduplicated)."""
        task = TaskMessage(
            id=task_id or uuid.uuid4().hex,
            capability=capability,
            priority=priority,
            input=task_input,
            created_at=time.time(),
            context_id=context_id,
            replay_of=replay_of,
            history=list(history),
            depth=depth,
        )
        record = TaskRecord.of(task, TaskState.PENDING)
        try:
            await self.bucket.create(task_key(task.id), record.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            existing = await self.get(task.id)
            if existing is not None and existing.state is not TaskState.PENDING:
                return existing
        # Publish even for a duplicate still pending: a first attempt may have failed before publishing;
        # the stream drops the copy if the first one made it.
        subject = self.names.task(capability, priority)
        headers = {"Nats-Msg-Id": task.id}
        tracing.inject(headers)  # the run becomes a child of the creator's span: its trace goes on in the task
        await self.conn.js.publish(subject, task.model_dump_json().encode(), headers=headers)
        return record

    async def get(self, task_id: str) -> TaskRecord | None:
        return await stored_record(self.bucket, task_id)

    async def list(self, *, state: TaskState | None = None, capability: str | None = None, limit: int = 100, cursor: int = 0) -> TaskPage:
        """Tasks by their last change, newest first, one page of at most ``limit`` read from the bucket per call.

        ``cursor`` is the ``next_cursor`` of the page before (0: from the newest). Filters apply to the page read,
        so a page may hold fewer than ``limit`` tasks: go on while ``next_cursor`` is set. A task that changes
        while a client pages moves to the front (newest) of the listing.
        """
        bucket = self.names.tasks_bucket
        page = await read_backward(self.conn, f"KV_{bucket}", f"$KV.{bucket}.{task_key('>')}", before_seq=cursor, limit=limit)
        parsed = (self.unreadable.parse(TaskRecord, msg.subject, msg.data) for msg in page.messages if is_value(msg))
        records = [
            r
            for r in parsed
            if r is not None and (state is None or r.state is state) and (capability is None or r.capability == capability)
        ]
        return TaskPage(records, page.next)

    async def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a pending or running task; a finished task is returned unchanged."""
        while True:
            try:
                entry = await self.bucket.get(task_key(task_id))
            except KeyNotFoundError:
                raise TaskNotFound(task_id) from None
            assert entry.value is not None
            assert entry.revision is not None
            record = TaskRecord.model_validate_json(entry.value)
            if record.terminal:
                return record
            await self.bucket.put(cancel_key(task_id), b"1")
            cancelled = record.model_copy(update={"state": TaskState.CANCELLED, "updated_at": time.time()})
            try:
                await self.bucket.update(task_key(task_id), cancelled.model_dump_json().encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue  # a worker wrote meanwhile: look again
            return cancelled

    async def wait(self, task_id: str, timeout_seconds: float) -> TaskRecord:
        """Wait until the task ends; raises TimeoutError, or TaskNotFound for an unknown id."""
        results: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_result(msg: Msg) -> None:
            await results.put(msg)

        sub = await self.conn.nc.subscribe(self.names.task_result(task_id), cb=on_result)
        try:
            async with asyncio.timeout(timeout_seconds):
                record = await self._read_through_failover(task_id)
                if record is None:
                    raise TaskNotFound(task_id)
                while not record.terminal:
                    # Results published while we were disconnected, and cancels (written to the
                    # bucket only), are seen by re-reading now and then.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            record = TaskRecord.model_validate_json((await results.get()).data)
                            continue
                    with contextlib.suppress(nats.errors.Error):
                        record = await self.get(task_id) or record
                return record
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _read_through_failover(self, task_id: str) -> TaskRecord | None:
        while True:
            try:
                return await self.get(task_id)
            except nats.errors.Error as exc:
                log.info("reading task %s: %s; retrying", task_id, exc)
                await asyncio.sleep(0.25)

    async def backlog(self, capability: str) -> int:
        """Tasks of a capability waiting or unacknowledged, over all priorities."""
        return await task_backlog(self.conn, self.names, [capability])
