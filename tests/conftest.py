"""Session fixtures: real nats-server nodes and a real Kubernetes control plane."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed.cluster import Cluster, ExistingCluster, KubeAccess, env_kubeconfig
from tests.testbed.nats import NatsCluster, NatsServer
from tests.testbed.node import real_node_requested, unavailable_reason


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One JetStream nats-server shared by the session (tests use their own subject prefixes)."""
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A fresh 3-node JetStream cluster per test, so killing nodes cannot leak into others."""
    cluster = NatsCluster(tmp_path / "nats-cluster").start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAccess]:
    """A Kubernetes API server: the local test bed, or an existing cluster.

    KUBESWARM_E2E_KUBECONFIG=<path> runs the e2e suite against that cluster;
    KUBESWARM_E2E_KIND=1 (``make test-kind``) creates a kind cluster first;
    KUBESWARM_REAL_NODE=1 gives the local test bed a real node where every pod runs.
    """
    existing = env_kubeconfig()
    if existing:
        yield ExistingCluster(existing)
    elif os.environ.get("KUBESWARM_E2E_KIND"):
        from pytest_kind import KindCluster  # only on machines with a container engine

        kind = KindCluster("kubeswarm-e2e")
        kind.create()
        try:
            yield ExistingCluster(Path(kind.kubeconfig_path))
        finally:
            kind.delete()
    else:
        testbed = Cluster(tmp_path_factory.mktemp("cluster"), real_node=real_node_requested()).start()
        try:
            yield testbed
        finally:
            testbed.stop()


@pytest.fixture(scope="session")
def real_cluster(cluster: KubeAccess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAccess]:
    """A cluster whose pods run in containers: the session's, when it has a real node (or is someone
    else's cluster), else a second local test bed with the real node and no kwok nodes.

    Where this machine cannot run containers the tests are skipped with what it lacks, unless
    KUBESWARM_REQUIRE_REAL_NODE=1 (CI) turns that into a failure.
    """
    if not isinstance(cluster, Cluster) or cluster.real_node:
        yield cluster
        return
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    testbed = Cluster(tmp_path_factory.mktemp("real-cluster"), nodes=0, real_node=True).start(timeout=300)
    try:
        yield testbed
    finally:
        testbed.stop()
