"""From `kubectl apply` of an Agent to its first MCP answer through the cluster, phase by phase, on real pods.

    .venv/bin/python bench/bench_real_pod.py [--trials 5]

Starts the local test bed with its real node (no kwok nodes), installs the chart
(operator and 3-node NATS from the project's images), then alternates two kinds of
trial and prints the medians side by side:

- agent: apply an Agent (echo model); time until its pod is scheduled, its container
  runs, the runtime logs its NATS connection, the pod is Ready, and the first MCP
  answer (tools/list) comes back through the API server's service proxy.
- baseline: the same image as a bare Deployment and Service serving HTTP
  (``python3 -m http.server``) with the same readiness probe period: what any pod
  costs on this node, without operator, runtime or NATS.

Each phase is measured from the apply, by this process's clock (pod status polled
every 25 ms; the NATS connection from the container's own log timestamps).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from images import build as images
from tests.integration.test_mcp_support import modern_call
from tests.testbed.cluster import Cluster
from tests.unit.test_chart import CHART, helm

PHASES = ("scheduled", "started", "nats", "ready", "answer")
POLL = 0.025
NAMESPACE = "bench"


class Api:
    """Direct HTTPS to the API server with the admin certificate: cheaper to poll than kubectl."""

    def __init__(self, cluster: Cluster) -> None:
        self.server = cluster.server
        self.context = ssl.create_default_context(cafile=str(cluster.pki.ca_cert))
        self.context.load_cert_chain(str(cluster.pki.admin_cert), str(cluster.pki.admin_key))

    # Every URL is the API server's own https address plus a path.
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.server + path, context=self.context, timeout=5) as resp:  # noqa: S310
            return json.loads(resp.read())

    def answers(self, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bool:
        request = urllib.request.Request(self.server + path, data=body, headers=headers or {}, method="POST" if body else "GET")  # noqa: S310
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=5) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except OSError:
            return False


def pod_phases(pod: dict[str, Any]) -> set[str]:
    seen = set()
    if pod["spec"].get("nodeName"):
        seen.add("scheduled")
    statuses = pod.get("status", {}).get("containerStatuses", [])
    if statuses and "running" in statuses[0].get("state", {}):
        seen.add("started")
    if any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", [])):
        seen.add("ready")
    return seen


def trial(cluster: Cluster, api: Api, kind: str, name: str) -> dict[str, float]:
    """Apply one Agent or baseline workload and time each phase from the apply."""
    started = time.monotonic()
    wall = time.time()
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(manifests(kind, name)))
    times: dict[str, float] = {}
    selector = f"kubeswarm.io/agent={name}" if kind == "agent" else f"app={name}"
    proxy = f"/api/v1/namespaces/{NAMESPACE}/services/{name}:8080/proxy/"
    answer: tuple[str, bytes | None, dict[str, str]] = (proxy, None, {})
    if kind == "agent":
        body, headers = modern_call("tools/list")
        answer = (proxy + "mcp", json.dumps(body).encode(), {**headers, "Content-Type": "application/json"})
    pod_name = ""
    while "answer" not in times:
        if time.monotonic() - started > 180:
            raise TimeoutError(f"{kind} {name}: only {sorted(times)} after 180 s")
        pods = api.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={selector}")["items"]
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            for phase in pod_phases(pod) - times.keys():
                times[phase] = time.monotonic() - started
        if "ready" in times and api.answers(*answer):
            times["answer"] = time.monotonic() - started
        time.sleep(POLL)
    if kind == "agent":
        logs = cluster.kubectl("logs", "-n", NAMESPACE, pod_name, "--timestamps").stdout
        line = next(line for line in logs.splitlines() if "connected to NATS" in line)
        times["nats"] = dt.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp() - wall
    cluster.kubectl("delete", "-n", NAMESPACE, "agent" if kind == "agent" else "deployment,service", name, "--wait=false")
    return times


def manifests(kind: str, name: str) -> dict[str, Any]:
    if kind == "agent":
        return {
            "apiVersion": "kubeswarm.io/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": name},
            "spec": {"capabilities": ["echo"], "model": {"provider": "echo"}},
        }
    labels = {"app": name}
    probe = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
    container = {
        "name": "http",
        "image": "docker.io/kubeswarm/runtime:" + images.app_version(),
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "http.server", "8080"],
        "readinessProbe": probe,
    }
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name},
                "spec": {"selector": labels, "ports": [{"port": 8080}]},
            },
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-real-pod-") as tmp:
        cluster = Cluster(Path(tmp) / "cluster", nodes=0, real_node=True)
        try:
            cluster.start(timeout=300)
            install = ("install", "ks", str(CHART), "-n", "kubeswarm-system", "--create-namespace", "--wait", "--timeout", "5m")
            helm(*install, kubeconfig=cluster.kubeconfig)
            cluster.kubectl("create", "namespace", NAMESPACE)
            api = Api(cluster)
            results: dict[str, list[dict[str, float]]] = {"agent": [], "baseline": []}
            for index in range(args.trials):
                for kind in ("baseline", "agent") if index % 2 else ("agent", "baseline"):
                    results[kind].append(trial(cluster, api, kind, f"{kind[:4]}-{uuid.uuid4().hex[:6]}"))
                    phases = sorted(results[kind][-1].items(), key=lambda kv: kv[1])
                    print(f"trial {index + 1} {kind}: " + ", ".join(f"{k} {v:.2f}s" for k, v in phases), flush=True)
            report(results)
        finally:
            cluster.stop()


def report(results: dict[str, list[dict[str, float]]]) -> None:
    print(f"\nmedian seconds from `kubectl apply` ({len(results['agent'])} trials each, alternating)")
    print(f"{'phase':<12}{'agent':>10}{'baseline':>10}{'ratio':>8}")
    for phase in PHASES:
        agent = statistics.median(r[phase] for r in results["agent"])
        base = [r[phase] for r in results["baseline"] if phase in r]
        if base:
            baseline = statistics.median(base)
            print(f"{phase:<12}{agent:>10.2f}{baseline:>10.2f}{agent / baseline:>8.2f}")
        else:
            print(f"{phase:<12}{agent:>10.2f}{'-':>10}{'-':>8}")


if __name__ == "__main__":
    main()
