"""Backlog autoscaling latency: from tasks appearing in the work queue to the Agent's new replica count written.

    .venv/bin/python bench/bench_autoscaling.py [--trials 8]

Runs the operator as a user would (a process against the local test bed's
API server) with a real nats-server.  Each trial publishes a backlog, times
until the Agent's ``spec.replicas`` shows the count it calls for, then drains
the queue and waits for the scale-down (delay 0 here, so trials are quick).
Goal: under 10 s; KEDA's NATS JetStream scaler polls every 30 s by default,
so it reacts after 15 s on average, 30 s at worst (plus its HPA's sync).

``--from-zero``: scale from zero instead. The Agent has ``minReplicas: 0``, the
operator's loop ticks only every 15 s (its polling alone would take 7.5 s on average),
and each trial publishes one task to the idle Agent and times until its
``spec.replicas`` is 1 (the decision) and until its status shows the replica
Ready (kwok marks pods Ready; they run nothing, so "task done" needs the real
node), then purges the queue and waits for the Agent to be back at zero.
Goal: replica wanted within 5 s of the task's publication.

``--from-zero --real-node``: the same on the test bed's real node (KUBESWARM_REAL_NODE's node, no
kwok nodes; the images built and imported), where the replica runs the task: each trial also
times until the task is done (an echo agent), through the runtime's own task client.
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
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.config import NatsConfig
from kubeswarm_runtime.tasks import TaskState

from tests.e2e.conftest import Operator, install_crds, operator_env
from tests.testbed.cluster import Cluster
from tests.testbed.nats import NatsServer
from tests.testbed.node import NODE_IP

KEDA_DEFAULT_POLLING_SECONDS = 30.0
GOAL_SECONDS = 10.0
TARGET_PER_REPLICA = 5
FROM_ZERO_LOOP_SECONDS = 15.0


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


def wait_ready(cluster: Cluster, namespace: str, timeout: float = 60.0) -> float:
    """Seconds until the Agent's status shows a ready replica (polled every 50 ms)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        out = cluster.kubectl("-n", namespace, "get", "agent", "worker", "-o", "jsonpath={.status.readyReplicas}").stdout
        if out.strip() not in ("", "0"):
            return time.monotonic() - started
        time.sleep(0.05)
    raise TimeoutError("no replica became ready")


def from_zero_trials(cluster: Cluster, server: NatsServer, namespace: str, prefix: str, trials: int) -> int:
    wanted, ready = [], []
    for _ in range(trials):
        wait_replicas(cluster, namespace, 0)
        asyncio.run(publish(server.url, f"{prefix}.tasks.crunch", 1))
        started = time.monotonic()
        wait_replicas(cluster, namespace, 1)
        wanted.append(time.monotonic() - started)
        wait_ready(cluster, namespace)
        ready.append(time.monotonic() - started)
        asyncio.run(purge(server.url, f"{prefix.replace('.', '_')}_TASKS"))
    print(f"scale from zero, {trials} trials (operator loop every {FROM_ZERO_LOOP_SECONDS:.0f}s: the wake-up comes from NATS)")
    print(f"  task published -> replica wanted: median {statistics.median(wanted):.2f}s, max {max(wanted):.2f}s (goal < 5s)")
    print(f"  task published -> replica Ready (kwok): median {statistics.median(ready):.2f}s, max {max(ready):.2f}s")
    return 0 if max(wanted) < 5 else 1


async def real_trial(cluster: Cluster, server: NatsServer, namespace: str, prefix: str) -> tuple[float, float, float]:
    """One task to the Agent at zero on the real node: seconds to the replica wanted, Ready, and the task done."""
    client = await SwarmClient.connect(NatsConfig(url=server.url), prefix, sender="bench", give_up_after=10)
    try:
        started = time.monotonic()
        record = await client.tasks.create("crunch", "wake up")
        wanted = started + await asyncio.to_thread(wait_replicas, cluster, namespace, 1)
        ready = time.monotonic() + await asyncio.to_thread(wait_ready, cluster, namespace, 120)
        done = await client.tasks.wait(record.id, 120)
        assert done.state is TaskState.SUCCEEDED, f"the task ended {done.state}"
        return wanted - started, ready - started, time.monotonic() - started
    finally:
        await client.conn.close()


def from_zero_real_trials(cluster: Cluster, server: NatsServer, namespace: str, prefix: str, trials: int) -> int:
    phases: list[tuple[float, float, float]] = []
    for _ in range(trials):
        wait_replicas(cluster, namespace, 0, timeout=120)
        phases.append(asyncio.run(real_trial(cluster, server, namespace, prefix)))
    print(f"scale from zero on the real node, {trials} trials (operator loop every {FROM_ZERO_LOOP_SECONDS:.0f}s)")
    for i, phase in enumerate(("replica wanted", "replica Ready", "task done")):
        values = [p[i] for p in phases]
        print(f"  task published -> {phase}: median {statistics.median(values):.2f}s, max {max(values):.2f}s")
    return 0 if max(p[0] for p in phases) < 5 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--from-zero", action="store_true", help="time the wake-up of an Agent at zero replicas")
    parser.add_argument("--real-node", action="store_true", help="with --from-zero: on the real node, until the task is done")
    args = parser.parse_args()
    if args.real_node and not args.from_zero:
        parser.error("--real-node goes with --from-zero")
    with tempfile.TemporaryDirectory(prefix="bench-autoscaling-") as tmp:
        work = Path(tmp)
        if args.real_node:
            cluster = Cluster(work / "cluster", nodes=0, real_node=True).start(timeout=300)
            server = NatsServer(work / "nats", host=NODE_IP).start()
        else:
            cluster = Cluster(work / "cluster").start()
            server = NatsServer(work / "nats").start()
        env = operator_env(cluster, server)
        if args.from_zero:
            env = {**env, "KUBESWARM_AUTOSCALE_INTERVAL_SECONDS": str(FROM_ZERO_LOOP_SECONDS)}
        operator = Operator(cluster.kubeconfig, work / "operator.log", env=env)
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
                        "minReplicas": 0 if args.from_zero else 1,
                        "maxReplicas": 20,
                        "targetBacklogPerReplica": TARGET_PER_REPLICA,
                        "scaleDownDelaySeconds": 0,
                    },
                },
            }
            for manifest in (swarm, agent):
                cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))
            wait_streams(cluster, namespace)
            if args.real_node:
                return from_zero_real_trials(cluster, server, namespace, prefix, args.trials)
            if args.from_zero:
                return from_zero_trials(cluster, server, namespace, prefix, args.trials)
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
