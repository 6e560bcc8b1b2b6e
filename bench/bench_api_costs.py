"""What the API server spends on each kind of request an Agent brings, side by side on one test bed.

    .venv/bin/python bench/bench_api_costs.py [--objects 500] [--rounds 3]

The API server's own CPU time (its process, read from /proc) per request, for batches of ``--objects``
requests (64 in flight, as ``bench_operator`` sends them), the kinds alternating in each round so that
drifts of a shared machine hit all alike; medians of the rounds:

- an Agent's child (its runtime ConfigMap, its NetworkPolicy: kinds no controller acts on) created by
  POST, and created by server-side apply (what the operator did before it created by POST);
- an Agent created (the bench's spec) and its status written by a JSON merge patch (the operator's one
  status write), against the same CRDs with their CEL rules removed (what the rules cost).

Printed: milliseconds of API-server CPU per request, and the ratios apply / POST and with / without CEL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes_asyncio import config
from kubeswarm_operator.kube.client import collection_path, kind_path
from kubeswarm_operator.kube.kinds import AGENT, KINDS_BY_NAME, Manifest

from bench.bench_operator import IN_FLIGHT, agent_manifests, children_manifests
from tests.e2e.conftest import REPO, install_crds
from tests.testbed.cluster import Cluster, KubeAccess, benchmark_cluster

MANAGER = "bench-api-costs"
STATUS = {
    "phase": "Pending",
    "replicas": 0,
    "readyReplicas": 0,
    "ready": "0/1",
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "ReplicasNotReady",
            "message": "0 of 1 pods ready",
            "lastTransitionTime": "2026-12-05T00:00:00Z",
        }
    ],
}


def apiserver_cpu_seconds(port: str) -> float:
    """CPU time (user + system) of the kube-apiserver serving ``port``."""
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if Path(argv[0].decode()).name == "kube-apiserver" and f"--secure-port={port}".encode() in argv:
            return (int(fields[11]) + int(fields[12])) / tick
    raise SystemExit(f"no kube-apiserver on port {port}")


async def send_all(kubeconfig: Path, requests: list[tuple[str, str, Any, str]]) -> None:
    """(method, path, body, content type) each, ``IN_FLIGHT`` at a time; answers read, not parsed."""
    api = await config.new_client_from_config(config_file=str(kubeconfig))
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def send(method: str, path: str, body: Any, content_type: str) -> None:
        query = [("fieldManager", MANAGER)] + ([("force", "true")] if content_type == "application/apply-patch+yaml" else [])
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with slots:
            await api.call_api(
                path, method, query_params=query, header_params=headers, body=body, auth_settings=["BearerToken"], _preload_content=False
            )

    try:
        await asyncio.gather(*(send(*request) for request in requests))
    finally:
        await api.close()


def posts(manifests: list[Manifest], namespace: str) -> list[tuple[str, str, Any, str]]:
    return [("POST", collection_path(KINDS_BY_NAME[m["kind"]], namespace), m, "application/json") for m in manifests]


def applies(manifests: list[Manifest], namespace: str) -> list[tuple[str, str, Any, str]]:
    return [
        ("PATCH", kind_path(KINDS_BY_NAME[m["kind"]], namespace, m["metadata"]["name"]), m, "application/apply-patch+yaml")
        for m in manifests
    ]


def status_patches(count: int, namespace: str) -> list[tuple[str, str, Any, str]]:
    return [
        ("PATCH", kind_path(AGENT, namespace, m["metadata"]["name"]) + "/status", {"status": STATUS}, "application/merge-patch+json")
        for m in agent_manifests(count, namespace)
    ]


def without_cel(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: without_cel(value) for key, value in node.items() if key != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [without_cel(value) for value in node]
    return node


class Rounds:
    """Requests sent in fresh namespaces, each batch's API-server CPU per request recorded under its name."""

    def __init__(self, cluster: KubeAccess, objects: int) -> None:
        if not isinstance(cluster, Cluster):
            raise SystemExit("reads the API server's CPU from /proc: run it on its own test bed (KUBECONFIG unset)")
        self.cluster = cluster
        self.objects = objects
        self.port = cluster.server.rstrip("/").rsplit(":", 1)[1]
        self.ms: dict[str, list[float]] = {}
        self.namespaces = 0

    def namespace(self) -> str:
        self.namespaces += 1
        name = f"costs-{self.namespaces}"
        self.cluster.kubectl("create", "namespace", name)
        return name

    def measure(self, name: str, requests: list[tuple[str, str, Any, str]]) -> None:
        cpu = apiserver_cpu_seconds(self.port)
        asyncio.run(send_all(self.cluster.kubeconfig, requests))
        self.ms.setdefault(name, []).append((apiserver_cpu_seconds(self.port) - cpu) / len(requests) * 1000)

    def children(self, kind: str) -> None:
        count = self.objects
        for how, build in (("POST", posts), ("apply", applies)):
            namespace = self.namespace()
            wanted = [m for m in children_manifests(count, namespace) if m["kind"] == kind]
            self.measure(f"{kind} by {how}", build(wanted, namespace))

    def agents(self, label: str) -> None:
        namespace = self.namespace()
        self.measure(f"Agent created{label}", posts(agent_manifests(self.objects, namespace), namespace))
        self.measure(f"Agent status patched{label}", status_patches(self.objects, namespace))


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=500, help="requests per batch (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each sending every kind of batch (default 3)")
    args = parser.parse_args()
    plain: dict[str, list[float]] = {}
    for label, crds in (("", None), (" (no CEL rules)", "strip")):
        with tempfile.TemporaryDirectory() as workdir, benchmark_cluster(Path(workdir)) as cluster:
            if crds is None:
                install_crds(cluster)
            else:
                stripped = Path(workdir) / "crds"
                stripped.mkdir()
                for path in sorted((REPO / "crds").glob("*.yaml")):
                    docs = [without_cel(doc) for doc in yaml.safe_load_all(path.read_text())]
                    (stripped / path.name).write_text(yaml.safe_dump_all(docs))
                cluster.kubectl("apply", "--server-side", "-f", str(stripped))
                cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/agents.kubeswarm.io")
            rounds = Rounds(cluster, args.objects)
            for _ in range(args.rounds):
                if crds is None:
                    rounds.children("ConfigMap")
                    rounds.children("NetworkPolicy")
                rounds.agents(label)
            plain.update(rounds.ms)
    print(f"API-server CPU per request, ms (median of {args.rounds} rounds of {args.objects}; each round's figures after it):")
    for name, values in plain.items():
        print(f"  {name:40s} {median(values):6.2f}   ({', '.join(f'{v:.2f}' for v in values)})")
    for kind in ("ConfigMap", "NetworkPolicy"):
        print(f"{kind}: created by apply / by POST: {median(plain[f'{kind} by apply']) / median(plain[f'{kind} by POST']):.2f}")
    for what in ("created", "status patched"):
        ratio = median(plain[f"Agent {what}"]) / median(plain[f"Agent {what} (no CEL rules)"])
        print(f"Agent {what}: with the CRDs' CEL rules / without: {ratio:.2f}")
    print(f"reproduce: .venv/bin/python bench/bench_api_costs.py --objects {args.objects} --rounds {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
