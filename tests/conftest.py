"""Session fixtures: real nats-server nodes and a real Kubernetes control plane."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed.cluster import Cluster, ExistingCluster, KubeAccess, env_kubeconfig
from tests.testbed.nats import NatsCluster, NatsServer


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
    KUBESWARM_E2E_KIND=1 (``make test-kind``) creates a kind cluster first.
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
        testbed = Cluster(tmp_path_factory.mktemp("cluster")).start()
        try:
            yield testbed
        finally:
            testbed.stop()
