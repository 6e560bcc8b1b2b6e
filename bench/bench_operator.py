"""1,000 Agents applied at once: time to all Ready, operator peak RSS, API requests per Agent, idle resync writes.

    python bench/bench_operator.py [--agents N] [--resync SECONDS]

Runs against KUBECONFIG when set (or KUBESWARM_E2E_KUBECONFIG), else starts
its own test bed (tests.testbed.cluster).  API requests are counted on the
API server (``apiserver_request_total`` from ``kubectl get --raw /metrics``,
every client: operator, controllers, scheduler, kwok) and by the operator
itself (``kubeswarm_operator_api_requests_total``: its writes; its watches
are a handful of long requests).  Goals on a 2-core machine: all Ready
within 90 s, operator RSS at most 250 MiB, zero writes in an idle resync.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes_asyncio import client, config, watch
from kubeswarm_runtime.resources import GROUP, VERSION

from tests.e2e.conftest import Operator, install_crds, until
from tests.testbed.cluster import KubeAccess, benchmark_cluster

NAMESPACE = "bench-operator"
# Small requests: the test bed's two fake nodes have 32 CPUs each, 64 default-sized (100m) pods too few for 1,000.
BENCH_SPEC = {"capabilities": ["bench"], "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}}
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "CREATE", "UPDATE", "APPLY"}
BY_RESOURCE = ("verb", "resource", "subresource")
SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def apiserver_requests(cluster: KubeAccess, by: tuple[str, ...] = ("verb",)) -> Counter[str]:
    """apiserver_request_total summed by the given labels (dry runs and watches included as the server counts them)."""
    counts: Counter[str] = Counter()
    for line in cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout.splitlines():
        match = SAMPLE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            counts[" ".join(labels.get(name, "?") for name in by)] += int(float(match["value"]))
    return counts


def operator_writes(op: Operator) -> float:
    """The operator's write requests so far (its watches and reads left out)."""
    return sum(
        value
        for series, value in op.metrics().items()
        if series.startswith("kubeswarm_operator_api_requests_total{")
        and dict(re.findall(r'(\w+)="([^"]*)"', series)).get("verb") in WRITE_VERBS
    )


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def cpu_seconds(operator_pid: int) -> dict[str, float]:
    """CPU time (user + system) so far of the operator, each control-plane process on this machine, and this bench."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv0 = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "operator" if int(proc.name) == operator_pid else Path(argv0).name
        if name == "operator" or name in CONTROL_PLANE:
            found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    times = os.times()
    found["bench (its watch, kubectl)"] = times.user + times.system + times.children_user + times.children_system
    return found


def cpu_line(after: dict[str, float], before: dict[str, float], seconds: float) -> str:
    used = {name: after[name] - before.get(name, 0.0) for name in sorted(after, key=lambda n: -(after[n] - before.get(n, 0.0)))}
    return f"CPU seconds over {seconds:.0f} s ({os.cpu_count()} CPUs): " + ", ".join(f"{n} {v:.0f}" for n, v in used.items())


def agent_ready(item: dict[str, Any]) -> bool:
    status = item.get("status") or {}
    return status.get("phase") == "Running" and (status.get("readyReplicas") or 0) >= 1


def deployment_ready(item: dict[str, Any]) -> bool:
    return ((item.get("status") or {}).get("readyReplicas") or 0) >= 1


async def watch_until_ready(
    kubeconfig: Path,
    resource: tuple[str, str, str],
    namespace: str,
    count: int,
    ready: Callable[[dict[str, Any]], bool],
    timeout: float = 900,
) -> None:
    """Return once ``count`` objects are ready, seen through one watch (a poll of 1,000 objects would load the machine)."""
    api_client = await config.new_client_from_config(config_file=str(kubeconfig))
    api = client.CustomObjectsApi(api_client)  # plain dicts for any kind, no model classes to build
    group, version, plural = resource
    done: set[str] = set()
    try:
        async with asyncio.timeout(timeout):
            while len(done) < count:
                async with watch.Watch().stream(
                    api.list_namespaced_custom_object, group, version, namespace, plural, timeout_seconds=300
                ) as events:
                    async for event in events:
                        item = event["object"]
                        name = item.get("metadata", {}).get("name")
                        if event["type"] != "DELETED" and ready(item):
                            done.add(name)
                        else:
                            done.discard(name)
                        if len(done) >= count:
                            break
    finally:
        await api_client.close()


def agent_manifests(count: int) -> list[dict[str, object]]:
    return [
        {"apiVersion": "kubeswarm.io/v1alpha1", "kind": "Agent", "metadata": {"name": f"a{i:04d}"}, "spec": BENCH_SPEC}
        for i in range(count)
    ]


async def create_agents(kubeconfig: Path, manifests: list[dict[str, object]], in_flight: int = 64) -> None:
    """Create the Agents concurrently, as a burst of users or a GitOps sync would (kubectl sends one at a time)."""
    api_client = await config.new_client_from_config(config_file=str(kubeconfig))
    api = client.CustomObjectsApi(api_client)
    slots = asyncio.Semaphore(in_flight)

    async def create(body: dict[str, object]) -> None:
        async with slots:
            await api.create_namespaced_custom_object("kubeswarm.io", "v1alpha1", NAMESPACE, "agents", body)

    try:
        await asyncio.gather(*(create(body) for body in manifests))
    finally:
        await api_client.close()


BASELINE_NAMESPACE = "bench-baseline"


async def create_and_wait(creating: Awaitable[None], readiness: Awaitable[None]) -> float:
    """Create while already watching for readiness; returns when the creating finished (monotonic clock)."""
    waiting = asyncio.ensure_future(readiness)
    try:
        await creating
        created = time.monotonic()
        await waiting
    finally:
        waiting.cancel()
    return created


def bare_objects(count: int) -> list[tuple[str, dict[str, object]]]:
    """A Deployment (one pod, as an Agent's) and a Service per name: what the control plane must do for the Agents."""
    out: list[tuple[str, dict[str, object]]] = []
    for i in range(count):
        labels = {"app": f"b{i:04d}"}
        container = {
            "name": "runtime",
            "image": "kubeswarm/runtime:bench",
            "resources": BENCH_SPEC["resources"],
            "ports": [{"name": "mcp", "containerPort": 8080}],
        }
        out.append(
            (
                "services",
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": f"b{i:04d}"},
                    "spec": {"selector": labels, "ports": [{"name": "mcp", "port": 8080, "targetPort": "mcp"}]},
                },
            )
        )
        out.append(
            (
                "deployments",
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": f"b{i:04d}"},
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": labels},
                        "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
                    },
                },
            )
        )
    return out


