"""A replica's worker: consumes the task queues of its capabilities, ``concurrency`` tasks at a time.

Its parts talk through small interfaces: :class:`Puller` takes tasks off one
consumer, :class:`RunWatches` time the runs, :class:`TaskOutcomes` writes
states, results and dead letters, :class:`SuccessCommitter` confirms
successes in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from .. import tracing
from ..config import RuntimeConfig
from ..connection import NatsConnection, backoff_delay
from ..metrics import RuntimeMetrics
from ..names import PRIORITIES, Priority, SwarmNames, cancel_key
from ..providers.base import PermanentTaskError, TaskContext, TaskHandler
from ..stores import read_bucket, task_consumer_config, with_replicas
from .committing import SuccessCommitter
from .dead_letters import DeadLetterService
from .outcomes import TaskOutcomes
from .pulling import Puller, deliveries
from .records import TaskMessage, TaskState, encode_record
from .service import TaskService, stored_record
from .watch import RunWatches

log = logging.getLogger(__name__)

# An idle worker polls its queues this often besides waking on new tasks,
# to pick up redeliveries (naks with delay, expired acks) that publish nothing.
IDLE_POLL_SECONDS = 0.5


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
        self.pullers: dict[Priority, list[Puller]] = {p: [] for p in PRIORITIES}
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self._deliveries: dict[str, Msg] = {}
        self.outcomes = TaskOutcomes(conn, names, config.replica_id, metrics)
        self._watches = RunWatches(config.task_timeout_seconds, self.outcomes.publish_running)
        # Succeeded tasks whose state is not yet confirmed: still this replica's (kept alive, redeliveries left alone).
        self._committing: set[str] = set()
        self._committer = SuccessCommitter(conn.nc, self.outcomes, self._committed)
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
        self._tasks_in = metrics.messages.labels("in", "task")  # a metric child: labels() costs a lock and a lookup per call

    @property
    def load(self) -> int:
        return len(self.inflight)

    @property
    def alive(self) -> bool:
        """Whether the worker still takes tasks (or is stopping on purpose): liveness fails when its loop died."""
        return self._stopping or (self._loop_task is not None and not self._loop_task.done())

    async def start(self) -> None:
        cfg = self.config
        nc = self.conn.nc
        await self._watch_cancellations()
        streams = with_replicas(cfg.streams, self.conn)
        for capability in cfg.capabilities:
            for priority in PRIORITIES:
                consumer = self.names.task_consumer(capability, priority)
                await self.conn.ensure_consumer(self.names.tasks_stream, task_consumer_config(self.names, capability, priority, streams))
                info = await self.conn.js.consumer_info(self.names.tasks_stream, consumer)
                self.max_deliver[consumer] = info.config.max_deliver or cfg.streams.max_deliver
                puller = Puller(self.conn, self.names.tasks_stream, consumer, capability)
                await puller.start()
                self.pullers[priority].append(puller)
                self._subs.append(
                    await nc.subscribe(self.names.max_deliveries_advisory(consumer), queue="kubeswarm-dlq", cb=self._on_max_deliveries)
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

    def _new_task_callback(self, puller: Puller) -> Callable[[Msg], Awaitable[None]]:
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
                    if msgs:
                        self._tasks_in.inc(len(msgs))  # once per batch: an inc costs a lock
                    for msg in msgs:
                        try:
                            refused = self._start(msg, puller)
                            if refused is not None:
                                await refused
                        except Exception:
                            # Not acked: delivered again later. One bad delivery must not stop the worker.
                            log.exception("could not start a delivery from %s", puller.consumer)
                    took = took or bool(msgs)
                if took:
                    break  # look at the higher priorities again before taking lower ones
            if not took and not self._stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_POLL_SECONDS):
                        await self._wake.wait()

    async def _fetch(self, puller: Puller, batch: int) -> list[Msg]:
        if not self.conn.connected:
            return []
        try:
            return await puller.fetch(batch)
        except nats.errors.Error as exc:
            log.warning("fetching %s failed: %s", puller.consumer, exc)
            return []

    def _start(self, msg: Msg, puller: Puller) -> Awaitable[None] | None:
        """Start running a delivery; what is left to await when it is not run (a plain function: most deliveries run)."""
        try:
            task = TaskMessage.model_validate_json(msg.data)
        except ValidationError as exc:
            return self.outcomes.reject_malformed(msg, puller.capability, str(exc))
        if task.id in self.inflight or task.id in self._committing:
            # A redelivery of a task still running here, or whose success is being committed (its state write
            # retried through a NATS failover): leave it to that attempt, which acks it.
            return msg.in_progress()
        runner = asyncio.create_task(self._run(msg, task, puller), name=f"task-{task.id}")
        self.inflight[task.id] = runner
        self._deliveries[task.id] = msg
        runner.add_done_callback(functools.partial(self._finished, task.id))
        return None

    def _finished(self, task_id: str, _runner: asyncio.Task[None]) -> None:
        self.inflight.pop(task_id, None)
        if task_id not in self._committing:
            self._deliveries.pop(task_id, None)
        self._wake.set()

    def _committed(self, task_id: str) -> None:
        self._committing.discard(task_id)
        if task_id not in self.inflight:
            self._deliveries.pop(task_id, None)

    async def _run(self, msg: Msg, task: TaskMessage, puller: Puller) -> None:
        attempt = deliveries(msg)
        if task.id in self.cancelled:
            await msg.ack()
            self.outcomes.count(task.capability, "cancelled")
            return
        if attempt > 1 and await self._finished_before(task):
            # Its ack was lost (a NATS failover): the stored state says it ran to the end. Acked, not run again.
            await msg.ack()
            self.outcomes.count(task.capability, "duplicate")
            return
        if not tracing.enabled():
            await self._attempt(msg, task, puller, attempt)
            return
        with tracing.run_task(msg.headers, msg.subject, task.id, task.capability, attempt, self.config.agent) as span:
            outcome = await self._attempt(msg, task, puller, attempt)
            if span is not None:
                span.set_attribute("kubeswarm.task.outcome", outcome)
                if outcome in ("failed", "dead"):
                    tracing.failed(span, f"task {outcome}")

    async def _attempt(self, msg: Msg, task: TaskMessage, puller: Puller, attempt: int) -> str:
        """Run the task once and settle its delivery; its outcome."""
        started = time.time()
        agent = self.config.replica_id
        steps: list[dict[str, Any]] = []  # the tool loop's, written with every state

        def state(state: TaskState, **fields: Any) -> bytes:
            return encode_record(task, state, attempts=attempt, agent=agent, started_at=started, steps=steps or None, **fields)

        outcome = "succeeded"
        try:
            ctx = TaskContext(
                task.id,
                task.capability,
                task.input,
                attempt,
                self.config.agent,
                depth=task.depth,
                steps=steps,
                on_step=lambda: self.outcomes.publish_step(task, state(TaskState.RUNNING), steps[-1]),
            )
            watch = self._watches.start(task, state, self.inflight[task.id])  # its runner: the current task
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
            await self.outcomes.dead_letter(msg, task, attempt, f"permanent error: {exc}", steps or None)
        except Exception as exc:
            reason = f"timed out after {self.config.task_timeout_seconds}s" if isinstance(exc, TimeoutError) else repr(exc)
            if attempt >= self.max_deliver[puller.consumer]:
                outcome = "dead"
                await self.outcomes.dead_letter(msg, task, attempt, f"failed on the last of {attempt} deliveries: {reason}", steps or None)
            else:
                outcome = "failed"
                await self.outcomes.write_state(task, state(TaskState.FAILED, error=reason))
                await msg.nak(delay=self._retry_delay(attempt))
        else:
            # Counted once committed; kept alive until then.
            self._committing.add(task.id)
            self._committer.add(msg, task, state(TaskState.SUCCEEDED, result=result, finished_at=time.time()))
        finally:
            if outcome != "succeeded":
                self.outcomes.count(task.capability, outcome)
            self.outcomes.observe_duration(task.capability, time.time() - started)
        return outcome

    async def _finished_before(self, task: TaskMessage) -> bool:
        """Whether a redelivered task's stored state is already terminal. Unknown (NATS busy, a record that
        does not parse) counts as no: at-least-once is kept, only a known finish is skipped."""
        try:
            record = await stored_record(self.bucket, task.id)
        except (TimeoutError, nats.errors.Error, ValidationError) as exc:
            log.info("state of redelivered task %s unreadable (%s); running it", task.id, exc)
            return False
        return record is not None and record.terminal

    async def _interrupted(self, msg: Msg, task: TaskMessage, state: Callable[..., bytes]) -> str:
        """A running task was cancelled: by its owner (ack it away) or by shutdown (hand it back)."""
        if self._draining:
            await self.outcomes.write_state(task, state(TaskState.PENDING))
            await msg.nak()
            return "requeued"
        await self.outcomes.write_state(task, state(TaskState.CANCELLED, finished_at=time.time()))
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

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        """A task ran out of deliveries without an outcome (its runner crashed or hung): dead-letter it."""
        try:
            event = json.loads(advisory.data)
            stored = await self.conn.js.get_msg(event["stream"], event["stream_seq"])
            assert stored.data is not None
            task = TaskMessage.model_validate_json(stored.data)
            reason = f"delivered {event['deliveries']} times without an outcome (runner crashed or timed out)"
            if await self.outcomes.send_dead_letter(task, int(event["deliveries"]), reason):
                await self.conn.js.delete_msg(event["stream"], event["stream_seq"])
        except NotFoundError:
            pass  # another replica handled it
        except (nats.errors.Error, ValidationError, KeyError, ValueError) as exc:
            log.warning("could not dead-letter after max deliveries: %s", exc)

    async def refresh_backlog(self, tasks: TaskService, dead_letters: DeadLetterService) -> None:
        """The gauges of this replica's capabilities: tasks waiting in the queue, and in the dead letters."""
        for capability in self.config.capabilities:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                self.metrics.backlog.labels(capability).set(await tasks.backlog(capability))
        with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
            waiting = await dead_letters.counts()
            for capability in self.config.capabilities:
                self.metrics.dead_letters_waiting.labels(capability).set(waiting.get(capability, 0))

    async def stop(self, grace: float) -> None:
        """Stop fetching; let in-flight tasks finish until ``grace`` runs out; hand the rest back."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            # A loop that already died was reported by liveness; stopping goes on.
            await asyncio.gather(self._loop_task, return_exceptions=True)
        running = list(self.inflight.values())
        if running:
            _done, late = await asyncio.wait(running, timeout=grace)
            self._draining = True
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._watches.close()
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
