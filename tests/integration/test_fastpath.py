"""The task hot path's shortcuts through nats-py, on a real nats-server: they behave as nats-py's own calls.

They lean on nats-py internals (the client's outgoing buffer, a subscription's queue, a message's ack
flag): these tests fail if a nats-py upgrade moves them. Also the agent process's garbage collector settings.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from kubeswarm_runtime.fastpath import ack, acked, has_status, message, parse_headers, publish_all, subscribe_raw
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import BadSubjectError, ConnectionClosedError, MaxPayloadError, MsgAlreadyAckdError
from nats.js import api

from tests.integration.runtime_helpers import wait_for
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def listener(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A second connection, to receive what the first publishes."""
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def test_publish_all_sends_in_order_with_replies(nc: Client, listener: Client) -> None:
    prefix = f"fp.{uuid.uuid4().hex[:8]}"
    sub = await listener.subscribe(f"{prefix}.>")
    await listener.flush()
    sent_before = nc.stats["out_msgs"]
    await publish_all(nc, [(f"{prefix}.a", "reply.one", b"first"), (f"{prefix}.b", "", b""), (f"{prefix}.c", "", b"x" * 70_000)])
    got = [await sub.next_msg(timeout=5) for _ in range(3)]
    assert [(m.subject, m.reply, m.data) for m in got] == [
        (f"{prefix}.a", "reply.one", b"first"),
        (f"{prefix}.b", "", b""),
        (f"{prefix}.c", "", b"x" * 70_000),
    ]
    assert nc.stats["out_msgs"] == sent_before + 3


async def test_publish_all_refuses_what_publish_refuses_after_sending_what_came_before(nc: Client, listener: Client) -> None:
    prefix = f"fp.{uuid.uuid4().hex[:8]}"
    sub = await listener.subscribe(f"{prefix}.>")
    injected = await listener.subscribe("injected")
    await listener.flush()
    # CRLF in a subject would let a caller write protocol of its own: refused, as nats-py's publish refuses it.
    with pytest.raises(BadSubjectError):
        await publish_all(nc, [(f"{prefix}.before", "", b"1"), (f"{prefix}.x\r\nPUB injected 1\r\nz", "", b"2")])
    with pytest.raises(BadSubjectError):
        await publish_all(nc, [(f"{prefix}.ok", "bad reply", b"3")])
    with pytest.raises(MaxPayloadError):
        await publish_all(nc, [(f"{prefix}.big", "", b"x" * (nc.max_payload + 1))])
    await publish_all(nc, [(f"{prefix}.after", "", b"4")])
    # A generous deadline: in a full CI run (one shared server, the machine busy) 5 s once ran out.
    assert [(m.subject, m.data) for m in [await sub.next_msg(timeout=30) for _ in range(2)]] == [
        (f"{prefix}.before", b"1"),
        (f"{prefix}.after", b"4"),
    ]
    await listener.flush()
    assert injected.pending_msgs == 0
    assert nc.is_connected
    await nc.close()
    with pytest.raises(ConnectionClosedError):
        await publish_all(nc, [(f"{prefix}.closed", "", b"5")])


