"""Backlog autoscaling latency: from tasks appearing in the work queue to the Agent's new replica count written.

    .venv/bin/python bench/bench_autoscaling.py [--trials 8]

Runs the operator as a user would (a process against the local test bed's
API server) with a real nats-server.  Each trial publishes a backlog, times
until the Agent's ``spec.replicas`` shows the count it calls for, then drains
the queue and waits for the scale-down (delay 0 here, so trials are quick).
Goal: under 10 s; KEDA's NATS JetStream scaler polls every 30 s by default,
so it reacts after 15 s on average, 30 s at worst (plus its HPA's sync).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats

from tests.e2e.conftest import OPERATOR_ENV, Operator, install_crds
from tests.testbed.cluster import Cluster
from tests.testbed.nats import NatsServer

KEDA_DEFAULT_POLLING_SECONDS = 30.0
GOAL_SECONDS = 10.0
TARGET_PER_REPLICA = 5


async def publish(url: str, subject: str, count: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for i in range(count):
        await js.publish(subject, f"task {i}".encode())
    await nc.close()


async def purge(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().purge_stream(stream)
    await nc.close()


def wait_replicas(cluster: Cluster, namespace: str, wanted: int, timeout: float = 60.0) -> float:
    """Seconds until the Agent's spec.replicas is ``wanted`` (polled every 50 ms)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        out = cluster.kubectl("-n", namespace, "get", "agent", "worker", "-o", "jsonpath={.spec.replicas}").stdout
        if out.strip() == str(wanted):
            return time.monotonic() - started
        time.sleep(0.05)
    raise TimeoutError(f"replicas never reached {wanted}")


def wait_streams(cluster: Cluster, namespace: str, timeout: float = 60.0) -> None:
    """Until the Swarm reports its streams (the work queue exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.kubectl("-n", namespace, "get", "swarm", "bench", "-o", "jsonpath={.status.streams}").stdout.strip():
            return
        time.sleep(0.2)
    raise TimeoutError("the swarm's streams never appeared")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-autoscaling-") as tmp:
        work = Path(tmp)
        cluster = Cluster(work / "cluster").start()
        server = NatsServer(work / "nats").start()
        operator = Operator(cluster.kubeconfig, work / "operator.log", env=OPERATOR_ENV)
        try:
            install_crds(cluster)
            operator.start()
            namespace = f"bench-{uuid.uuid4().hex[:6]}"
            prefix = f"ks.{namespace}.{uuid.uuid4().hex[:6]}"
            cluster.kubectl("create", "namespace", namespace)
            swarm = {
                "apiVersion": "kubeswarm.io/v1alpha1",
                "kind": "Swarm",
                "metadata": {"name": "bench"},
                "spec": {"nats": {"url": server.url}, "subjectPrefix": prefix},
            }
            agent = {
                "apiVersion": "kubeswarm.io/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": "worker"},
                "spec": {
                    "swarm": "bench",
                    "capabilities": ["crunch"],
                    "autoscaling": {
                        "enabled": True,
                        "minReplicas": 1,
                        "maxReplicas": 20,
                        "targetBacklogPerReplica": TARGET_PER_REPLICA,
                        "scaleDownDelaySeconds": 0,
                    },
                },
            }
            for manifest in (swarm, agent):
                cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))
            wait_streams(cluster, namespace)
            wait_replicas(cluster, namespace, 1)
            latencies = []
            for trial in range(args.trials):
                replicas = 2 + trial % 5
                asyncio.run(publish(server.url, f"{prefix}.tasks.crunch", replicas * TARGET_PER_REPLICA))
                latencies.append(wait_replicas(cluster, namespace, replicas))
                asyncio.run(purge(server.url, f"{prefix.replace('.', '_')}_TASKS"))
                wait_replicas(cluster, namespace, 1)
        finally:
            operator.stop()
            server.stop()
            cluster.stop()
    median, worst = statistics.median(latencies), max(latencies)
    keda_mean = KEDA_DEFAULT_POLLING_SECONDS / 2
    print(f"backlog -> replicas written, {len(latencies)} trials: median {median:.2f}s, max {worst:.2f}s (goal < {GOAL_SECONDS:.0f}s)")
    print(f"KEDA default polling ({KEDA_DEFAULT_POLLING_SECONDS:.0f}s): mean {keda_mean:.0f}s, worst {KEDA_DEFAULT_POLLING_SECONDS:.0f}s")
    print(f"ratio (KEDA mean / ours median): {keda_mean / median:.1f}x")
    return 0 if worst < GOAL_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
