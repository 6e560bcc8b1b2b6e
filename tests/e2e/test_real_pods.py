"""The path a user takes, on pods that run: helm install, kubectl apply, the MCP SDK through the cluster.

Everything here runs in containers on the test bed's real node (``tests/testbed/node.py``):
the chart's operator and 3-node NATS from the project's own images, the example Swarm and
Agent as runtime pods passing their real probes.  The tests run in file order and share one
release: install, the examples, MCP through port-forward and Service DNS, helm test, scale,
NATS failover and a rolling update under load, metrics, uninstall.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from mcp.client.client import Client
from prometheus_client.parser import text_string_to_metric_families

from images import build as images
from tests.integration.test_mcp_sdk import DESIGN_TOOLS
from tests.integration.test_mcp_support import data_of, sse_events
from tests.testbed.cluster import KubeAccess
from tests.testbed.node import NODE_NAME
from tests.testbed.procs import free_port, port_accepts, wheel_binary
from tests.unit.test_chart import CHART, helm
from tests.unit.test_dashboards import METRIC, dashboards, targets

from .conftest import REPO, Namespace, adopt_crds, until

pytestmark = [pytest.mark.e2e, pytest.mark.real_pods]

RELEASE = "ks"
SYSTEM = "kubeswarm-system"
NATS = f"{RELEASE}-kubeswarm-nats"
OPERATOR = f"{RELEASE}-kubeswarm-operator"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}
# Pods here pull nothing and start in seconds; the margins cover a busy 2-core machine.
START = 180
LOAD = 200


def restricted_namespace(cluster: KubeAccess, name: str) -> None:
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in RESTRICTED.items()))


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod["metadata"].get("deletionTimestamp") is None and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pods(ns: Namespace, selector: str) -> list[dict[str, Any]]:
    found = ns.must("pods", "-l", selector)["items"]
    assert isinstance(found, list)
    return found


def ready_pods(ns: Namespace, selector: str, count: int) -> list[dict[str, Any]] | None:
    """The pods, when there are exactly ``count`` and all are Ready."""
    found = pods(ns, selector)
    return found if len(found) == count and all(ready(p) for p in found) else None


def condition(body: dict[str, Any] | None, kind: str) -> str | None:
    for c in (body or {}).get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return str(c["status"])
    return None


@contextlib.contextmanager
def port_forward(cluster: KubeAccess, namespace: str, target: str, remote: int) -> Iterator[int]:
    """``kubectl port-forward`` to a pod or Service, as a user reaches an agent; yields the local port."""
    local = free_port()
    process = subprocess.Popen(
        [str(wheel_binary("kubectl")), "--kubeconfig", str(cluster.kubeconfig), "-n", namespace,
         "port-forward", "--address=127.0.0.1", target, f"{local}:{remote}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        until(lambda: process.poll() is not None or port_accepts(local), 30, f"port-forward {target}")
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        yield local
    finally:
        process.terminate()
        process.wait(10)


def raw(cluster: KubeAccess, path: str) -> str:
    """A GET through the API server (its pod proxy reaches container ports, as Prometheus would)."""
    return cluster.kubectl("get", "--raw", path).stdout


def nats_monitor(cluster: KubeAccess, pod: str, endpoint: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw(cluster, f"/api/v1/namespaces/{SYSTEM}/pods/{pod}:8222/proxy/{endpoint}"))
    return data


async def tool(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, arguments)
    assert not result.is_error, (name, result.content)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of one series' samples whose labels include ``labels``."""
    samples = (sample for family in text_string_to_metric_families(text) for sample in family.samples)
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


@dataclass
class Swarm:
    """The examples applied into one restricted namespace."""

    ns: Namespace

    @property
    def cluster(self) -> KubeAccess:
        return self.ns.cluster

    def agent_pods(self, agent: str) -> list[dict[str, Any]]:
        return pods(self.ns, f"kubeswarm.io/agent={agent}")

    def metrics(self, pod: str) -> str:
        return raw(self.cluster, f"/api/v1/namespaces/{self.ns.name}/pods/{pod}:9090/proxy/metrics")

    def succeeded(self, capability: str, agent: str) -> float:
        return sum(
            metric_sum(self.metrics(p["metadata"]["name"]), "kubeswarm_tasks_total", capability=capability, outcome="succeeded")
            for p in self.agent_pods(agent)
        )

    def wait_agents(self, *names: str) -> None:
        for name in names:
            until(
                lambda name=name: condition(self.ns.get("agent", name), "Ready") == "True"  # type: ignore[misc]
                and (self.ns.get("agent", name) or {}).get("status", {}).get("phase") == "Running",
                START, f"agent {name} Ready and Running",
            )  # fmt: skip


