"""Tasks with delivery guarantees over a JetStream work queue.

:class:`TaskService` is the client side (create, get, list, cancel, wait);
:class:`TaskWorker` consumes the queues of a replica's capabilities.

Guarantees: at-least-once (explicit ack; a crash means redelivery after
``ack_wait``), retries with a growing nak delay, dead letters after the last
delivery or on a permanent error, dedup by ``Nats-Msg-Id`` (= task id),
priorities served high first, cancellation of pending and running tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, ValidationError

from .codec import DecodeError, decode_json, encode_json
from .config import RuntimeConfig
from .connection import JS_API_TIMEOUT, NatsConnection, backoff_delay, publish_patiently
from .handlers.base import PermanentTaskError, TaskContext, TaskHandler
from .metrics import RuntimeMetrics
from .names import PRIORITIES, Priority, SwarmNames, cancel_key, task_key
from .stores import read_bucket, task_backlog, task_consumer_config

log = logging.getLogger(__name__)

# An idle worker polls its queues this often besides waking on new tasks,
# to pick up redeliveries (naks with delay, expired acks) that publish nothing.
IDLE_POLL_SECONDS = 0.5
# How long an outcome (state, dead letter) is retried while JetStream is unavailable, e.g. while a
# stream elects a new leader after a node died; the task's delivery is kept alive meanwhile.
# A task still running after this long gets its "running" state written; quicker ones go from
# pending straight to their outcome, which saves a write per task when tasks are short.
RUNNING_STATE_DELAY_SECONDS = 0.05
# Batches of succeeded tasks whose states may await JetStream's confirmation at the same time.
COMMITS_IN_FLIGHT = 4


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    FAILED = "failed"  # the last attempt failed; a retry is scheduled
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # dead-lettered: out of deliveries or a permanent error
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED})


class TaskMessage(BaseModel):
    """What sits on the work queue."""

    model_config = ConfigDict(frozen=True)

    id: str
    capability: str
    priority: Priority = Priority.NORMAL
    input: Any = None
    created_at: float


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

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def of(cls, task: TaskMessage, state: TaskState, **fields: Any) -> TaskRecord:
        # Built from an already validated task once or twice per task: skip validating it again.
        return cls.model_construct(
            id=task.id, capability=task.capability, priority=task.priority, input=task.input,
            created_at=task.created_at, state=state, updated_at=time.time(), **fields,
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
) -> bytes:
    """A worker's ``TaskRecord`` of ``task``, serialized without building the model (the hot path of every task)."""
    return encode_json({
        "id": task.id, "capability": task.capability, "priority": task.priority, "state": state, "attempts": attempts,
        "input": task.input, "result": result, "error": error, "agent": agent, "created_at": task.created_at,
        "updated_at": time.time(), "started_at": started_at, "finished_at": finished_at,
    })


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    task: TaskMessage
    reason: str
    attempts: int
    agent: str
    dead_at: float


class TaskNotFound(LookupError):
    pass


