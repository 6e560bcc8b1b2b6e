"""`KUBESWARM_REAL_NODE=1 make cluster-up` then `make cluster-down`: pods ran, and the host is as it was.

Runs before test_real_pods (file order), while no other real node is up: one real node per machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.testbed import node
from tests.testbed.cluster import Cluster, KubeAccess
from tests.testbed.procs import wheel_binary

from .conftest import REPO, until

pytestmark = [pytest.mark.e2e, pytest.mark.real_pods]

WORKLOAD = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  containers:
  - name: web
    image: docker.io/library/nats:2.15.1-alpine
    imagePullPolicy: Never
    args: ["--http_port", "8222", "--store_dir", "/data", "--jetstream"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{port: 8222}]}
"""


def run_testbed(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBESWARM_REAL_NODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tests.testbed", *args, "--state-dir", str(state)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def test_cluster_down_leaves_nothing_on_the_host(cluster: KubeAccess, tmp_path: Path) -> None:
    if isinstance(cluster, Cluster) and cluster.real_node:
        pytest.skip("the session's own test bed holds this machine's one real node")
    reason = node.unavailable_reason()
    if reason:
        pytest.skip(reason)
    before = node.host_footprint()
    state = tmp_path / "state"
    up = run_testbed("up", "--nodes", "1", state=state)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        last = up.stdout.strip().splitlines()[-1]
        assert last.startswith("export KUBECONFIG="), up.stdout
        kubeconfig = last.split("=", 1)[1]

        def kubectl(*args: str, input: str | None = None) -> str:
            argv = [str(wheel_binary("kubectl")), "--kubeconfig", kubeconfig, *args]
            return subprocess.run(argv, input=input, capture_output=True, text=True, check=True, timeout=60).stdout

        nodes = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
        # The node controller's own taints (node.kubernetes.io/*) come and go with node conditions.
        taints = {
            n["metadata"]["name"]: {t["key"] for t in n["spec"].get("taints", []) if not t["key"].startswith("node.kubernetes.io/")}
            for n in nodes
        }
        assert taints == {"kwok-node-0": {node.FAKE_NODE_TAINT}, node.NODE_NAME: set()}
        kubectl("apply", "-f", "-", input=WORKLOAD)
        kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=120s")
        assert json.loads(kubectl("get", "pvc", "data", "-o", "json"))["status"]["phase"] == "Bound"
        during = node.host_footprint()
        assert during["processes"] and during["netns"] != before["netns"] and during["iptables"] != before["iptables"]
        # Another test bed's `make cluster-down` (or `up`, which runs it first) leaves this live node alone.
        elsewhere = run_testbed("down", state=tmp_path / "elsewhere")
        assert elsewhere.returncode == 0 and "no test bed was running" in elsewhere.stdout, elsewhere.stdout + elsewhere.stderr
        assert node.BRIDGE in node.host_footprint()["links"]
        kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=30s")
    finally:
        down = run_testbed("down", state=state)
    assert down.returncode == 0, down.stderr
    with contextlib.suppress(AssertionError):
        until(lambda: node.host_footprint() == before, 30, "the host as it was before `up`")
    after = node.host_footprint()
    left = {kind: sorted(set(after[kind]) ^ set(before[kind])) for kind in before if after[kind] != before[kind]}
    assert not left, f"left behind or changed: {left}"