async def test_subscribe_raw_hands_over_bytes_and_leaves_other_subscriptions_alone(nc: Client, listener: Client) -> None:
    prefix = f"fp.{uuid.uuid4().hex[:8]}"
    raw: list[tuple[bytes, bytes, bytes | None]] = []
    replies: list[bytes] = []
    other: list[bytes] = []

    def handle(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if data == b"boom":
            raise RuntimeError("a handler bug")
        raw.append((subject, data, headers))
        replies.append(reply)

    async def on_other(msg: Msg) -> None:
        other.append(msg.data)

    first = await subscribe_raw(nc, f"{prefix}.raw.>", handle)
    second = await subscribe_raw(nc, f"{prefix}.second", handle)  # a second one on the same client
    await nc.subscribe(f"{prefix}.other", cb=on_other)
    await nc.flush()
    received_before = nc.stats["in_msgs"]
    await publish_all(listener, [(f"{prefix}.raw.1", "", b"boom"), (f"{prefix}.raw.2", "r.2", b"two"), (f"{prefix}.other", "", b"plain")])
    await listener.publish(f"{prefix}.raw.3", b"three", headers={"Status": "503"})
    await publish_all(listener, [(f"{prefix}.second", "", b"four")])

    async def arrived() -> bool:
        return len(raw) == 3 and other == [b"plain"]

    await wait_for(arrived, 10, "the raw and the plain messages")
    assert [(subject, data) for subject, data, _ in raw] == [
        (f"{prefix}.raw.2".encode(), b"two"),
        (f"{prefix}.raw.3".encode(), b"three"),
        (f"{prefix}.second".encode(), b"four"),
    ]
    assert raw[0][2] is None
    assert replies == [b"r.2", b"", b""]
    assert raw[1][2] is not None and b"Status: 503" in raw[1][2]
    assert nc.stats["in_msgs"] == received_before + 5
    assert nc.is_connected

    # Unsubscribed: no longer handled (nor queued anywhere).
    await first.unsubscribe()
    await publish_all(listener, [(f"{prefix}.raw.4", "", b"late"), (f"{prefix}.second", "", b"five")])

    async def fifth() -> bool:
        return len(raw) == 4

    await wait_for(fifth, 10, "the message on the subscription still there")
    assert raw[-1][1] == b"five"
    await second.unsubscribe()


HEADER_BLOCKS = [
    b"NATS/1.0\r\nNats-Msg-Id: 0123abcd\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id: a\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ntracestate: k=v\r\n\r\n",
    b"NATS/1.0\r\nNo-Space:value\r\nTabbed:\tvalue\t\r\nEmpty:\r\nno colon here\r\n\r\n",
    b"NATS/1.0\r\nUtf8: caf\xc3\xa9\r\nBroken: \xff\xfe\r\nN\xc3\xa4me: x\r\nIn side: x\r\nSep\x1crated: x\r\n\r\n",
    b"NATS/1.0\r\nSame: 1\r\nSame: 2\r\n\r\n",
    b"NATS/1.0\r\n\r\n",
]


async def test_messages_built_from_bytes_as_nats_py_builds_them(nc: Client) -> None:
    for raw in HEADER_BLOCKS:
        assert not has_status(raw)
        assert parse_headers(raw) == await nc._process_headers(raw), raw
        built = message(nc, b"ks.tasks.x", b"$JS.ACK.S.C.1.2.3.4.0", b"{}", raw)
        expected = nc._build_message(7, b"ks.tasks.x", b"$JS.ACK.S.C.1.2.3.4.0", b"{}", await nc._process_headers(raw))
        assert (built.subject, built.reply, built.data, built.headers, built.metadata) == (
            expected.subject,
            expected.reply,
            expected.data,
            expected.headers,
            expected.metadata,
        )
    # A name with any one ASCII character inside (names are ASCII or skipped): kept or skipped alike.
    every_char = b"NATS/1.0\r\n" + b"".join(b"A%cB: %d\r\n" % (c, c) for c in range(128) if c not in b"\r\n:") + b"\r\n"
    assert parse_headers(every_char) == await nc._process_headers(every_char)
    assert message(nc, b"s", b"", b"x", None).headers is None
    assert has_status(b"NATS/1.0 404 No Messages\r\n\r\n")
    assert has_status(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\n\r\n")
    assert not has_status(None)
    assert not has_status(b"NATS/1.0 abc\r\n\r\n")  # no status for nats-py either: a message like any other


async def test_ack_published_removes_the_delivery_and_marks_it_acked(nc: Client) -> None:
    js = nc.jetstream()
    stream = f"FP{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=stream, subjects=[f"{stream}.tasks"], retention=api.RetentionPolicy.WORK_QUEUE)
    try:
        await js.publish(f"{stream}.tasks", b"task")
        sub = await js.pull_subscribe(f"{stream}.tasks", durable="w", stream=stream, config=api.ConsumerConfig(ack_wait=30))
        (msg,) = await sub.fetch(1, timeout=5)
        await publish_all(nc, [ack(msg)])
        acked(msg)
        with pytest.raises(MsgAlreadyAckdError):
            await msg.ack()

        async def removed() -> bool:
            return (await js.stream_info(stream)).state.messages == 0

        await wait_for(removed, 10, "the acked task gone from the work queue")
    finally:
        await js.delete_stream(stream)


def test_settled_process_collects_its_youngest_generation_less_often() -> None:
    # In a process of its own: settling freezes the heap and changes the collector for the whole process.
    code = "import gc; from kubeswarm_runtime.app import settle_heap; settle_heap(); print(*gc.get_threshold(), gc.get_freeze_count() > 0)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60).stdout.split()
    default_code = "import gc; print(*gc.get_threshold())"
    default = subprocess.run([sys.executable, "-c", default_code], check=True, capture_output=True, text=True, timeout=60).stdout.split()
    assert int(out[0]) >= 5 * int(default[0])
    assert out[1:3] == default[1:3]  # the older generations as they were
    assert out[3] == "True"