@pytest.fixture(scope="module")
def release(real_cluster: KubeAccess) -> Iterator[KubeAccess]:
    """The chart with its default values, in a namespace that enforces the restricted Pod Security Standard."""
    restricted_namespace(real_cluster, SYSTEM)
    adopt_crds(real_cluster, RELEASE, SYSTEM)  # applied by other modules' tests when they share the cluster
    helm(
        "install", RELEASE, str(CHART), "--namespace", SYSTEM, "--wait", "--timeout", "5m",
        kubeconfig=real_cluster.kubeconfig,
    )  # fmt: skip
    yield real_cluster
    helm("uninstall", RELEASE, "--namespace", SYSTEM, "--wait", check=False, kubeconfig=real_cluster.kubeconfig)
    real_cluster.kubectl("delete", "namespace", SYSTEM, "--wait=false", check=False)


@pytest.fixture(scope="module")
def swarm(release: KubeAccess) -> Iterator[Swarm]:
    name = f"real-{uuid.uuid4().hex[:6]}"
    restricted_namespace(release, name)
    ns = Namespace(release, name)
    for example in ("swarm.yaml", "agent.yaml"):
        ns.kubectl("apply", "-f", str(REPO / "examples" / example))
    yield Swarm(ns)
    release.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_chart_installs_nats_cluster_and_operator(release: KubeAccess) -> None:
    system = Namespace(release, SYSTEM)
    nats = until(lambda: ready_pods(system, "app.kubernetes.io/component=nats", 3), START, "3 Ready NATS pods")
    assert {p["spec"]["nodeName"] for p in nats} == {NODE_NAME}
    names = {p["metadata"]["name"] for p in nats}
    for name in names:

        def routed(name: str = name) -> bool:
            return {r.get("remote_name") for r in nats_monitor(release, name, "routez")["routes"]} >= names - {name}

        until(routed, START, f"{name} routed to its two peers")
        jetstream = nats_monitor(release, name, "jsz")
        assert jetstream["config"]["store_dir"].startswith("/data"), jetstream["config"]
    claims = system.must("pvc")["items"]
    assert len(claims) == 3 and {c["status"]["phase"] for c in claims} == {"Bound"}
    operator = until(lambda: ready_pods(system, "app.kubernetes.io/component=operator", 1), START, "the operator pod Ready")[0]
    assert operator["spec"]["serviceAccountName"] == OPERATOR
    assert operator["spec"]["containers"][0]["image"].endswith("kubeswarm/operator:" + images.app_version())


def test_examples_run_as_restricted_pods(swarm: Swarm) -> None:
    swarm.wait_agents("scout", "critic", "echo")
    until(lambda: (swarm.ns.get("swarm", "research") or {}).get("status", {}).get("phase") == "Running", START, "swarm Running")
    assert swarm.ns.must("agent", "scout")["status"]["endpoint"] == f"http://scout.{swarm.ns.name}.svc:8080/mcp"
    scouts = swarm.agent_pods("scout")
    assert len(scouts) == 2 and all(ready(p) and p["spec"]["nodeName"] == NODE_NAME for p in scouts)
    pod = scouts[0]["metadata"]["name"]
    assert swarm.ns.kubectl("exec", pod, "--", "id", "-u").stdout.strip() == "10001"
    refused = swarm.ns.kubectl("exec", pod, "--", "touch", "/written-to-root", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr


async def test_mcp_sdk_through_port_forward_reaches_pods(swarm: Swarm) -> None:
    swarm.wait_agents("scout", "critic")
    scouts = {p["metadata"]["name"] for p in swarm.agent_pods("scout")}
    critics = {p["metadata"]["name"] for p in swarm.agent_pods("critic")}
    with port_forward(swarm.cluster, swarm.ns.name, "service/scout", 8080) as port:
        url = f"http://127.0.0.1:{port}"
        async with Client(f"{url}/mcp") as client:
            assert {t.name for t in (await client.list_tools()).tools} == DESIGN_TOOLS
            task = (await tool(client, "create_task", {"capability": "summarize", "input": "real", "wait_seconds": 60}))["task"]
            assert task["state"] == "succeeded" and task["agent"] in scouts
            assert task["result"]["echo"] == "real"
            answer = await tool(client, "request_capability", {"capability": "review", "input": "draft"})
            assert answer["result"]["agent"] in critics  # another agent's pod answered
            async with aiohttp.ClientSession() as http, http.get(f"{url}/sse/discoveries", params={"replay": "0"}) as stream:
                await stream.content.readuntil(b": keep-alive\n\n")  # subscribed
                await tool(client, "share_discovery", {"discovery_type": "pattern", "content": "seen through the cluster"})
                event = await asyncio.wait_for(anext(sse_events(stream)), 30)
            assert data_of(event)["content"] == "seen through the cluster"


def test_a_pod_reaches_the_agent_by_service_dns(swarm: Swarm) -> None:
    image = swarm.agent_pods("scout")[0]["spec"]["containers"][0]["image"]
    host = f"scout.{swarm.ns.name}.svc.cluster.local"
    script = f"import urllib.request; print(urllib.request.urlopen('http://{host}:8080/readyz', timeout=10).status)"
    overrides = {
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "probe", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["python3", "-c", script],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        }
    }  # fmt: skip
    swarm.ns.kubectl("run", "dns-probe", f"--image={image}", "--restart=Never", f"--overrides={json.dumps(overrides)}")
    until(lambda: (swarm.ns.get("pod", "dns-probe") or {}).get("status", {}).get("phase") in ("Succeeded", "Failed"), START, "probe pod")
    logs = swarm.ns.kubectl("logs", "dns-probe").stdout
    assert swarm.ns.must("pod", "dns-probe")["status"]["phase"] == "Succeeded", logs
    assert logs.strip() == "200"