class TaskService:
    """Create and follow tasks; any process connected to the swarm can use it."""

    def __init__(self, conn: NatsConnection, names: SwarmNames, bucket: KeyValue) -> None:
        self.conn = conn
        self.names = names
        self.bucket = bucket

    async def create(
        self, capability: str, task_input: Any = None, *, priority: Priority = Priority.NORMAL, task_id: str | None = None
    ) -> TaskRecord:
        """Queue a task. Creating the same ``task_id`` twice returns the first one (deduplicated)."""
        task = TaskMessage(
            id=task_id or uuid.uuid4().hex, capability=capability, priority=priority, input=task_input, created_at=time.time()
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
        await self.conn.js.publish(
            self.names.task(capability, priority), task.model_dump_json().encode(), headers={"Nats-Msg-Id": task.id}
        )
        return record

    async def get(self, task_id: str) -> TaskRecord | None:
        try:
            entry = await self.bucket.get(task_key(task_id))
        except KeyNotFoundError:
            return None
        return TaskRecord.model_validate_json(entry.value) if entry.value else None

    async def list(self, *, state: TaskState | None = None, capability: str | None = None, limit: int = 100) -> list[TaskRecord]:
        entries = await read_bucket(self.conn, self.names.tasks_bucket, task_key(">"))
        records = [TaskRecord.model_validate_json(value) for value in entries.values()]
        records = [r for r in records if (state is None or r.state is state) and (capability is None or r.capability == capability)]
        records.sort(key=lambda r: r.created_at, reverse=True)
        return records[:limit]

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


class _Puller:
    """No-wait pulls on one durable consumer (lingering pulls would outlive a stop and strand messages)."""

    def __init__(self, conn: NatsConnection, stream: str, consumer: str, capability: str) -> None:
        self.conn = conn
        self.capability = capability
        self.consumer = consumer
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.inbox = conn.nc.new_inbox()
        # Delivered and not yet returned by fetch(); a delivery arriving after its pull gave up waits here for the next.
        self._delivered: list[Msg] = []
        self._wanted = 0
        self._pull_done: asyncio.Future[None] | None = None
        # Whether a pull may find something: its last pull came back full, or a task was published since.
        # An empty queue is then left alone (a pull that finds nothing is a wasted round trip) until
        # a task is published to it or the periodic sweep that picks up redeliveries.
        self.maybe_more = True
        self._published = 0

    def published(self) -> None:
        """A task was published to this queue."""
        self._published += 1
        self.maybe_more = True

    async def start(self) -> None:
        await self.conn.nc.subscribe(self.inbox, cb=self._deliver)

    async def _deliver(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get("Status"):
            ended = True  # 404 no messages / 408: the pull is done
        else:
            self._delivered.append(msg)
            ended = len(self._delivered) >= self._wanted
        if ended and self._pull_done is not None and not self._pull_done.done():
            self._pull_done.set_result(None)

    async def fetch(self, batch: int) -> list[Msg]:
        published_before = self._published
        msgs = await self._pull(batch)
        self.maybe_more = len(msgs) >= batch or self._published != published_before
        return msgs

    async def _pull(self, batch: int) -> list[Msg]:
        self._wanted = batch
        self._pull_done = asyncio.get_running_loop().create_future()
        await self.conn.nc.publish(self.next_subject, json.dumps({"batch": batch, "no_wait": True}).encode(), reply=self.inbox)
        # One deadline for the whole pull (a timer per message would cost more than the message).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(JS_API_TIMEOUT):
                await self._pull_done
        msgs, self._delivered = self._delivered, []
        return msgs


class _Confirmations:
    """JetStream's acknowledgements of one batch of publishes: which were stored, and when all have answered."""

    __slots__ = ("answered", "left", "stored")

    def __init__(self, size: int) -> None:
        self.stored = [False] * size
        self.left = size
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def record(self, index: int, stored: bool) -> None:
        if not 0 <= index < len(self.stored):
            return
        self.stored[index] = stored
        self.left -= 1
        if self.left <= 0 and not self.answered.done():
            self.answered.set_result(None)


def _stored(reply: Msg) -> bool:
    """Whether a JetStream publish acknowledgement says "stored" (not an error, nor a 503 "no stream")."""
    if reply.headers:
        return False
    try:
        ack = decode_json(reply.data)
    except DecodeError:
        return False
    return isinstance(ack, dict) and "error" not in ack and "seq" in ack


def _deliveries(msg: Msg) -> int:
    """``msg.metadata.num_delivered``, read straight from the usual ack subject (building the metadata costs more)."""
    assert msg.reply
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<timestamp>.<pending>
    tokens = msg.reply.split(".")
    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[4])
    return msg.metadata.num_delivered  # the longer forms (domain, account hash)


class _Watch:
    """One timer per running task: first its late "running" state, then its timeout.

    A quick task only ever costs the first timer (cancelled when it ends); ``asyncio.timeout``
    plus a separate timer would cost several times more on every task.
    """

    __slots__ = ("expired", "handle", "runner", "state", "task", "worker")

    def __init__(self, worker: TaskWorker, task: TaskMessage, state: Callable[..., bytes]) -> None:
        self.worker = worker
        self.task = task
        self.state = state
        self.expired = False
        runner = asyncio.current_task()
        assert runner is not None
        self.runner = runner
        timeout = worker.config.task_timeout_seconds
        loop = asyncio.get_running_loop()
        if timeout > RUNNING_STATE_DELAY_SECONDS:
            self.handle = loop.call_later(RUNNING_STATE_DELAY_SECONDS, self._running)
        else:
            self.handle = loop.call_later(timeout, self._expire)

    def _running(self) -> None:
        # Advisory and late: a lost "running" write is overwritten by the outcome, so it is not confirmed.
        self.worker._publish_running(self.task, self.state(TaskState.RUNNING))
        remaining = self.worker.config.task_timeout_seconds - RUNNING_STATE_DELAY_SECONDS
        self.handle = asyncio.get_running_loop().call_later(remaining, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self.runner.cancel()

    def stop(self) -> None:
        self.handle.cancel()


class _SuccessCommitter:
    """Confirms the states of succeeded tasks in batches, then publishes their results and acks them.

    One wait for JetStream's confirmations per batch rather than per task: with short tasks
    this wait is what bounds a replica's throughput. A few batches are confirmed at once (the
    next one need not wait for the round trip of the last); beyond that, successes pile up
    into a bigger batch. The confirmations of a batch come back on one subscription
    (``<inbox>.<batch>.<index>``) and fill one ``_Confirmations``: no future nor parsed PubAck per task.
    """

    def __init__(self, worker: TaskWorker) -> None:
        self.worker = worker
        self.pending: list[tuple[Msg, TaskMessage, bytes]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._retrying: set[asyncio.Task[None]] = set()
        self._committing: set[asyncio.Task[None]] = set()
        self._inbox = ""
        self._batches: dict[int, _Confirmations] = {}
        self._batch_number = 0

    async def start(self) -> Subscription:
        nc = self.worker.conn.nc
        self._inbox = nc.new_inbox() + "."
        return await nc.subscribe(self._inbox + ">", cb=self._on_confirmation)

    async def _on_confirmation(self, reply: Msg) -> None:
        number, _, index = reply.subject[len(self._inbox) :].partition(".")
        try:
            batch = self._batches.get(int(number))
            if batch is not None:
                batch.record(int(index), _stored(reply))
        except ValueError:
            pass  # not one of ours

    def add(self, msg: Msg, task: TaskMessage, record: bytes) -> None:
        self.pending.append((msg, task, record))
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self._committing) >= COMMITS_IN_FLIGHT:
                await asyncio.wait(set(self._committing), return_when=asyncio.FIRST_COMPLETED)
            batch, self.pending = self.pending, []
            if batch:
                commit = asyncio.create_task(self._commit(batch))
                self._committing.add(commit)
                commit.add_done_callback(self._committed)
            self._check_idle()

    def _committed(self, commit: asyncio.Task[None]) -> None:
        self._committing.discard(commit)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self.pending and not self._committing:
            self._idle.set()

    async def flush(self) -> None:
        await self._idle.wait()
        if self._retrying:
            await asyncio.gather(*self._retrying, return_exceptions=True)

    async def _commit(self, batch: list[tuple[Msg, TaskMessage, bytes]]) -> None:
        if not batch:
            return
        worker = self.worker
        self._batch_number += 1
        number = self._batch_number
        confirmations = self._batches[number] = _Confirmations(len(batch))
        reply = f"{self._inbox}{number}."
        publish = worker.conn.nc.publish
        state_prefix = worker._state_prefix
        try:
            for index, (_, task, data) in enumerate(batch):
                await publish(state_prefix + task.id, data, reply=reply + str(index))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(JS_API_TIMEOUT):
                    await confirmations.answered
        except nats.errors.Error as exc:
            log.info("state publish failed: %s", exc)
        finally:
            del self._batches[number]  # late confirmations are ignored: those states are written again
        for (msg, task, data), stored in zip(batch, confirmations.stored, strict=True):
            if stored:
                await self._finish(msg, task, data)
            else:
                retry = asyncio.create_task(self._commit_patiently(msg, task, data))
                self._retrying.add(retry)
                retry.add_done_callback(self._retrying.discard)

    async def _commit_patiently(self, msg: Msg, task: TaskMessage, data: bytes) -> None:
        if await self.worker._publish_patiently(self.worker._state_subject(task.id), data):
            await self._finish(msg, task, data)
        else:
            self.worker._count(task.capability, "failed")
            await msg.nak()

    async def _finish(self, msg: Msg, task: TaskMessage, data: bytes) -> None:
        worker = self.worker
        await worker.conn.nc.publish(worker._result_prefix + task.id, data)
        await msg.ack()
        worker._results_out.inc()
        worker._count(task.capability, "succeeded")


class TaskWorker:
    """Consumes the task queues of this replica's capabilities, ``concurrency`` tasks at a time."""

    def __init__(
        self,
        conn: NatsConnection,
        names: SwarmNames,
        bucket: KeyValue,
        config: RuntimeConfig,
        handler: TaskHandler,
        metrics: RuntimeMetrics,
    ) -> None:
        self.conn = conn
        self.names = names
        self.bucket = bucket
        self.config = config
        self.handler = handler
        self.metrics = metrics
        self.pullers: dict[Priority, list[_Puller]] = {p: [] for p in PRIORITIES}
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self._deliveries: dict[str, Msg] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._committer = _SuccessCommitter(self)
        self.cancelled: set[str] = set()
        self.max_deliver: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._draining = False
        self._loop_task: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._committer_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._subs: list[Subscription] = []
        self._cancel_watcher: Any = None
        # Hot-path constants: subject prefixes and metric children (labels() costs a lock and a lookup per call).
        self._state_prefix = f"$KV.{names.tasks_bucket}.{task_key('')}"
        self._result_prefix = names.task_result("")
        self._tasks_in = metrics.messages.labels("in", "task")
        self._results_out = metrics.messages.labels("out", "task_result")
        self._outcomes: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}

    def _count(self, capability: str, outcome: str) -> None:
        counter = self._outcomes.get((capability, outcome))
        if counter is None:
            counter = self._outcomes[capability, outcome] = self.metrics.tasks.labels(capability, outcome)
        counter.inc()

    def _observe_duration(self, capability: str, seconds: float) -> None:
        histogram = self._durations.get(capability)
        if histogram is None:
            histogram = self._durations[capability] = self.metrics.task_duration.labels(capability)
        histogram.observe(seconds)

    @property
    def load(self) -> int:
        return len(self.inflight)

    async def start(self) -> None:
        cfg = self.config
        nc = self.conn.nc
        await self._watch_cancellations()
        for capability in cfg.capabilities:
            for priority in PRIORITIES:
                consumer = self.names.task_consumer(capability, priority)
                await self.conn.ensure_consumer(
                    self.names.tasks_stream, task_consumer_config(self.names, capability, priority, cfg.streams)
                )
                info = await self.conn.js.consumer_info(self.names.tasks_stream, consumer)
                self.max_deliver[consumer] = info.config.max_deliver or cfg.streams.max_deliver
                puller = _Puller(self.conn, self.names.tasks_stream, consumer, capability)
                await puller.start()
                self.pullers[priority].append(puller)
                self._subs.append(
                    await nc.subscribe(
                        self.names.max_deliveries_advisory(consumer), queue="kubeswarm-dlq", cb=self._on_max_deliveries
                    )
                )
                self._subs.append(await nc.subscribe(self.names.task(capability, priority), cb=self._new_task_callback(puller)))
        self._subs.append(await self._committer.start())
        self.metrics.tasks_in_flight.set_function(lambda: len(self.inflight))
        self._loop_task = asyncio.create_task(self._fetch_loop(), name="task-fetch-loop")
        self._keepalive_task = asyncio.create_task(self._keep_alive(), name="task-keepalive")
        self._committer_task = asyncio.create_task(self._committer.run(), name="task-committer")

    async def _watch_cancellations(self) -> None:
        """Follow cancellations; returns once the existing ones are known, so a cancelled pending task is never started."""
        # The watch is opened first so nothing written from now on is missed; the existing cancellations are then read
        # with read_bucket, not taken from the watch (whose "existing entries done" marker may precede the entries).
        watcher = await self.bucket.watch(cancel_key(">"), ignore_deletes=True, meta_only=True)  # the keys say it all
        self._cancel_watcher = watcher

        async def follow() -> None:
            async for entry in watcher:
                if entry is not None:
                    self._on_cancel(entry.key.removeprefix(cancel_key("")))

        self._watch_task = asyncio.create_task(follow(), name="cancel-watcher")
        for key in await read_bucket(self.conn, self.names.tasks_bucket, cancel_key(">")):
            self._on_cancel(key.removeprefix(cancel_key("")))

    def _on_cancel(self, task_id: str) -> None:
        self.cancelled.add(task_id)
        running = self.inflight.get(task_id)
        if running is not None:
            running.cancel()

    def _new_task_callback(self, puller: _Puller) -> Callable[[Msg], Awaitable[None]]:
        async def on_new_task(_msg: Msg) -> None:
            puller.published()
            self._wake.set()

        return on_new_task

    async def _fetch_loop(self) -> None:
        limit = self.config.concurrency
        # Refill in batches: one pull per finished task would cost a round trip per task.
        refill_at = limit - max(1, limit // 4)
        swept_at = -math.inf
        while not self._stopping:
            if len(self.inflight) > refill_at:
                self._wake.clear()
                await self._wake.wait()
                continue
            took = False
            # Every queue is pulled now and then, busy or not: redeliveries (naks with a delay,
            # expired acks) publish nothing, so only a pull finds them.
            now = time.monotonic()
            sweep = now - swept_at >= IDLE_POLL_SECONDS
            if sweep:
                swept_at = now
            for priority in PRIORITIES:
                for puller in self.pullers[priority]:
                    free = limit - len(self.inflight)
                    if free <= 0 or self._stopping:
                        break
                    if not (sweep or puller.maybe_more):
                        continue
                    msgs = await self._fetch(puller, free)
                    for msg in msgs:
                        await self._start(msg, puller)
                    took = took or bool(msgs)
                if took:
                    break  # look at the higher priorities again before taking lower ones
            if not took and not self._stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_POLL_SECONDS):
                        await self._wake.wait()

    async def _fetch(self, puller: _Puller, batch: int) -> list[Msg]:
        if not self.conn.connected:
            return []
        try:
            return await puller.fetch(batch)
        except nats.errors.Error as exc:
            log.warning("fetching %s failed: %s", puller.consumer, exc)
            return []

    async def _start(self, msg: Msg, puller: _Puller) -> None:
        try:
            task = TaskMessage.model_validate_json(msg.data)
        except ValidationError as exc:
            await self._reject_malformed(msg, puller, str(exc))
            return
        if task.id in self.inflight:
            # A redelivery of a task still running here: leave it to the running attempt.
            await msg.in_progress()
            return
        runner = asyncio.create_task(self._run(msg, task, puller), name=f"task-{task.id}")
        self.inflight[task.id] = runner
        self._deliveries[task.id] = msg
        runner.add_done_callback(functools.partial(self._finished, task.id))

    def _finished(self, task_id: str, _runner: asyncio.Task[None]) -> None:
        self.inflight.pop(task_id, None)
        self._deliveries.pop(task_id, None)
        self._wake.set()

    async def _run(self, msg: Msg, task: TaskMessage, puller: _Puller) -> None:
        attempt = _deliveries(msg)
        self._tasks_in.inc()
        if task.id in self.cancelled:
            await msg.ack()
            self._count(task.capability, "cancelled")
            return
        started = time.time()
        agent = self.config.replica_id

        def state(state: TaskState, **fields: Any) -> bytes:
            return encode_record(task, state, attempts=attempt, agent=agent, started_at=started, **fields)

        outcome = "succeeded"
        try:
            ctx = TaskContext(task.id, task.capability, task.input, attempt, self.config.agent)
            watch = _Watch(self, task, state)
            try:
                result = await self.handler.handle(ctx)
            except asyncio.CancelledError:
                if not watch.expired:
                    raise
                watch.runner.uncancel()
                raise TimeoutError from None
            finally:
                watch.stop()
        except asyncio.CancelledError:
            outcome = await self._interrupted(msg, task, state)
        except PermanentTaskError as exc:
            outcome = "dead"
            await self._dead_letter(msg, task, attempt, f"permanent error: {exc}")
        except Exception as exc:
            reason = f"timed out after {self.config.task_timeout_seconds}s" if isinstance(exc, TimeoutError) else repr(exc)
            if attempt >= self.max_deliver[puller.consumer]:
                outcome = "dead"
                await self._dead_letter(msg, task, attempt, f"failed on the last of {attempt} deliveries: {reason}")
            else:
                outcome = "failed"
                await self._write_state(task, state(TaskState.FAILED, error=reason))
                await msg.nak(delay=self._retry_delay(attempt))
        else:
            # Counted once committed.
            self._committer.add(msg, task, state(TaskState.SUCCEEDED, result=result, finished_at=time.time()))
        finally:
            if outcome != "succeeded":
                self._count(task.capability, outcome)
            self._observe_duration(task.capability, time.time() - started)

    def _publish_running(self, task: TaskMessage, running: bytes) -> None:
        publishing = asyncio.ensure_future(self.conn.nc.publish(self._state_subject(task.id), running))
        self._background.add(publishing)
        publishing.add_done_callback(self._background.discard)

    async def _interrupted(self, msg: Msg, task: TaskMessage, state: Callable[..., bytes]) -> str:
        """A running task was cancelled: by its owner (ack it away) or by shutdown (hand it back)."""
        if self._draining:
            await self._write_state(task, state(TaskState.PENDING))
            await msg.nak()
            return "requeued"
        await self._write_state(task, state(TaskState.CANCELLED, finished_at=time.time()))
        await msg.ack()
        return "cancelled"

    def _retry_delay(self, attempt: int) -> float:
        streams = self.config.streams
        return backoff_delay(attempt - 1, streams.retry_backoff_seconds, streams.retry_backoff_max_seconds)

    async def _keep_alive(self) -> None:
        # Long tasks keep their delivery: tell the server "still working" well inside ack_wait.
        interval = max(self.config.streams.ack_wait_seconds / 3, 0.1)
        while True:
            await asyncio.sleep(interval)
            for msg in list(self._deliveries.values()):
                with contextlib.suppress(nats.errors.Error):
                    await msg.in_progress()

    def _state_subject(self, task_id: str) -> str:
        return self._state_prefix + task_id

    async def _write_state(self, task: TaskMessage, record: bytes) -> bool:
        """Store a task's state, confirmed, before its message is acked (so the two never disagree)."""
        return await self._publish_patiently(self._state_subject(task.id), record)

    async def _publish_patiently(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> bool:
        return await publish_patiently(self.conn.js, subject, data, headers=headers)

    async def _dead_letter(self, msg: Msg, task: TaskMessage, attempts: int, reason: str) -> None:
        if await self._send_dead_letter(task, attempts, reason):
            await msg.term()
        # else: no ack; the task is delivered again (or reported by the max-deliveries advisory).

    async def _send_dead_letter(self, task: TaskMessage, attempts: int, reason: str) -> bool:
        letter = DeadLetter(task=task, reason=reason, attempts=attempts, agent=self.config.replica_id, dead_at=time.time())
        sent = await self._publish_patiently(
            self.names.dlq(task.capability), letter.model_dump_json().encode(), headers={"Nats-Msg-Id": f"dlq-{task.id}"}
        )
        if not sent:
            return False
        dead = TaskRecord.of(task, TaskState.DEAD, attempts=attempts, error=reason, agent=self.config.replica_id, finished_at=time.time())
        await self._write_state(task, dead.model_dump_json().encode())
        self.metrics.dead_letters.labels(task.capability).inc()
        log.warning("task %s dead-lettered: %s", task.id, reason)
        return True

    async def _reject_malformed(self, msg: Msg, puller: _Puller, error: str) -> None:
        await self.conn.js.publish(
            self.names.dlq(puller.capability),
            json.dumps({"raw": msg.data.decode(errors="replace"), "reason": f"malformed task: {error}"}).encode(),
        )
        await msg.term()

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        """A task ran out of deliveries without an outcome (its runner crashed or hung): dead-letter it."""
        try:
            event = json.loads(advisory.data)
            stored = await self.conn.js.get_msg(event["stream"], event["stream_seq"])
            assert stored.data is not None
            task = TaskMessage.model_validate_json(stored.data)
            reason = f"delivered {event['deliveries']} times without an outcome (runner crashed or timed out)"
            if await self._send_dead_letter(task, int(event["deliveries"]), reason):
                await self.conn.js.delete_msg(event["stream"], event["stream_seq"])
        except NotFoundError:
            pass  # another replica handled it
        except (nats.errors.Error, ValidationError, KeyError, ValueError) as exc:
            log.warning("could not dead-letter after max deliveries: %s", exc)

    async def refresh_backlog(self, tasks: TaskService) -> None:
        for capability in self.config.capabilities:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                self.metrics.backlog.labels(capability).set(await tasks.backlog(capability))

    async def stop(self, grace: float) -> None:
        """Stop fetching; let in-flight tasks finish until ``grace`` runs out; hand the rest back."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        running = list(self.inflight.values())
        if running:
            _done, late = await asyncio.wait(running, timeout=grace)
            self._draining = True
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._committer.flush()
        for background in (self._committer_task, self._keepalive_task, self._watch_task):
            if background is not None:
                background.cancel()
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        if self._cancel_watcher is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._cancel_watcher.stop()
