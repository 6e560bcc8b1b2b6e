"""Shortcuts through nats-py for the hot path of every task: many publishes handed over at once, and
messages of our own inboxes handled as they are read.

nats-py's ``publish`` costs about 1.7 us a message (checks, a command built, the flusher kicked, each
time); a finished task makes three (its state, its result, its ack), which was most of what the runtime
cost per task over a bare pull-and-ack loop. :func:`publish_all` writes the same ``PUB`` commands into
the client's outgoing buffer at once, with the same checks: a subject or reply with whitespace (which
could inject protocol) or a payload over the server's limit goes through ``publish``, which raises as
before; while the client is not connected every message goes through ``publish`` (which buffers within
its reconnect limit or raises).

A subscription with a callback costs a queue, a task's wake-up and a coroutine per message, besides the
``Msg`` and its parsed headers; every task brings two (its delivery from a pull, its state's
confirmation). :func:`subscribe_raw` hands the subject, reply, payload and header bytes of each message
of such an inbox to a plain function straight from the client's parser: a confirmation needs no more;
a delivery becomes the ``Msg`` nats-py would build (:func:`message`, headers parsed a few times quicker).

They lean on nats-py's internals (``Client._send_command``, ``Client._flush_pending``,
``Client._process_msg``, ``Client._subs``, ``Msg._ackd``); nats-py is pinned, and
tests/integration/test_fastpath.py fails if they change.
"""

from __future__ import annotations

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
    parts: list[bytes] = []  # each message's command line, payload and CRLF: joined once, the payload copied once
    count = sent = 0
    for subject, reply, payload in messages:
        if not subject or _INVALID_SUBJECT.search(subject) or (reply and _INVALID_SUBJECT.search(reply)) or len(payload) > max_payload:
            # What comes before goes out first, then nats-py's publish raises on this one.
            await _hand_over(nc, parts, count, sent)
            parts, count, sent = [], 0, 0
            await nc.publish(subject, payload, reply=reply)
            continue
        if reply:
            parts.append(b"PUB %s %s %d\r\n" % (subject.encode(), reply.encode(), len(payload)))
        else:
            parts.append(b"PUB %s %d\r\n" % (subject.encode(), len(payload)))
        parts.append(payload)
        parts.append(b"\r\n")
        count += 1
        sent += len(payload)
    await _hand_over(nc, parts, count, sent)


async def _hand_over(nc: Client, parts: list[bytes], count: int, payload_bytes: int) -> None:
    """What ``Client._send_publish`` does for each message, once for all of them."""
    if not count:
        return
    nc.stats["out_msgs"] += count
    nc.stats["out_bytes"] += payload_bytes
    await nc._send_command(b"".join(parts))
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


# (subject, reply, payload, header bytes or None) of a message, as the client's parser read them.
RawHandler = Callable[[bytes, bytes, bytes, bytes | None], None]


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
            handle(subject, reply, data, headers)
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
    """Subscribe ``handle`` to ``subject``, called from the client's parser with each message's subject, reply,
    payload and header bytes (no ``Msg`` built, no header parsed): it must be quick and never block."""
    sub = await nc.subscribe(subject)  # no callback; its messages never reach its queue
    _raw_dispatch(nc).handlers[sub._id] = handle
    return sub


_HEADER_LINE = b"NATS/1.0"
# What str.isspace() finds in a header name (ASCII, else skipped; checked char by char in tests).
_WHITESPACE = re.compile(r"\s")


def has_status(headers: bytes | None) -> bool:
    """Whether raw headers carry an inline status (``NATS/1.0 404 No Messages``) as nats-py reads one: three digits."""
    start = len(_HEADER_LINE)
    return headers is not None and headers[start : start + 1] == b" " and headers[start + 1 : start + 4].strip().isdigit()


def message(nc: Client, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> Msg:
    """The ``Msg`` nats-py builds from these bytes, for a message without an inline status (see :func:`has_status`)."""
    return nc.msg_class(
        subject=subject.decode(), reply=reply.decode(), data=data, headers=parse_headers(headers) if headers else None, _client=nc
    )


def parse_headers(raw: bytes) -> dict[str, str] | None:
    """Headers as nats-py parses them (``Client._process_headers`` without an inline status), a few times quicker.

    ``Client._parse_header_lines`` but for its whitespace test (a generator over the name's characters there).
    A status line that is not one (``NATS/1.0 abc``, which only a hand-made header block has) is not read as
    nats-py reads it (a ``Description`` there): the worker reads only trace context from a delivery's headers.
    """
    out: dict[str, str] = {}
    for line in raw[len(_HEADER_LINE) + 2 :].split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if _WHITESPACE.search(key):
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out or None