def test_helm_test_runs_its_job(release: KubeAccess) -> None:
    out = helm("test", RELEASE, "--namespace", SYSTEM, "--timeout", "3m", kubeconfig=release.kubeconfig).stdout
    assert re.search(r"Phase:\s+Succeeded", out), out


async def test_scaled_agent_pods_each_answer_and_a_deleted_one_returns(swarm: Swarm) -> None:
    # The standalone Agent: a Swarm's members take their replicas from the Swarm.
    swarm.ns.kubectl("scale", "agent/echo", "--replicas=3")
    echoes = until(lambda: ready_pods(swarm.ns, "kubeswarm.io/agent=echo", 3), START, "3 Ready echo pods")
    for pod in echoes:
        name = pod["metadata"]["name"]
        with port_forward(swarm.cluster, swarm.ns.name, f"pod/{name}", 8080) as port:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                assert (await tool(client, "get_agent_info", {}))["agent"]["id"] == name
    until(lambda: swarm.ns.must("agent", "echo")["status"].get("readyReplicas") == 3, START, "the Agent's status: 3 ready")
    gone = echoes[0]["metadata"]["name"]
    swarm.ns.kubectl("delete", "pod", gone, "--wait=false")

    def replaced() -> bool:
        found = ready_pods(swarm.ns, "kubeswarm.io/agent=echo", 3)
        return found is not None and gone not in {p["metadata"]["name"] for p in found}

    until(replaced, START, "a replacement echo pod Ready")
    swarm.wait_agents("echo")


async def submit_and_collect(url: str, capability: str, count: int, prefix: str, disrupt: Callable[[], Awaitable[None]]) -> None:
    """Create ``count`` tasks (retrying a refused call under the same idempotency key), run ``disrupt``
    half way, and wait until every one has succeeded."""
    async with Client(url) as client:
        ids = [f"{prefix}-{i}" for i in range(count)]

        async def create(task_id: str) -> None:
            # Until a deadline: an election on a busy machine can outlast a count of quick refusals.
            deadline = time.monotonic() + START
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    result = await client.call_tool("create_task", {"capability": capability, "input": task_id, "task_id": task_id})
                    if not result.is_error:
                        return
                await asyncio.sleep(0.1)  # a failover in progress: the same key again, not a new task
            raise AssertionError(f"task {task_id} was never accepted")

        for index, task_id in enumerate(ids):
            if index == count // 2:
                await disrupt()
            await create(task_id)
        pending = set(ids)
        for _ in range(1800):
            for task_id in sorted(pending):
                with contextlib.suppress(Exception):
                    result = await client.call_tool("get_task", {"task_id": task_id})
                    if not result.is_error and (result.structured_content or {})["task"]["state"] == "succeeded":
                        pending.discard(task_id)
            if not pending:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{len(pending)} of {count} tasks never succeeded: {sorted(pending)[:5]}")