async def create_bare(kubeconfig: Path, objects: list[tuple[str, dict[str, object]]], in_flight: int = 64) -> None:
    api_client = await config.new_client_from_config(config_file=str(kubeconfig))
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    slots = asyncio.Semaphore(in_flight)

    async def create(kind: str, body: dict[str, object]) -> None:
        async with slots:
            if kind == "services":
                await core.create_namespaced_service(BASELINE_NAMESPACE, body)  # type: ignore[arg-type]  # sent as is
            else:
                await apps.create_namespaced_deployment(BASELINE_NAMESPACE, body)  # type: ignore[arg-type]  # sent as is

    try:
        await asyncio.gather(*(create(kind, body) for kind, body in objects))
    finally:
        await api_client.close()


def control_plane_baseline(cluster: KubeAccess, count: int) -> float:
    """Seconds until ``count`` bare Deployments + Services, created directly (no operator), all have a ready pod."""
    cluster.kubectl("create", "namespace", BASELINE_NAMESPACE)
    started = time.monotonic()
    asyncio.run(
        create_and_wait(
            create_bare(cluster.kubeconfig, bare_objects(count)),
            watch_until_ready(cluster.kubeconfig, ("apps", "v1", "deployments"), BASELINE_NAMESPACE, count, deployment_ready),
        )
    )
    return time.monotonic() - started


def last_created_after(cluster: KubeAccess, kind: str, start: str) -> float:
    """Seconds from the first Agent's creation to the newest object of ``kind`` (where the time went)."""
    data = json.loads(cluster.kubectl("get", kind, "-n", NAMESPACE, "-o", "json", timeout=120).stdout)
    stamps = [item["metadata"]["creationTimestamp"] for item in data["items"]]
    return (parse_time(max(stamps)) - parse_time(start)) if stamps else float("nan")


