"""How fast a hand edit of an Agent's child is put back: a Deployment's against a Service's (the baseline).

    python bench/bench_drift.py [--rounds N]

Runs against KUBECONFIG when set (or KUBESWARM_E2E_KUBECONFIG), else starts its own test bed.
The operator runs with its default 60 s resync, so what is measured is the repair a child's
watch event triggers. Each round edits the Deployment's image (then the Service's port) with
kubectl and polls until the operator has put it back; prints the median seconds of each and
their ratio (docs/operator.md says "within seconds" for both).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.conftest import OPERATOR_ENV, Operator, install_crds, until
from tests.testbed.cluster import KubeAccess, benchmark_cluster

NAMESPACE = "bench-drift"
AGENT = {"apiVersion": "kubeswarm.io/v1alpha1", "kind": "Agent", "metadata": {"name": "stubborn"}, "spec": {}}


def get(cluster: KubeAccess, kind: str, name: str) -> dict[str, object]:
    out = cluster.kubectl("-n", NAMESPACE, "get", kind, name, "-o", "json").stdout
    body: dict[str, object] = json.loads(out)
    return body


def repair_seconds(cluster: KubeAccess, edit: list[str], repaired: Callable[[], bool]) -> float:
    cluster.kubectl("-n", NAMESPACE, *edit)
    start = time.monotonic()
    until(repaired, 120, f"the operator to undo `kubectl {' '.join(edit)}`", interval=0.05)
    return time.monotonic() - start


def run(cluster: KubeAccess, rounds: int, workdir: Path) -> None:
    install_crds(cluster)
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    env = {**OPERATOR_ENV, "KUBESWARM_RESYNC_SECONDS": "60"}
    operator = Operator(cluster.kubeconfig, workdir / "operator.log", env=env).start()
    try:
        cluster.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(AGENT))
        until(lambda: cluster.kubectl("-n", NAMESPACE, "get", "deployment", "stubborn", check=False).returncode == 0, 60, "the Deployment")
        until(lambda: cluster.kubectl("-n", NAMESPACE, "get", "service", "stubborn", check=False).returncode == 0, 60, "the Service")

        def image() -> str:
            return str(get(cluster, "deployment", "stubborn")["spec"]["template"]["spec"]["containers"][0]["image"])  # type: ignore[index]

        def port() -> int:
            return int(get(cluster, "service", "stubborn")["spec"]["ports"][0]["port"])  # type: ignore[index]

        deployment, service = [], []
        for n in range(rounds):
            deployment.append(
                repair_seconds(cluster, ["set", "image", "deployment/stubborn", f"runtime=evil:{n}"], lambda: "evil" not in image())
            )
            edit = [
                "patch",
                "service",
                "stubborn",
                "--type=json",
                "-p",
                f'[{{"op": "replace", "path": "/spec/ports/0/port", "value": {n + 1}}}]',
            ]
            service.append(repair_seconds(cluster, edit, lambda: port() == 8080))
        d, s = statistics.median(deployment), statistics.median(service)
        print(f"hand-edited Deployment put back: median {d:.2f} s (max {max(deployment):.2f} s) over {rounds} rounds")
        print(f"hand-edited Service put back:    median {s:.2f} s (max {max(service):.2f} s)  [baseline]")
        print(f"ratio Deployment / Service: {d / s:.1f}")
    finally:
        operator.stop()
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp, benchmark_cluster(Path(tmp)) as cluster:
        run(cluster, args.rounds, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
