"""The operator's API client against the real API server: a child created by POST is taken over by later applies."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import pytest
from kubeswarm_operator.kube.client import Kube
from kubeswarm_operator.kube.kinds import DEPLOYMENT, SECRET, Manifest
from prometheus_client import REGISTRY

from tests.e2e.conftest import Namespace
from tests.testbed.cluster import KubeAccess

MANAGER = "client-test"


@pytest.fixture
async def kube(cluster: KubeAccess, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Kube]:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    client = Kube(MANAGER)
    yield client
    await client.close()


def patches() -> float:
    """The PATCH requests this process's client has made to Deployments (the operator's request counter)."""
    return REGISTRY.get_sample_value("kubeswarm_operator_api_requests_total", {"verb": "PATCH", "kind": "Deployment"}) or 0.0


def deployment(namespace: str) -> Manifest:
    labels = {"app": "posted"}
    container = {"name": "runtime", "image": "runtime:1", "env": [{"name": "KEPT", "value": "1"}, {"name": "DROPPED", "value": "1"}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "posted", "namespace": namespace, "labels": {"kept": "1", "dropped": "1"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


async def test_fields_a_later_apply_leaves_out_of_a_posted_object_go(kube: Kube, namespace: Namespace) -> None:
    posted = deployment(namespace.name)
    assert await kube.create(posted)
    assert not await kube.create(posted), "a second create finds the name taken and writes nothing"
    wanted = copy.deepcopy(posted)
    del wanted["metadata"]["labels"]["dropped"]
    wanted["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "KEPT", "value": "1"}]
    applied = await kube.apply(wanted)
    assert applied["metadata"]["labels"] == {"kept": "1"}
    assert applied["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "KEPT", "value": "1"}]
    live = await kube.get(DEPLOYMENT, namespace.name, "posted")
    assert live is not None
    ours = [entry for entry in live["metadata"]["managedFields"] if entry["manager"] == MANAGER]
    assert [entry["operation"] for entry in ours] == ["Apply"], "the create's Update entry was handed to the apply"
    # From now on one apply is one request: nothing is left to hand over.
    before = patches()
    await kube.apply(wanted)
    assert patches() == before + 1


async def test_a_secrets_data_written_by_create_is_never_taken_by_an_apply(kube: Kube, namespace: Namespace) -> None:
    metadata = {"name": "keys", "namespace": namespace.name, "annotations": {"kept": "1", "dropped": "1"}}
    assert await kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "data": {"key": "c2VjcmV0"}})
    wanted = {"apiVersion": "v1", "kind": "Secret", "metadata": {**metadata, "annotations": {"kept": "1"}}, "type": "Opaque"}
    await kube.apply(wanted, not_applied=frozenset({"data"}))
    live = await kube.get(SECRET, namespace.name, "keys")
    assert live is not None
    assert live["data"] == {"key": "c2VjcmV0"}
    assert live["metadata"]["annotations"] == {"kept": "1"}
