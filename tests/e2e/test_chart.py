"""The chart on a real API server: install, helm test, the operator under the chart's identity, upgrade, uninstall.

On kwok the chart's pods run nothing (they are admitted and marked Ready); with the real node
(KUBESWARM_REAL_NODE=1) its NATS and operator run and ``helm test`` checks them for real.  Either
way the operator under test runs here, as ``python -m kubeswarm_operator`` with the environment
the chart's Deployment gives it and a token of the chart's ServiceAccount (the chart's own
operator scaled to zero meanwhile): whatever it does, the chart's RBAC must allow.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_operator_autoscaling import publish_tasks
from tests.testbed.cluster import KubeAccess
from tests.testbed.nats import NatsServer
from tests.unit.test_chart import CHART, Manifest, find, helm, one, operator_env, values_args

from .conftest import CRDS, ON_FAKE_NODES, REPO, Operator, adopt_crds, pods_run_here, until

pytestmark = pytest.mark.e2e

RELEASE = "ks"
EXAMPLE = REPO / "examples" / "agent-anthropic.yaml"
# The kwok test bed has no volume provisioner: NATS pods wait for their volumes, which is fine
# there (the agents' NATS is not under test), so helm does not --wait. The images are the
# chart's defaults: the ones the real node imports (kwok runs none).
VALUES: Manifest = {"dashboards": {"enabled": True}}
READY = 60


@dataclass
class Release:
    cluster: KubeAccess
    namespace: str
    tmp: Path

    def helm(self, *args: str, check: bool = True) -> Any:
        return helm(*args, "--namespace", self.namespace, check=check, kubeconfig=self.cluster.kubeconfig)

    def install(self, command: str, values: Manifest) -> str:
        out = self.helm(command, RELEASE, str(CHART), *values_args(values, self.tmp), "--timeout", "2m")
        return str(out.stdout)

    def manifest(self) -> list[Manifest]:
        out = self.helm("get", "manifest", RELEASE)
        return [doc for doc in yaml.safe_load_all(out.stdout) if doc]

    def get(self, *args: str, namespace: str | None = None) -> Manifest | None:
        proc = self.cluster.kubectl("-n", namespace or self.namespace, "get", *args, "-o", "json", check=False)
        if proc.returncode != 0:
            assert "NotFound" in proc.stderr, proc.stderr
            return None
        found: Manifest = json.loads(proc.stdout)
        return found

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{RELEASE}-kubeswarm-operator"

    def can(self, verb: str, resource: str, namespace: str) -> bool:
        proc = self.cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={self.service_account}", check=False)
        return proc.stdout.strip() == "yes"

    @property
    def operator_deployment(self) -> str:
        return f"deployment/{RELEASE}-kubeswarm-operator"

    def operator(self, log: Path) -> Operator:
        """The real operator, with the chart Deployment's environment and the chart ServiceAccount's token,
        alone: the chart's own operator (its Deployment back at one replica after an upgrade) scaled to zero."""
        self.cluster.kubectl("-n", self.namespace, "scale", self.operator_deployment, "--replicas=0")
        selector = "app.kubernetes.io/component=operator"
        until(lambda: not (self.get("pods", "-l", selector) or {"items": []})["items"], READY, "the chart's operator pod gone")
        token = self.cluster.kubectl(
            "-n", self.namespace, "create", "token", f"{RELEASE}-kubeswarm-operator", "--duration=1h"
        ).stdout.strip()
        admin = yaml.safe_load(self.cluster.kubeconfig.read_text())
        kubeconfig = self.tmp / f"operator-{uuid.uuid4().hex[:6]}.kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "testbed", "cluster": admin["clusters"][0]["cluster"]}],
                    "users": [{"name": "operator", "user": {"token": token}}],
                    "contexts": [{"name": "operator", "context": {"cluster": "testbed", "user": "operator"}}],
                    "current-context": "operator",
                }
            )
        )
        env = operator_env(self.manifest())
        if pods_run_here(self.cluster):
            # The agents' NATS URL names a Service this machine does not resolve; a server's pod address it reaches
            # (the operator pushes the agents' swarm accounts there: without them their pods never get in).
            pod = self.get("pod", f"{RELEASE}-kubeswarm-nats-0") or {}
            env["KUBESWARM_NATS_OPERATOR_URL"] = f"nats://{pod['status']['podIP']}:4222"
        return Operator(kubeconfig, log, env=env).start()


