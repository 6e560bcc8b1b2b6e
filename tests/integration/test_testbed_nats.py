"""The NATS fixtures themselves: JetStream works, and survives a node restart."""

from __future__ import annotations

import time

import nats
import nats.errors
import nats.js.errors
import pytest
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
        await js.add_stream(StreamConfig(name="TESTBED_HA", subjects=["testbed.ha.>"], num_replicas=3))
        # The new R3 stream's interest reaches the server this client is on a moment later ("no responders").
        await until_served(lambda: js.publish("testbed.ha.before", b"published-before-kill"))
        info = await js.stream_info("TESTBED_HA")
        assert info.cluster is not None
        leader = next(i for i, n in enumerate(nats_cluster.nodes) if n.name == info.cluster.leader)
        nats_cluster.kill(leader)
        assert not nats_cluster.nodes[leader].process.running()  # type: ignore[union-attr]
        nats_cluster.restart(leader)
        # Right after a leader is lost the stream elects another; a client
        # retries its request until then, as our runtime does.
        deadline = time.monotonic() + 30
        while True:
            try:
                sub = await js.pull_subscribe("testbed.ha.>", durable="reader")
                [msg] = await sub.fetch(1, timeout=5)
                break
            # During the election the stream's API may have no responder at all, or answer "unavailable".
            except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError, nats.js.errors.NoStreamResponseError):
                if time.monotonic() > deadline:
                    raise
        assert msg.data == b"published-before-kill"
        await msg.ack()
    finally:
        await nc.close()
