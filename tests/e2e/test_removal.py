"""Removal out of the documented order: the way out that docs/install.md and the chart's NOTES give works."""

from __future__ import annotations

import shlex
from pathlib import Path

from tests.e2e.conftest import Namespace, Operator, until
from tests.e2e.test_operator_swarm import swarm_manifest
from tests.testbed.nats import NatsServer

ROOT = Path(__file__).resolve().parents[2]
RELEASE_FINALIZER = """kubectl patch swarm <name> -n <namespace> --type=merge -p '{"metadata":{"finalizers":null}}'"""


def test_a_swarm_deleted_after_the_operator_is_gone_is_released_by_the_documented_patch(
    operator: Operator, namespace: Namespace, nats_server: NatsServer
) -> None:
    for doc in ("docs/install.md", "charts/kubeswarm/templates/NOTES.txt"):
        assert RELEASE_FINALIZER in (ROOT / doc).read_text(), f"{doc} no longer gives the way out this test runs"
    namespace.apply(swarm_manifest("orphan", nats_server.url, f"ks.{namespace.name}"))
    until(lambda: "kubeswarm.io/finalizer" in namespace.must("swarm", "orphan")["metadata"].get("finalizers", []), 60, "the finalizer")

    operator.stop()  # as after `helm uninstall` run before the Swarms were deleted
    namespace.kubectl("delete", "swarm", "orphan", "--wait=false")
    assert namespace.must("swarm", "orphan")["metadata"].get("deletionTimestamp"), "held by its finalizer, with nobody to remove it"

    argv = shlex.split(RELEASE_FINALIZER.replace("<name>", "orphan").replace("<namespace>", namespace.name))
    namespace.cluster.kubectl(*argv[1:])
    until(lambda: namespace.get("swarm", "orphan") is None, 30, "the Swarm gone once its finalizer is released")
