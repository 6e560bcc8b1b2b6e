"""Swarms through the real API server and a real nats-server: members, streams, status, finalizer, NATS outage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from kubeswarm_operator.jetstream.connections import NatsPool, NatsTarget
from kubeswarm_operator.jetstream.provisioning import provision
from kubeswarm_runtime.names import SwarmNames
from kubeswarm_runtime.resources import StreamsSpec
from nats.js.errors import NotFoundError

from tests.e2e.conftest import Namespace, Operator, until
from tests.testbed.nats import NatsNode, NatsServer
from tests.testbed.procs import free_port

pytestmark = pytest.mark.e2e


def swarm_manifest(name: str, url: str, prefix: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeswarm.io/v1alpha1",
        "kind": "Swarm",
        "metadata": {"name": name},
        "spec": {"nats": {"url": url}, "subjectPrefix": prefix, **spec},
    }


def agent_manifest(name: str, swarm: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubeswarm.io/v1alpha1", "kind": "Agent", "metadata": {"name": name}, "spec": {"swarm": swarm, **spec}}


def jetstream(url: str, query: Any) -> Any:
    """Run one async query against JetStream with a fresh connection."""

    async def run() -> Any:
        nc = await nats.connect(url)
        try:
            return await query(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


def stream_config(url: str, name: str) -> Any:
    async def query(js: Any) -> Any:
        try:
            return (await js.stream_info(name)).config
        except NotFoundError:
            return None

    return jetstream(url, query)


def consumer_names(url: str, stream: str) -> set[str]:
    async def query(js: Any) -> set[str]:
        return {info.name for info in await js.consumers_info(stream)}

    return set(jetstream(url, query))


def provision_again(url: str, prefix: str, streams: dict[str, Any], capabilities: list[str]) -> tuple[str, ...]:
    async def run() -> tuple[str, ...]:
        conn = await NatsPool(connect_timeout=3).get(NatsTarget(url))
        try:
            done = await provision(conn, SwarmNames(prefix), StreamsSpec.model_validate(streams), capabilities)
        finally:
            await conn.close()
        return done.actions

    return asyncio.run(run())


def condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((body or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return None


def pods_settled(namespace: Namespace) -> bool:
    pods = namespace.must("pods")["items"]
    return all(
        not pod["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))
        for pod in pods
    )


@pytest.fixture
def prefix(namespace: Namespace) -> str:
    return f"ks.{namespace.name}.{uuid.uuid4().hex[:8]}"


def test_swarm_members_streams_status_and_finalizer(operator: Operator, namespace: Namespace, nats_server: NatsServer, prefix: str) -> None:
    base = prefix.replace(".", "_")
    swarm = swarm_manifest(
        "team",
        nats_server.url,
        prefix,
        defaults={"capabilities": ["research"], "concurrency": 2},
        agents=[
            {"name": "alpha", "replicas": 2, "template": {"role": "lead"}},
            {"name": "beta", "template": {"capabilities": ["code"]}},
        ],
        streams={"maxAgeSeconds": 3600, "discoveriesRetention": "interest", "maxDeliver": 3},
    )
    namespace.apply(swarm)
    namespace.apply(agent_manifest("gamma", "team", capabilities=["review"]))

    alpha = until(lambda: namespace.get("agent", "alpha"), 60, "member Agent alpha")
    assert alpha["spec"]["replicas"] == 2
    assert alpha["spec"]["role"] == "lead"
    assert alpha["spec"]["capabilities"] == ["research"]  # from defaults
    assert alpha["spec"]["concurrency"] == 2
    assert alpha["spec"]["swarm"] == "team"
    assert [ref["kind"] for ref in alpha["metadata"]["ownerReferences"]] == ["Swarm"]
    beta = until(lambda: namespace.get("agent", "beta"), 30, "member Agent beta")
    assert beta["spec"]["capabilities"] == ["code"]  # the template replaces the default list

    # kubectl scale of a member: kept where the Swarm sets no replicas (beta), put back with a Warning
    # Event on the Agent saying where to scale it where it does (alpha).
    namespace.kubectl("scale", "agent/beta", "--replicas=3")
    namespace.kubectl("scale", "agent/alpha", "--replicas=5")
    selector = "involvedObject.kind=Agent,involvedObject.name=alpha,reason=ReplicasSetBySwarm"
    explained = until(
        lambda: namespace.kubectl("get", "events", "--field-selector", selector, "-o", "jsonpath={.items[*].message}").stdout,
        30,
        "a ReplicasSetBySwarm Event on alpha",
    )
    assert "replicas 5 put back to 2" in explained and "spec.agents[name=alpha].replicas" in explained
    until(lambda: namespace.must("agent", "alpha")["spec"]["replicas"] == 2, 30, "alpha's replicas put back to 2")
    assert namespace.must("agent", "beta")["spec"]["replicas"] == 3

    def aggregated() -> dict[str, Any] | None:
        body = namespace.get("swarm", "team")
        status = (body or {}).get("status") or {}
        nats_ready = condition(body, "NatsReady")
        return body if status.get("agents") == 3 and nats_ready and nats_ready["status"] == "True" else None

    body = until(aggregated, 60, "swarm status with 3 agents and NatsReady")
    table = namespace.kubectl("get", "swarm", "team").stdout.splitlines()
    assert "READY" in table[0].split() and "AGENTS" not in table[0].split()  # READY ready/all, as a Deployment's
    assert body["status"]["ready"] == f"{body['status']['readyAgents']}/3"
    assert set(body["status"]["streams"]) == {f"{base}_TASKS", f"{base}_DISCOVERIES", f"{base}_DLQ"}
    assert body["status"]["phase"] in ("Pending", "Degraded", "Running")
    # Dead letters waiting: the DLQ stream's count, read with the others (kubectl's Dead-Letters column).
    assert body["status"]["deadLetters"] == 0

    async def dead_letter(js: Any) -> None:
        await js.publish(f"{prefix}.dlq.research", b'{"reason": "a letter for the count"}')

    jetstream(nats_server.url, dead_letter)
    until(lambda: (namespace.must("swarm", "team").get("status") or {}).get("deadLetters") == 1, 30, "status.deadLetters 1")
    assert "DEAD-LETTERS" in namespace.kubectl("get", "swarm", "team").stdout.splitlines()[0].split()

    discoveries = stream_config(nats_server.url, f"{base}_DISCOVERIES")
    assert discoveries.retention == "interest"
    assert discoveries.max_age == 3600
    # One durable consumer per capability and priority, for owned and joined members alike.
    wanted = {f"{cap}{suffix}" for cap in ("research", "code", "review") for suffix in ("", "-high", "-low")}
    until(lambda: consumer_names(nats_server.url, f"{base}_TASKS") == wanted, 30, "task consumers of every capability")
    # Level-based: provisioning the same spec again finds everything in place and writes nothing.
    assert provision_again(nats_server.url, prefix, swarm["spec"]["streams"], ["research", "code", "review"]) == ()

    # The spec changes: a member leaves, the streams keep messages for less time.
    swarm["spec"]["agents"] = swarm["spec"]["agents"][:1]
    swarm["spec"]["streams"]["maxAgeSeconds"] = 600
    namespace.apply(swarm)
    until(lambda: namespace.get("agent", "beta") is None, 60, "removed member beta to be deleted")
    until(lambda: stream_config(nats_server.url, f"{base}_DLQ").max_age == 600, 30, "the DLQ stream's new max age")
    until(lambda: "code" not in consumer_names(nats_server.url, f"{base}_TASKS"), 30, "the consumer nobody needs to go")
    assert namespace.get("agent", "gamma") is not None  # joined, not owned: stays

    # On the real node a runtime still starting makes its swarm's stores: delete once none is.
    until(lambda: pods_settled(namespace), 120, "every member pod Ready, none starting or stopping")
    namespace.kubectl("delete", "swarm", "team", "--wait=true", "--timeout=60s")
    until(lambda: stream_config(nats_server.url, f"{base}_TASKS") is None, 30, "the swarm's streams removed by the finalizer")
    assert stream_config(nats_server.url, f"KV_{base}_tasks") is None


@pytest.fixture
def late_nats(tmp_path: Path) -> Iterator[NatsNode]:
    """A nats-server whose port is known before it runs (started by the test)."""
    node = NatsNode("late", tmp_path / "late", client_port=free_port())
    yield node
    node.stop()


def test_nats_unreachable_is_a_condition_then_recovers(operator: Operator, namespace: Namespace, late_nats: NatsNode, prefix: str) -> None:
    namespace.apply(swarm_manifest("offline", late_nats.url, prefix))

    def reported() -> dict[str, Any] | None:
        cond = condition(namespace.get("swarm", "offline"), "NatsReady")
        return cond if cond and cond["status"] == "False" else None

    cond = until(reported, 60, "NatsReady=False")
    assert cond["reason"] == "Unreachable"
    assert late_nats.url in cond["message"]
    assert operator.healthy()  # retried with backoff, no crash

    late_nats.start()

    def recovered() -> dict[str, Any] | None:
        cond = condition(namespace.get("swarm", "offline"), "NatsReady")
        return cond if cond and cond["status"] == "True" else None

    until(recovered, 90, "NatsReady=True once NATS is up")
    assert stream_config(late_nats.url, f"{prefix.replace('.', '_')}_TASKS") is not None
    namespace.kubectl("delete", "swarm", "offline", "--wait=true", "--timeout=60s")


def test_deleting_a_swarm_whose_nats_is_gone_posts_events_and_ends_within_the_bound(
    operator: Operator, namespace: Namespace, prefix: str
) -> None:
    """The finalizer retries an unreachable NATS with a Warning Event per try, then leaves the streams (named in an Event)."""
    namespace.apply(swarm_manifest("gone", f"nats://127.0.0.1:{free_port()}", prefix))
    until(lambda: "kubeswarm.io/finalizer" in namespace.must("swarm", "gone")["metadata"].get("finalizers", []), 60, "the finalizer")
    until(lambda: condition(namespace.get("swarm", "gone"), "NatsReady"), 60, "NatsReady reported")
    namespace.kubectl("delete", "swarm", "gone", "--wait=false")

    def events(reason: str) -> list[str]:
        selector = f"involvedObject.name=gone,reason={reason}"
        out = namespace.kubectl("get", "events", "--field-selector", selector, "-o", "jsonpath={.items[*].message}").stdout
        return [out] if out else []

    tried = until(lambda: events("StreamsNotRemoved"), 60, "a StreamsNotRemoved Event while the finalizer waits")
    assert "127.0.0.1" in tried[0]
    # KUBESWARM_SWARM_DELETE_TIMEOUT_SECONDS is 15 in the e2e operator: gone well before kopf's old ten minutes.
    until(lambda: namespace.get("swarm", "gone") is None, 90, "the Swarm gone after the finalizer gave up")
    left = until(lambda: events("StreamsLeft"), 30, "a StreamsLeft Event")
    base = prefix.replace(".", "_")
    assert f"{base}_TASKS" in left[0] and f"KV_{base}_tasks" in left[0] and "nats stream rm" in left[0]
