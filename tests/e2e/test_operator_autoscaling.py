"""Backlog autoscaling through the real API server and nats-server: up on backlog, down after the delay, hands off an HPA."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import ON_FAKE_NODES, Namespace, Operator, until
from tests.e2e.test_operator_swarm import agent_manifest, condition, jetstream, swarm_manifest
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.e2e

SCALE_DOWN_DELAY = 4


def autoscaled(name: str, swarm: str, capability: str) -> dict[str, Any]:
    """An autoscaled worker whose pods consume nothing: the backlog stays as the test makes it."""
    return agent_manifest(
        name,
        swarm,
        capabilities=[capability],
        **ON_FAKE_NODES,
        autoscaling={
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 5,
            "targetBacklogPerReplica": 2,
            "scaleDownDelaySeconds": SCALE_DOWN_DELAY,
        },
    )


def publish_tasks(url: str, subject: str, count: int) -> None:
    async def query(js: Any) -> None:
        for i in range(count):
            await js.publish(subject, f"task {i}".encode())

    jetstream(url, query)


def purge(url: str, stream: str) -> None:
    async def query(js: Any) -> None:
        await js.purge_stream(stream)

    jetstream(url, query)


def streams_ready(namespace: Namespace, swarm: str) -> None:
    until(lambda: ((namespace.get("swarm", swarm) or {}).get("status") or {}).get("streams"), 60, f"swarm {swarm}'s streams")


def replicas(namespace: Namespace, name: str) -> int:
    body = namespace.get("agent", name)
    assert body is not None
    return int(body["spec"]["replicas"])


@pytest.fixture
def prefix(namespace: Namespace) -> str:
    return f"ks.{namespace.name}.{uuid.uuid4().hex[:8]}"


def test_backlog_scales_up_then_down_after_the_delay(
    operator: Operator, namespace: Namespace, nats_server: NatsServer, prefix: str
) -> None:
    namespace.apply(swarm_manifest("queue", nats_server.url, prefix))
    namespace.apply(autoscaled("worker", "queue", "crunch"))
    streams_ready(namespace, "queue")
    until(
        lambda: (condition(namespace.get("agent", "worker"), "Scaling") or {}).get("reason") == "BacklogMatched",
        60,
        "the autoscaler to see an empty queue",
    )
    assert replicas(namespace, "worker") == 1

    publish_tasks(nats_server.url, f"{prefix}.tasks.crunch", 7)  # ceil(7 / 2) = 4 replicas
    until(lambda: replicas(namespace, "worker") == 4, 30, "scale-up to 4 replicas")
    body = until(lambda: (b := namespace.get("agent", "worker")) and b["status"].get("backlog") == 7 and b, 30, "backlog 7 in status")
    assert condition(body, "Scaling")["reason"] == "BacklogHigh"  # type: ignore[index]
    until(lambda: (namespace.get("deployment", "worker") or {}).get("spec", {}).get("replicas") == 4, 30, "the Deployment to follow")
    events = namespace.kubectl("get", "events", "--field-selector", "reason=ScaledUp", "-o", "jsonpath={.items[*].message}").stdout
    assert "1 -> 4 replicas" in events

    purge(nats_server.url, f"{prefix.replace('.', '_')}_TASKS")
    drained = time.monotonic()
    until(
        lambda: (condition(namespace.get("agent", "worker"), "Scaling") or {}).get("reason") == "ScaleDownDelayed",
        30,
        "the scale-down to wait",
    )
    assert replicas(namespace, "worker") == 4
    until(lambda: replicas(namespace, "worker") == 1, 30, "scale-down to minReplicas")
    assert time.monotonic() - drained >= SCALE_DOWN_DELAY


def test_hpa_on_the_agent_takes_over(operator: Operator, namespace: Namespace, nats_server: NatsServer, prefix: str) -> None:
    namespace.apply(swarm_manifest("queue", nats_server.url, prefix))
    namespace.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "external"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "kubeswarm.io/v1alpha1", "kind": "Agent", "name": "worker"},
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
            },
        }
    )
    namespace.apply(autoscaled("worker", "queue", "crunch"))
    streams_ready(namespace, "queue")
    publish_tasks(nats_server.url, f"{prefix}.tasks.crunch", 9)

    def handed_off() -> dict[str, Any] | None:
        cond = condition(namespace.get("agent", "worker"), "Scaling")
        return cond if cond and cond["reason"] == "ExternalAutoscaler" else None

    cond = until(handed_off, 60, "Scaling=False ExternalAutoscaler")
    assert cond["status"] == "False"
    assert "external" in cond["message"]
    # The backlog (9) asked for 5 replicas, yet the spec was never written after its creation.
    body = namespace.get("agent", "worker")
    assert body is not None
    assert body["spec"]["replicas"] == 1
    assert body["metadata"]["generation"] == 1


def test_scale_to_zero_then_the_first_task_wakes_it(operator: Operator, namespace: Namespace, nats_server: NatsServer, prefix: str) -> None:
    namespace.apply(swarm_manifest("queue", nats_server.url, prefix))
    sleeper = autoscaled("sleeper", "queue", "dream")
    sleeper["spec"]["autoscaling"] |= {"minReplicas": 0, "scaleDownDelaySeconds": 1}
    namespace.apply(sleeper)
    streams_ready(namespace, "queue")
    until(lambda: replicas(namespace, "sleeper") == 0, 60, "the idle Agent to go to zero")

    def idle() -> dict[str, Any] | None:
        body = namespace.get("agent", "sleeper")
        return body if body and body.get("status", {}).get("phase") == "Idle" else None

    body = until(idle, 30, "phase Idle")
    assert condition(body, "Ready")["reason"] == "ScaledToZero"  # type: ignore[index]
    assert "Idle" in namespace.kubectl("get", "agent", "sleeper").stdout  # the printer column, not a failure

    # How fast the wake-up is belongs to bench/bench_autoscaling.py --from-zero, not to a timed assertion.
    publish_tasks(nats_server.url, f"{prefix}.tasks.dream", 1)
    until(lambda: replicas(namespace, "sleeper") == 1, 10, "the first task to bring one replica")
    # The task waits in the queue for that replica (kwok's pods run nothing): not lost.
    until(lambda: (namespace.get("agent", "sleeper") or {}).get("status", {}).get("backlog") == 1, 30, "backlog 1 in status")
