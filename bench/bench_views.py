"""The memory the operator's views of N Agents' children take, without a test bed: as kept (packed) against dicts.

What a watch event brings is each child as the operator writes it (``build_children`` of the bench's Agents, as
``bench_operator`` computes them) plus what the API server adds (uid, resourceVersion, timestamps, a Deployment's
status), each parsed apart as a watch parses it, through the operator's own view functions, into the store the
operator keeps them in (:class:`PackedViews`) or into dicts with shared strings (``prune``, what it kept before).
Each way runs in processes of its own: one measures what its views hold (tracemalloc), one its RSS growth.

    .venv/bin/python bench/bench_views.py --agents 5000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from kubeswarm_operator.kube.kinds import KINDS_BY_NAME, Key, Manifest, key_of
from kubeswarm_operator.kube.watch import PackedViews, digests_view, prune, strip

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_operator import children_manifests

SHARED = ("ConfigMap", "Secret")  # kept as digests (and ours with their metadata)
MODES = ("packed", "dicts")


def as_served(child: Manifest, index: int) -> str:
    """A child as a watch event brings it: with what the API server adds, as JSON."""
    meta = {
        **child["metadata"],
        "uid": str(uuid.uuid4()),
        "resourceVersion": str(100000 + index),
        "creationTimestamp": "2026-12-04T23:22:22Z",
        "generation": 1,
    }
    served: dict[str, Any] = {**child, "metadata": meta}
    if child["kind"] == "Deployment":
        condition = {"lastTransitionTime": "2026-12-04T23:22:24Z", "lastUpdateTime": "2026-12-04T23:22:24Z", "status": "True"}
        served["status"] = {
            "availableReplicas": 1,
            "conditions": [
                {**condition, "type": "Available", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                {
                    **condition,
                    "type": "Progressing",
                    "reason": "NewReplicaSetAvailable",
                    "message": f'ReplicaSet "{meta["name"]}-66c6484947" has successfully progressed.',
                },
            ],
            "observedGeneration": 1,
            "readyReplicas": 1,
            "replicas": 1,
            "updatedReplicas": 1,
        }
    return json.dumps(served)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hold(mode: str, count: int, traced: bool) -> float:
    """One way of keeping the views, in this process: KiB per Agent held (``traced``: by tracemalloc, else RSS growth)."""
    events = [as_served(child, i) for i, child in enumerate(children_manifests(count, "bench"))]
    stores: dict[str, Any] = {kind: PackedViews() if mode == "packed" else {} for kind in KINDS_BY_NAME}
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else rss_kib() * 1024
    for text in events:
        obj = json.loads(text)
        view = digests_view(obj) if obj["kind"] in SHARED else strip(obj) if mode == "packed" else prune(obj)
        key: Key = key_of(obj)
        stores[obj["kind"]][key] = view
    after = tracemalloc.get_traced_memory()[0] if traced else rss_kib() * 1024
    return (after - before) / count / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=5000)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one way, in this process
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(hold(args.mode, args.agents, args.traced))
        return 0

    def per_agent(mode: str, *flags: str) -> float:
        argv = [sys.executable, __file__, f"--agents={args.agents}", f"--mode={mode}", *flags]
        return float(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])

    for mode in MODES:
        traced, rss = per_agent(mode, "--traced"), per_agent(mode)
        print(
            f"{mode:7}: the children's views of {args.agents} Agents hold {traced:.1f} KiB per Agent (tracemalloc); "
            f"RSS grew {rss:.1f} KiB per Agent, {rss * args.agents / 1024:.0f} MiB in all (without tracemalloc)"
        )
    print(f"reproduce: .venv/bin/python bench/bench_views.py --agents {args.agents}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
