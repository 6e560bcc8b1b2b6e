"""The local Kubernetes test bed itself: real components, fake nodes, clean teardown."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.testbed import build
from tests.testbed.cluster import Cluster, KubeAccess, remaining_pids
from tests.testbed.procs import port_accepts

from .conftest import ON_FAKE_NODES

pytestmark = pytest.mark.e2e

# An image nobody can pull: kwok's pods run nothing, so they become Ready all the same.
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "testbed-web", "namespace": "default"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "testbed-web"}},
        "template": {
            "metadata": {"labels": {"app": "testbed-web"}},
            "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}], **ON_FAKE_NODES},
        },
    },
}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def local_only(cluster: KubeAccess) -> Cluster:
    if not isinstance(cluster, Cluster):
        pytest.skip("checks the local test bed's own build, not an external cluster")
    return cluster


def test_server_reports_pinned_version(cluster: KubeAccess) -> None:
    local_only(cluster)
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == build.pins()["kubernetes"]
    assert version["serverVersion"]["gitTreeState"] == "clean"


def test_fake_nodes_are_ready(cluster: KubeAccess) -> None:
    local_only(cluster)
    nodes = cluster.kubectl_json("get", "nodes", "-l", "type=kwok")["items"]
    assert isinstance(nodes, list)
    assert len(nodes) >= 2
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]


def test_deployment_gets_ready_pods_and_garbage_collection_works(cluster: KubeAccess) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(DEPLOYMENT))
    try:

        def ready_replicas() -> int:
            status = cluster.kubectl_json("get", "deployment", "testbed-web", "-n", "default").get("status", {})
            assert isinstance(status, dict)
            return int(status.get("readyReplicas", 0))

        wait_for(lambda: ready_replicas() == 2, 60, "2 ready pods")
        pods = cluster.kubectl_json("get", "pods", "-n", "default", "-l", "app=testbed-web")["items"]
        assert isinstance(pods, list)
        assert {p["status"]["phase"] for p in pods} == {"Running"}
        assert len({p["spec"]["nodeName"] for p in pods}) >= 1

        replicasets = cluster.kubectl_json("get", "replicasets", "-n", "default", "-l", "app=testbed-web")["items"]
        assert isinstance(replicasets, list)
        assert len(replicasets) == 1
        rs_name = replicasets[0]["metadata"]["name"]
    finally:
        cluster.kubectl("delete", "deployment", "testbed-web", "-n", "default", "--wait=true")

    def replicaset_gone() -> bool:
        return cluster.kubectl("get", "replicaset", rs_name, "-n", "default", check=False).returncode != 0

    wait_for(replicaset_gone, 60, f"replicaset {rs_name} to be garbage-collected")


def test_helm_runs_at_pinned_version() -> None:
    helm = build.build(next(c for c in build.COMPONENTS if c.name == "helm")) / "helm"
    out = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert out.startswith(build.pins()["helm"])


def test_teardown_leaves_no_process_or_port(tmp_path: Path, cluster: KubeAccess) -> None:
    local_only(cluster)
    second = Cluster(tmp_path / "second", nodes=1).start()
    pids = [p.pid for p in second.processes]
    ports = [
        second.etcd_port,
        second.etcd_peer_port,
        second.apiserver_port,
        second.controller_manager_port,
        second.scheduler_port,
        second.kwok_port,
    ]
    assert all(port_accepts(p) for p in ports)
    second.stop()
    assert remaining_pids(pids) == []
    assert [p for p in ports if port_accepts(p)] == []