@pytest.fixture(scope="module")
def release(cluster: KubeAccess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    name = f"kubeswarm-{uuid.uuid4().hex[:6]}"
    # The restricted Pod Security Standard, enforced: a non-compliant pod of the chart is refused.
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    adopt_crds(cluster, RELEASE, name)
    rel = Release(cluster, name, tmp_path_factory.mktemp("chart-e2e"))
    yield rel
    rel.helm("uninstall", RELEASE, "--wait", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def agents_namespace(cluster: KubeAccess) -> Iterator[str]:
    name = f"agents-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@contextlib.contextmanager
def chart_operator(release: Release, log: Path) -> Iterator[Operator]:
    """The operator as the chart's identity; afterwards, its log must show no refusal by the chart's RBAC."""
    operator = release.operator(log)
    try:
        yield operator
    finally:
        operator.stop()
    refusals = ("Forbidden", " 403", "Not enough permissions")
    forbidden = [line for line in log.read_text().splitlines() if any(sign in line for sign in refusals)]
    assert not forbidden, "the operator was refused by the chart's RBAC:\n" + "\n".join(forbidden[:10])


def conditions_of(body: Manifest | None) -> dict[str, str]:
    return {c["type"]: c["status"] for c in ((body or {}).get("status") or {}).get("conditions", [])}


def example_agent_becomes_ready(release: Release, namespace: str, name: str, log: Path) -> None:
    """The example Agent (and the Secret it names) applied as ``name``; the operator, as the chart's identity, makes it Running."""
    example = yaml.safe_load(EXAMPLE.read_text())
    example["metadata"]["name"] = name
    ref = example["spec"]["model"]["apiKeySecretRef"]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": ref["name"]}, "stringData": {ref["key"]: "not-a-real-key"}}
    for manifest in (secret, example):
        release.cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))
    with chart_operator(release, log):

        def ready() -> Manifest | None:
            body = release.get("agent", name, namespace=namespace)
            status = (body or {}).get("status") or {}
            return status if status.get("phase") == "Running" and conditions_of(body).get("Ready") == "True" else None

        until(ready, READY, f"example Agent {namespace}/{name} Running (operator log: {log})")


def swarm_scales_and_goes(release: Release, namespace: str, nats_url: str, log: Path) -> None:
    """A Swarm with one autoscaled member, as the chart's identity: member Agent, streams, status, scale, finalizer."""
    prefix = f"ks.{namespace}.{uuid.uuid4().hex[:8]}"
    member = {
        "name": "cruncher",
        "template": {
            "capabilities": ["crunch"],
            **ON_FAKE_NODES,  # its pods consume nothing: the backlog stays as published
            "autoscaling": {
                "enabled": True,
                "minReplicas": 1,
                "maxReplicas": 3,
                "targetBacklogPerReplica": 1,
                "scaleDownDelaySeconds": 600,
            },
        },
    }
    swarm = {
        "apiVersion": "kubeswarm.io/v1alpha1",
        "kind": "Swarm",
        "metadata": {"name": "crew"},
        "spec": {"nats": {"url": nats_url}, "subjectPrefix": prefix, "agents": [member]},
    }
    release.cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(swarm))
    with chart_operator(release, log):
        until(
            lambda: conditions_of(release.get("swarm", "crew", namespace=namespace)).get("Ready") == "True",
            READY,
            f"Swarm {namespace}/crew Ready (operator log: {log})",
        )
        publish_tasks(nats_url, f"{prefix}.tasks.crunch", 2)  # 2 tasks, 1 per replica: 2 replicas, through agents/scale
        until(
            lambda: ((release.get("agent", "cruncher", namespace=namespace) or {}).get("spec") or {}).get("replicas") == 2,
            READY,
            f"the member scaled to 2 replicas (operator log: {log})",
        )
        # Deleting it runs the finalizer (its streams removed), which the operator then takes off.
        release.cluster.kubectl("-n", namespace, "delete", "swarm", "crew", "--timeout=60s")


