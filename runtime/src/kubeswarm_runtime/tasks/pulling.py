"""Taking tasks off a durable consumer: no-wait pulls, and how often a delivery has been made."""

from __future__ import annotations

import asyncio
import contextlib
import json

from nats.aio.msg import Msg

from ..connection import JS_API_TIMEOUT, NatsConnection
from ..fastpath import has_status, message, subscribe_raw


class Puller:
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
        await subscribe_raw(self.conn.nc, self.inbox, self._deliver)

    def _deliver(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if has_status(headers):
            ended = True  # 404 no messages / 408: the pull is done
        else:
            self._delivered.append(message(self.conn.nc, subject, reply, data, headers))
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


def deliveries(msg: Msg) -> int:
    """``msg.metadata.num_delivered``, read straight from the usual ack subject (building the metadata costs more)."""
    assert msg.reply
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<timestamp>.<pending>
    tokens = msg.reply.split(".")
    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[4])
    return msg.metadata.num_delivered  # the longer forms (domain, account hash)
