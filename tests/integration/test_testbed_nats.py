"""The NATS fixtures themselves: JetStream works, and survives a node restart."""

from __future__ import annotations

import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from tests.testbed.nats import NatsCluster, NatsServer, until_served

pytestmark = pytest.mark.integration


async def test_single_node_jetstream_publish_consume(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="TESTBED_SINGLE", subjects=["testbed.single.>"]))
        ack = await js.publish("testbed.single.x", b"hello")
        sub = await js.pull_subscribe("testbed.single.>", durable="reader")
        [msg] = await sub.fetch(1, timeout=5)
        assert msg.data == b"hello"
        assert msg.metadata.sequence.stream == ack.seq
        await msg.ack()
        await js.delete_stream("TESTBED_SINGLE")
    finally:
        await nc.close()


async def test_cluster_message_survives_node_restart(nats_cluster: NatsCluster) -> None:
    nc = await nats.connect(servers=nats_cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        js = nc.jetstream(timeout=10)
        # Made again alike while the new R3 group elects its leader; its interest reaches the server this client is on
        # a moment later ("no responders"); the message has an id, so a publish repeated after a timeout is dropped.
        await until_served(
            lambda: js.add_stream(StreamConfig(name="TESTBED_HA", subjects=["testbed.ha.>"], num_replicas=3)), idempotent=True
        )
        await until_served(
            lambda: js.publish("testbed.ha.before", b"published-before-kill", headers={"Nats-Msg-Id": "before"}), idempotent=True
        )
        info = await js.stream_info("TESTBED_HA")
        assert info.cluster is not None
        leader = next(i for i, n in enumerate(nats_cluster.nodes) if n.name == info.cluster.leader)
        nats_cluster.kill(leader)
        assert not nats_cluster.nodes[leader].process.running()  # type: ignore[union-attr]
        nats_cluster.restart(leader)

        # Right after a leader is lost the stream elects another; a client retries its request until then (the stream's
        # API may have no responder at all, answer "unavailable" or nothing), as our runtime does.
        async def first() -> Msg:
            sub = await js.pull_subscribe("testbed.ha.>", durable="reader")
            [msg] = await sub.fetch(1, timeout=5)
            return msg

        msg = await until_served(first, idempotent=True)
        assert msg.data == b"published-before-kill"
        await msg.ack()
    finally:
        await nc.close()
