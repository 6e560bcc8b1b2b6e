"""Shortcuts through nats-py for the hot path of every task: many publishes handed over at once, and
messages of our own inboxes handled as they are read.

nats-py's ``publish`` costs about 1.7 us a message (checks, a command built, the flusher kicked, each
time); a finished task makes three (its state, its result, its ack), which was most of what the runtime
cost per task over a bare pull-and-ack loop. :func:`publish_all` writes the same ``PUB`` commands into
the client's outgoing buffer at once, with the same checks: a subject or reply with whitespace (which
could inject protocol) or a payload over the server's limit goes through ``publish``, which raises as
before; while the client is not connected every message goes through ``publish`` (which buffers within
its reconnect limit or raises).

A subscription with a callback costs a queue, a task's wake-up and a coroutine per message; every task
brings two (its delivery from a pull, its state's confirmation). :func:`subscribe_direct` hands each
message of such an inbox to a plain function as the client reads it; :func:`subscribe_raw` goes further
for messages that need no ``Msg`` (a confirmation is a subject and a few bytes of JSON): their subject,
payload and header bytes go to the function straight from the client's parser.

They lean on nats-py's internals (``Client._send_command``, ``Client._flush_pending``,
``Client._process_msg``, ``Client._subs``, ``Subscription._pending_queue``, ``Msg._ackd``); nats-py is
pinned, and tests/integration/test_fastpath.py fails if they change.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, ConnectionDrainingError

log = logging.getLogger(__name__)

# What nats-py's publish refuses in a subject (nats.aio.client._SUBJECT_INVALID_RE).
_INVALID_SUBJECT = re.compile(r"[ \t\r\n]")

# (subject, reply, payload); an empty reply is none.
Publish = tuple[str, str, bytes]


def ack(msg: Msg) -> Publish:
    """The publish that acks a JetStream delivery (as ``msg.ack()``: an empty message to its reply subject)."""
    assert msg.reply, "a JetStream delivery has a reply subject"
    return msg.reply, "", b""


def acked(msg: Msg) -> None:
    """Mark a delivery acked once its :func:`ack` was published, as ``msg.ack()`` does (a second ack then raises)."""
    msg._ackd = True


async def publish_all(nc: Client, messages: Sequence[Publish]) -> None:
    """Publish ``messages`` in order, as ``nc.publish`` would each one, handing the client one buffer."""
    if nc.is_closed:
        raise ConnectionClosedError
    if nc.is_draining_pubs:
        raise ConnectionDrainingError
    if not nc.is_connected:
        for subject, reply, payload in messages:
            await nc.publish(subject, payload, reply=reply)
        return
    max_payload = nc.max_payload
    commands: list[bytes] = []
    sent = 0
    for subject, reply, payload in messages:
        if not subject or _INVALID_SUBJECT.search(subject) or (reply and _INVALID_SUBJECT.search(reply)) or len(payload) > max_payload:
            # What comes before goes out first, then nats-py's publish raises on this one.
            await _hand_over(nc, commands, sent)
            commands, sent = [], 0
            await nc.publish(subject, payload, reply=reply)
            continue
        if reply:
            commands.append(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(), len(payload), payload))
        else:
            commands.append(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload))
        sent += len(payload)
    await _hand_over(nc, commands, sent)


async def _hand_over(nc: Client, commands: list[bytes], payload_bytes: int) -> None:
    """What ``Client._send_publish`` does for each message, once for all of them."""
    if not commands:
        return
    nc.stats["out_msgs"] += len(commands)
    nc.stats["out_bytes"] += payload_bytes
    await nc._send_command(b"".join(commands))
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


class _HandleAtOnce(asyncio.Queue[Msg]):
    """Stands in for a subscription's queue: each message put is handled at once, nothing waits."""

    def __init__(self, sub: Subscription, handle: Callable[[Msg], None]) -> None:
        super().__init__()
        self._sub = sub
        self._handle = handle

    def put_nowait(self, msg: Msg) -> None:
        self._sub._pending_size -= len(msg.data)  # counted by the client for its slow-consumer check; handled already
        try:
            self._handle(msg)
        except Exception:
            # Raised into the client's read loop, it would end the connection.
            log.exception("handling a message on %s failed", self._sub.subject)


async def subscribe_direct(nc: Client, subject: str, handle: Callable[[Msg], None]) -> Subscription:
    """Subscribe ``handle`` to ``subject``, called in the client's read loop for each message: it must be quick and never block."""
    sub = await nc.subscribe(subject)  # no callback: nats-py queues its messages (none yet: the loop has not run since)
    queued, sub._pending_queue = sub._pending_queue, _HandleAtOnce(sub, handle)
    while not queued.empty():
        handle(queued.get_nowait())
    return sub


# (subject, payload, header bytes or None) of a message, as the client's parser read them.
RawHandler = Callable[[bytes, bytes, bytes | None], None]


class _RawDispatch:
    """Stands in for a client's ``_process_msg``: the messages of raw subscriptions go to their handler, the rest as before."""

    def __init__(self, nc: Client) -> None:
        self.handlers: dict[int, RawHandler] = {}
        self._process_msg = nc._process_msg
        self._subs = nc._subs
        self._stats = nc.stats

    async def process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        handle = self.handlers.get(sid)
        if handle is None or sid not in self._subs:
            # nats-py's parser passes None when a message has no headers, whatever the annotation says.
            await self._process_msg(sid, subject, reply, data, cast(bytes, headers))
            return
        self._stats["in_msgs"] += 1
        self._stats["in_bytes"] += len(data)
        try:
            handle(subject, data, headers)
        except Exception:
            # Raised into the client's read loop, it would end the connection.
            log.exception("handling a message on %s failed", subject)


def _raw_dispatch(nc: Client) -> _RawDispatch:
    current: Any = nc._process_msg
    dispatch = getattr(current, "__self__", None)
    if isinstance(dispatch, _RawDispatch):
        return dispatch
    dispatch = _RawDispatch(nc)
    nc._process_msg = dispatch.process_msg  # type: ignore[method-assign]
    return dispatch


async def subscribe_raw(nc: Client, subject: str, handle: RawHandler) -> Subscription:
    """Subscribe ``handle`` to ``subject``, called from the client's parser with each message's subject, payload and
    header bytes (no ``Msg`` built, no header parsed): it must be quick and never block."""
    sub = await nc.subscribe(subject)  # no callback; its messages never reach its queue
    _raw_dispatch(nc).handlers[sub._id] = handle
    return sub
