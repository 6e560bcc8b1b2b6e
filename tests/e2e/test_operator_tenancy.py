"""Tenancy against a real API server: an Agent never takes over an object it does not own."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Namespace, Operator, until
from .test_operator_agent import agent, condition

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