def parse_time(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def diff(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {verb: after[verb] - before[verb] for verb in sorted(after) if after[verb] - before[verb]}


def run(cluster: KubeAccess, count: int, resync: float, workdir: Path, baseline: bool) -> None:
    install_crds(cluster)
    for namespace in (NAMESPACE, BASELINE_NAMESPACE):
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", timeout=300)
    cluster.kubectl("create", "namespace", NAMESPACE)
    env = {"KUBESWARM_RESYNC_SECONDS": str(resync), "KUBESWARM_RUNTIME_IMAGE": "kubeswarm/runtime:bench"}
    op = Operator(cluster.kubeconfig, workdir / "operator.log", env=env).start()
    assert op.process is not None
    try:
        before = apiserver_requests(cluster, BY_RESOURCE)
        op_before = operator_writes(op)
        cpu_before = cpu_seconds(op.process.pid)
        started = time.monotonic()
        applied = (
            asyncio.run(
                create_and_wait(
                    create_agents(cluster.kubeconfig, agent_manifests(count)),
                    watch_until_ready(cluster.kubeconfig, (GROUP, VERSION, "agents"), NAMESPACE, count, agent_ready),
                )
            )
            - started
        )
        ready_after = time.monotonic() - started
        cpu_after = cpu_seconds(op.process.pid)
        first = min(
            a["metadata"]["creationTimestamp"]
            for a in json.loads(cluster.kubectl("get", "agents", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        )
        timeline = {kind: last_created_after(cluster, kind, first) for kind in ("agents", "deployments", "replicasets", "pods")}
        after = apiserver_requests(cluster, BY_RESOURCE)
        op_after = operator_writes(op)
        by_resource = diff(after, before)
        created = dict(sum((Counter({key.split()[0]: n}) for key, n in by_resource.items()), Counter()))
        total = sum(created.values())
        print(f"agents: {count}")
        print(f"creating all Agents (64 requests in flight): {applied:.1f} s")
        print(f"all Ready after: {ready_after:.1f} s   (goal: <= 90 s)")
        print("last one created, seconds after the first Agent: " + ", ".join(f"{k} {v:.0f}" for k, v in timeline.items()))
        print(f"API requests, all clients: {total} = {total / count:.1f} per Agent; by verb: {created}")
        print(
            "API requests per Agent by verb and resource, all clients: "
            + ", ".join(f"{key} {n / count:.2f}" for key, n in sorted(by_resource.items(), key=lambda item: -item[1]) if n >= count / 10)
        )
        print(cpu_line(cpu_after, cpu_before, ready_after))
        print(f"API writes by the operator: {op_after - op_before:.0f} = {(op_after - op_before) / count:.1f} per Agent")

        # Idle: wait until one full resync of every Agent has happened, counting writes meanwhile.
        unchanged = 'kubeswarm_operator_reconciles_total{kind="Agent",outcome="unchanged"}'
        time.sleep(min(resync, 10))  # let the last status writes of the rollout land before the baseline
        idle_before, idle_op = apiserver_requests(cluster), operator_writes(op)
        start_count = op.metrics().get(unchanged, 0)
        until(lambda: op.metrics().get(unchanged, 0) >= start_count + count, resync * 4 + 60, "a full idle resync", interval=1)
        idle_after, idle_op_after = apiserver_requests(cluster), operator_writes(op)
        server_writes = {v: n for v, n in diff(idle_after, idle_before).items() if v in WRITE_VERBS}
        print(
            f"idle resync of {count} Agents: operator writes {idle_op_after - idle_op:.0f} (goal: 0); "
            f"API server writes meanwhile (all clients: leases, kwok, events): {server_writes}"
        )
        print(f"operator peak RSS: {peak_rss_mib(op.process.pid):.0f} MiB   (goal: <= 250 MiB)")
        op.stop()
        if baseline:
            # The same test bed, the Agents' objects still there: the control plane alone, for comparison.
            cpu_before = cpu_seconds(op.process.pid)
            bare = control_plane_baseline(cluster, count)
            print(cpu_line(cpu_seconds(op.process.pid), cpu_before, bare) + " (baseline)")
            print(
                f"control-plane baseline: {count} bare Deployments + Services created directly (64 in flight), "
                f"all with a ready pod after {bare:.1f} s   vs {count} Agents through the operator: {ready_after:.1f} s"
            )
    finally:
        op.stop()
        for namespace in (NAMESPACE, BASELINE_NAMESPACE):
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--resync", type=float, default=30.0, help="operator resync period for the idle check")
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the control-plane baseline (bare Deployments + Services without the operator)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    with benchmark_cluster(workdir) as cluster:
        run(cluster, args.agents, args.resync, workdir, args.baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