async def test_nats_pod_deleted_while_tasks_flow_loses_none_and_runs_none_twice(swarm: Swarm) -> None:
    swarm.wait_agents("scout", "critic")
    before = swarm.succeeded("summarize", "scout")
    scouts = {p["metadata"]["name"] for p in swarm.agent_pods("scout")}
    system = Namespace(swarm.cluster, SYSTEM)

    async def delete_a_nats_pod() -> None:
        await asyncio.to_thread(system.kubectl, "delete", "pod", f"{NATS}-1", "--wait=false")

    with port_forward(swarm.cluster, swarm.ns.name, "service/critic", 8080) as port:
        await submit_and_collect(f"http://127.0.0.1:{port}/mcp", "summarize", LOAD, f"failover-{uuid.uuid4().hex[:6]}", delete_a_nats_pod)
    until(lambda: ready_pods(system, "app.kubernetes.io/component=nats", 3), START, "NATS back to 3 Ready pods")
    now = swarm.agent_pods("scout")
    assert {p["metadata"]["name"] for p in now} == scouts and not restarts(now), "no scout restarted (counters intact)"
    # A task's state is written before its counter moves: wait for the last increments, then none more.
    until(lambda: swarm.succeeded("summarize", "scout") - before >= LOAD, 30, f"{LOAD} completions counted")
    assert swarm.succeeded("summarize", "scout") - before == LOAD, "a task ran to completion twice"


def restarts(pods: list[dict[str, Any]]) -> int:
    return sum(c["restartCount"] for p in pods for c in p["status"].get("containerStatuses", []))


async def test_rolling_update_under_load_loses_nothing(swarm: Swarm) -> None:
    swarm.wait_agents("scout", "critic")
    old = {p["metadata"]["name"] for p in swarm.agent_pods("scout")}

    async def roll_the_scouts() -> None:
        patch = {"spec": {"podAnnotations": {"kubeswarm.io/e2e-roll": uuid.uuid4().hex}}}
        await asyncio.to_thread(swarm.ns.kubectl, "patch", "agent", "scout", "--type=merge", "-p", json.dumps(patch))

    with port_forward(swarm.cluster, swarm.ns.name, "service/critic", 8080) as port:
        await submit_and_collect(f"http://127.0.0.1:{port}/mcp", "summarize", LOAD // 2, f"roll-{uuid.uuid4().hex[:6]}", roll_the_scouts)
    new = until(lambda: ready_pods(swarm.ns, "kubeswarm.io/agent=scout", len(old)), START, "the rolled scouts Ready")
    assert not old & {p["metadata"]["name"] for p in new}, "every scout pod was replaced"


def test_every_pod_serves_the_metrics_the_dashboards_read(swarm: Swarm) -> None:
    read = {m for board in dashboards().values() for _, expr, _ in targets(board) for m in METRIC.findall(expr)}
    runtime_metrics = {m for m in read if not m.startswith("kubeswarm_operator")}
    for agent in ("scout", "critic", "echo"):
        for pod in swarm.agent_pods(agent):
            # A family is exported from its first scrape on (its TYPE line), before any sample of a label set.
            scrape = text_string_to_metric_families(swarm.metrics(pod["metadata"]["name"]))
            exported = {family(metrics.name) for metrics in scrape}
            missing = {m for m in runtime_metrics if family(m) not in exported}
            assert not missing, (pod["metadata"]["name"], sorted(missing))


def family(series: str) -> str:
    """A series' metric family, as the dashboards' PromQL names it: kubeswarm_tasks_total is kubeswarm_tasks."""
    return re.sub(r"_(bucket|sum|count|total|created)$", "", series)


def test_helm_uninstall_leaves_only_what_it_promises(release: KubeAccess, swarm: Swarm) -> None:
    helm("uninstall", RELEASE, "--namespace", SYSTEM, "--wait", "--timeout", "3m", kubeconfig=release.kubeconfig)
    system = Namespace(release, SYSTEM)
    until(lambda: not system.must("pods")["items"], START, "no pod left in the release namespace")
    until(lambda: not system.must("pvc")["items"], START, "the NATS volumes' claims deleted")
    leftovers = release.kubectl("get", "all,cm,secret,sa,role,rolebinding,pdb,networkpolicy", "-n", SYSTEM, "-o", "name").stdout.split()
    assert set(leftovers) <= {"configmap/kube-root-ca.crt", "serviceaccount/default"}, leftovers
    cluster_wide = release.kubectl("get", "clusterrole,clusterrolebinding", "-o", "name").stdout.split()
    assert not [name for name in cluster_wide if RELEASE + "-kubeswarm" in name], cluster_wide
    # Promised: the CRDs stay (crds.keep), and with them the Agents users applied.
    assert release.kubectl("get", "crd", "agents.kubeswarm.io", "swarms.kubeswarm.io", check=False).returncode == 0
    assert swarm.ns.get("agent", "echo") is not None
