"""Succeeded tasks, committed in batches: their states confirmed by JetStream, then their results published and acks sent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..codec import DecodeError, decode_json
from ..connection import JS_API_TIMEOUT
from ..fastpath import publish_all, subscribe_raw
from .outcomes import TaskOutcomes
from .records import TaskMessage

log = logging.getLogger(__name__)

# Batches of succeeded tasks whose states may await JetStream's confirmation at the same time.
COMMITS_IN_FLIGHT = 4


class Confirmations:
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


def was_stored(data: bytes, headers: bytes | None) -> bool:
    """Whether a JetStream publish acknowledgement says "stored" (not an error, nor a 503 "no stream": a status header)."""
    if headers:
        return False
    try:
        ack = decode_json(data)
    except DecodeError:
        return False
    return isinstance(ack, dict) and "error" not in ack and "seq" in ack


class SuccessCommitter:
    """Confirms the states of succeeded tasks in batches, then publishes their results and acks them.

    One wait for JetStream's confirmations per batch rather than per task: with short tasks
    this wait is what bounds a replica's throughput. A few batches are confirmed at once (the
    next one need not wait for the round trip of the last); beyond that, successes pile up
    into a bigger batch. The confirmations of a batch come back on one subscription
    (``<inbox>.<batch>.<index>``), handled as the client's parser reads them, and fill one ``Confirmations``:
    no future nor parsed PubAck per task. A batch's states, then its results and acks, are handed
    to the client as one buffer each (``fastpath.publish_all``).
    """

    def __init__(self, nc: Client, outcomes: TaskOutcomes, committed: Callable[[str], None]) -> None:
        """``committed(task_id)`` is called once a task's commit has ended (acked, or handed back)."""
        self.nc = nc
        self.outcomes = outcomes
        self.committed = committed
        self.pending: list[tuple[Msg, TaskMessage, bytes]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._retrying: set[asyncio.Task[None]] = set()
        self._committing: set[asyncio.Task[None]] = set()
        self._inbox = ""
        self._batches: dict[int, Confirmations] = {}
        self._batch_number = 0

    async def start(self) -> Subscription:
        self._inbox = self.nc.new_inbox() + "."
        return await subscribe_raw(self.nc, self._inbox + ">", self._on_confirmation)

    def _on_confirmation(self, subject: bytes, _reply: bytes, data: bytes, headers: bytes | None) -> None:
        number, _, index = subject[len(self._inbox) :].partition(b".")  # an inbox is ASCII: as long in bytes
        try:
            batch = self._batches.get(int(number))
            if batch is not None:
                batch.record(int(index), was_stored(data, headers))
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
        self._batch_number += 1
        number = self._batch_number
        confirmations = self._batches[number] = Confirmations(len(batch))
        reply = f"{self._inbox}{number}."
        state_prefix = self.outcomes.state_prefix
        try:
            await publish_all(self.nc, [(state_prefix + task.id, reply + str(index), data) for index, (_, task, data) in enumerate(batch)])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(JS_API_TIMEOUT):
                    await confirmations.answered
        except nats.errors.Error as exc:
            log.info("state publish failed: %s", exc)
        finally:
            del self._batches[number]  # late confirmations are ignored: those states are written again
        stored: list[tuple[Msg, TaskMessage, bytes]] = []
        for success, confirmed in zip(batch, confirmations.stored, strict=True):
            if confirmed:
                stored.append(success)
            else:
                retry = asyncio.create_task(self._commit_patiently(*success))
                self._retrying.add(retry)
                retry.add_done_callback(self._retrying.discard)
        try:
            await self.outcomes.deliver_successes(stored)
        finally:
            for _, task, _ in stored:
                self.committed(task.id)
        delivered: dict[str, int] = {}  # successes by capability, counted once per batch
        for _, task, _ in stored:
            delivered[task.capability] = delivered.get(task.capability, 0) + 1
        for capability, tasks in delivered.items():
            self.outcomes.count_succeeded(capability, tasks)

    async def _commit_patiently(self, msg: Msg, task: TaskMessage, data: bytes) -> None:
        try:
            if await self.outcomes.write_state(task, data):
                await self.outcomes.succeeded(msg, task, data)
            else:
                self.outcomes.count(task.capability, "failed")
                await msg.nak()
        finally:
            self.committed(task.id)