def test_install_test_operate_upgrade_uninstall(
    release: Release, agents_namespace: str, cluster: KubeAccess, nats_server: NatsServer, tmp_path: Path
) -> None:
    notes = release.install("install", VALUES)
    assert f"kubectl -n {release.namespace} rollout status deployment/{RELEASE}-kubeswarm-operator" in notes

    # Installed: every object of the release exists, and the pods were admitted as restricted.
    manifest = release.manifest()
    for doc in manifest:
        namespace = doc["metadata"].get("namespace", release.namespace)
        assert release.get(doc["kind"].lower(), doc["metadata"]["name"], namespace=namespace), f"{doc['kind']} {doc['metadata']['name']}"
    for crd in CRDS:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
    cluster.kubectl("-n", release.namespace, "rollout", "status", release.operator_deployment, f"--timeout={READY}s")
    statefulset = one(manifest, "StatefulSet")

    def nats_pods() -> int:
        return len((release.get("pods", "-l", "app.kubernetes.io/component=nats") or {"items": []})["items"])

    until(lambda: nats_pods() == statefulset["spec"]["replicas"], 30, "every NATS server pod admitted")
    assert len(find(manifest, "ConfigMap")) > 1  # NATS config and the dashboards
    if pods_run_here(cluster):  # the servers, on volumes the provisioner binds, are what helm test checks
        cluster.kubectl("-n", release.namespace, "rollout", "status", f"statefulset/{statefulset['metadata']['name']}", "--timeout=300s")

    # helm test: its Job runs (kwok completes it; on the real node its check reaches the operator and NATS).
    tested = release.helm("test", RELEASE, "--timeout", "90s")
    assert "Phase:          Succeeded" in tested.stdout, tested.stdout

    # The operator, as the chart's ServiceAccount, cluster-wide: an Agent, then a Swarm that autoscales its member.
    assert not release.can("list", "pods", agents_namespace) and not release.can("delete", "namespaces", agents_namespace)
    example_agent_becomes_ready(release, agents_namespace, "writer", tmp_path / "operator-cluster.log")
    # The operator filled the auth Secret the chart made empty (the NATS pods wait for it) and gave the Agent its creds.
    auth = release.get("secret", f"{RELEASE}-kubeswarm-nats-auth") or {}
    assert {"master", "auth.conf", "routes.conf"} <= set(auth.get("data") or {})
    assert "nats.creds" in ((release.get("secret", "writer-credentials", namespace=agents_namespace) or {}).get("data") or {})
    swarm_scales_and_goes(release, agents_namespace, nats_server.url, tmp_path / "operator-swarm.log")

    # A second release (docs/install.md, several releases): another name, its own namespaces, and the
    # first one's CRDs (crds.install=false); installing them again would fail on their ownership.
    second = Release(cluster, f"{release.namespace}-b", tmp_path)
    cluster.kubectl("create", "namespace", second.namespace)
    try:
        team_b = ["--set", f"operator.watchNamespaces={{{second.namespace}}}", *values_args(VALUES, tmp_path)]
        refused = second.helm("install", "ks-b", str(CHART), *team_b, check=False)
        assert refused.returncode != 0 and "agents.kubeswarm.io" in refused.stderr, refused.stderr
        second.helm("install", "ks-b", str(CHART), "--set", "crds.install=false", *team_b, "--timeout", "2m")
        cluster.kubectl("-n", second.namespace, "rollout", "status", "deployment/ks-b-kubeswarm-operator", "--timeout=60s")
        assert all(release.get("crd", crd, namespace="default") for crd in CRDS)
    finally:
        second.helm("uninstall", "ks-b", "--wait", "--timeout", "2m", check=False)
        cluster.kubectl("delete", "namespace", second.namespace, "--wait=false", check=False)

    # Upgrade to watching one namespace: the ClusterRole gives way to a Role there.
    release.install("upgrade", {**VALUES, "operator": {"watchNamespaces": [agents_namespace]}})
    upgraded = release.manifest()
    assert operator_env(upgraded)["KUBESWARM_NAMESPACES"] == agents_namespace
    assert release.get("role", f"{RELEASE}-kubeswarm-operator", namespace=agents_namespace)
    until(lambda: release.get("clusterrole", f"{RELEASE}-kubeswarm-operator") is None, 30, "the cluster-wide ClusterRole removed")
    assert not release.can("list", "secrets", release.namespace) and release.can("list", "secrets", agents_namespace)
    example_agent_becomes_ready(release, agents_namespace, "writer-2", tmp_path / "operator-namespaced.log")

    # Uninstall: nothing of the release is left but the CRDs it was asked to keep.
    release.helm("uninstall", RELEASE, "--wait", "--timeout", "2m")

    def leftovers() -> list[str]:
        found = []
        for kind in ["all", "configmaps", "secrets", "serviceaccounts", "persistentvolumeclaims", "roles", "rolebindings", "jobs"]:
            for namespace in (release.namespace, agents_namespace):
                items = (release.get(kind, "-l", f"app.kubernetes.io/instance={RELEASE}", namespace=namespace) or {}).get("items", [])
                found += [f"{item['kind']} {namespace}/{item['metadata']['name']}" for item in items]
        pvcs = (release.get("persistentvolumeclaims", namespace=release.namespace) or {}).get("items", [])
        found += [f"PersistentVolumeClaim {p['metadata']['name']}" for p in pvcs]
        for kind in ("clusterroles", "clusterrolebindings"):
            items = json.loads(cluster.kubectl("get", kind, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "json").stdout)["items"]
            found += [f"{kind} {item['metadata']['name']}" for item in items]
        return found

    try:
        until(lambda: "gone" if not leftovers() else None, 60, "every object of the release gone", interval=1)
    except AssertionError as error:
        raise AssertionError(f"left behind: {leftovers()}") from error
    for crd in CRDS:
        kept = release.get("crd", crd)
        assert kept and kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
