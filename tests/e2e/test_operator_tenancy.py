"""Tenancy against a real API server: an Agent never takes over an object it does not own; a Swarm never
claims another namespace's subjects and streams."""

from __future__ import annotations

from typing import Any

import pytest

from tests.testbed.nats import NatsServer

from .conftest import Namespace, Operator, until
from .test_operator_agent import agent, condition
from .test_operator_swarm import condition as swarm_condition
from .test_operator_swarm import stream_config

pytestmark = pytest.mark.e2e

SETTLE = 60


def conflict(ns: Namespace, name: str) -> dict[str, Any] | None:
    ready = condition(ns, name, "Ready")
    return ready if ready.get("reason") == "NameConflict" else None


def test_an_agent_named_like_an_existing_service_leaves_it_alone(operator: Operator, namespace: Namespace) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "billing", "labels": {"team": "payments"}},
        "spec": {"selector": {"app": "billing"}, "ports": [{"name": "http", "port": 80}]},
    }
    namespace.apply(service)
    namespace.apply(agent("billing"))

    ready = until(lambda: conflict(namespace, "billing"), SETTLE, "Ready=False NameConflict")
    assert ready["status"] == "False"
    assert 'Service "billing" exists and is not owned by this Agent' in ready["message"]
    events = namespace.kubectl("get", "events", "--field-selector", "reason=NameConflict", "-o", "jsonpath={.items[*].message}").stdout
    assert 'Service "billing"' in events
    # The rest of the Agent's children exist; the Service is as its owner left it.
    until(lambda: namespace.get("configmap", "billing-runtime"), SETTLE, "the Agent's ConfigMap")
    live = namespace.must("service", "billing")
    assert live["spec"]["selector"] == {"app": "billing"}
    assert not live["metadata"].get("ownerReferences")
    assert "kubeswarm.io/agent" not in live["metadata"].get("labels", {})

    namespace.kubectl("delete", "agent", "billing", "--wait=true")
    until(lambda: namespace.get("configmap", "billing-runtime") is None, SETTLE, "the Agent's own children collected")
    assert namespace.must("service", "billing")["spec"]["selector"] == {"app": "billing"}


def swarm(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubeswarm.io/v1alpha1", "kind": "Swarm", "metadata": {"name": name}, "spec": {"nats": {"url": url}, **spec}}


def test_a_swarm_cannot_claim_another_namespaces_prefix_nor_delete_its_streams(
    operator: Operator, namespace: Namespace, other_namespace: Namespace, nats_server: NatsServer
) -> None:
    victim_prefix = f"ks.{namespace.name}.team"
    tasks = f"{victim_prefix.replace('.', '_')}_TASKS"
    namespace.apply(swarm("team", nats_server.url))
    until(lambda: stream_config(nats_server.url, tasks), 60, "the victim's streams")

    other_namespace.apply(swarm("thief", nats_server.url, subjectPrefix=victim_prefix))

    def refused() -> dict[str, Any] | None:
        nats_ready = swarm_condition(other_namespace.get("swarm", "thief"), "NatsReady")
        return nats_ready if nats_ready and nats_ready["reason"] == "PrefixNotOwned" else None

    nats_ready = until(refused, 60, "NatsReady=False PrefixNotOwned on the thief")
    assert nats_ready["status"] == "False"
    assert f"ks.{other_namespace.name}" in nats_ready["message"]

    other_namespace.kubectl("delete", "swarm", "thief", "--wait=true", "--timeout=60s")
    assert stream_config(nats_server.url, tasks) is not None

    # Two Swarms of one namespace sharing a prefix: deleting one leaves the streams to the other.
    namespace.apply(swarm("twin", nats_server.url, subjectPrefix=victim_prefix))
    until(lambda: swarm_condition(namespace.get("swarm", "twin"), "NatsReady"), 60, "the twin's NatsReady")
    namespace.kubectl("delete", "swarm", "twin", "--wait=true", "--timeout=60s")
    assert stream_config(nats_server.url, tasks) is not None
