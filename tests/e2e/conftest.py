"""e2e helpers: the CRDs installed, the operator running as a subprocess, a namespace per test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from images import build as images
from tests.testbed.cluster import Cluster, KubeAccess
from tests.testbed.nats import NatsServer
from tests.testbed.node import FAKE_NODE_TAINT, NODE_IP
from tests.testbed.procs import ManagedProcess, free_port, port_accepts

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def until(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


CRDS = ("agents.kubeswarm.io", "swarms.kubeswarm.io")


def install_crds(cluster: KubeAccess) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{crd}" for crd in CRDS))
    # Discovery and storage lag behind Established: wait until both kinds can be listed
    # (an operator started earlier may get "storage is (re)initializing" on its first list).
    until(lambda: cluster.kubectl("get", "agents,swarms", "-A", check=False).returncode == 0, 30, "the kinds in discovery")


def adopt_crds(cluster: KubeAccess, release: str, namespace: str) -> None:
    """CRDs applied earlier with kubectl (by other e2e tests) become a helm release's, as a user would adopt them."""
    for crd in CRDS:
        if cluster.kubectl("get", "crd", crd, check=False).returncode == 0:
            cluster.kubectl("label", "--overwrite", "crd", crd, "app.kubernetes.io/managed-by=Helm")
            cluster.kubectl(
                "annotate", "--overwrite", "crd", crd, f"meta.helm.sh/release-name={release}", f"meta.helm.sh/release-namespace={namespace}"
            )


@dataclass
class Operator:
    """``python -m kubeswarm_operator`` against the test cluster, as a user would run it."""

    kubeconfig: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        argv = [sys.executable, "-m", "kubeswarm_operator", f"--metrics-port={self.metrics_port}", f"--health-port={self.health_port}"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        until(self.healthy, 60, f"operator /healthz (log: {self.log})")
        return self

    def healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited with {self.process.returncode}; log:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def metrics(self) -> dict[str, float]:
        """The operator's own Prometheus samples, by full series name."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                samples[series] = float(value)
        return samples


OPERATOR_ENV = {
    "KUBESWARM_NATS_URL": "nats://nats.kubeswarm-system.svc:4222",
    "KUBESWARM_RUNTIME_IMAGE": "kubeswarm/runtime:e2e",
    "KUBESWARM_RESYNC_SECONDS": "10",
    # Swarm status and route acceptance are re-read on this period: short, so tests see them change.
    "KUBESWARM_SWARM_RESYNC_SECONDS": "3",
    # A Swarm whose NATS is gone is deleted after this long (300 s by default), leaving its streams.
    "KUBESWARM_SWARM_DELETE_TIMEOUT_SECONDS": "15",
}

# Pods of tests that assert what kwok's pods do (run nothing, so consume no task): on the fake nodes,
# tolerating the taint they carry when the real node takes the pods. Every node is a fake one otherwise.
ON_FAKE_NODES: dict[str, Any] = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": FAKE_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
}


def pods_run_here(cluster: KubeAccess) -> bool:
    """The local test bed with its real node (KUBESWARM_REAL_NODE=1): pods run in containers on this machine."""
    return isinstance(cluster, Cluster) and cluster.real_node


@pytest.fixture(scope="session")
def nats_server(cluster: KubeAccess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """The session's JetStream nats-server; on the real node's bridge address when pods run here, so they
    reach it (this machine does too)."""
    server = NatsServer(tmp_path_factory.mktemp("nats"), host=NODE_IP if pods_run_here(cluster) else "127.0.0.1").start()
    yield server
    server.stop()


def operator_env(cluster: KubeAccess, nats: NatsServer) -> dict[str, str]:
    """The e2e operator's settings. Where pods run here, agents run the image the test bed imported and
    reach the session's nats-server; on kwok the image and the default NATS are names nothing needs."""
    if not pods_run_here(cluster):
        return OPERATOR_ENV
    return {**OPERATOR_ENV, "KUBESWARM_RUNTIME_IMAGE": images.chart_refs()["runtime"], "KUBESWARM_NATS_URL": nats.url}


@dataclass(frozen=True)
class MotoServer:
    """moto in server mode: AWS Secrets Manager on loopback."""

    url: str

    @property
    def client_env(self) -> dict[str, str]:
        """What a boto3 client (the operator's, a test's) needs: dummy credentials; the endpoint is passed explicitly."""
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}

    @property
    def operator_env(self) -> dict[str, str]:
        # Rotation is picked up within seconds in tests (300 s by default).
        return {**self.client_env, "KUBESWARM_AWS_ENDPOINT_URL": self.url, "KUBESWARM_AWS_REFRESH_SECONDS": "3"}


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    port = free_port()
    process = ManagedProcess(
        "moto",
        [sysconfig.get_path("scripts") + "/moto_server", "-H", "127.0.0.1", "-p", str(port)],
        tmp_path_factory.mktemp("moto") / "moto.log",
        [port],
    )
    process.start()
    process.wait_until(lambda: port_accepts(port), 60, "accepting connections")
    yield MotoServer(f"http://127.0.0.1:{port}")
    process.stop()


@pytest.fixture(scope="module")
def operator(
    cluster: KubeAccess, moto_server: MotoServer, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """The operator, cluster-wide, for the tests of one module.

    Per module, not per session: a module that runs an operator of its own (test_chart's,
    under the chart's identity) then never shares the cluster with this one, whatever the
    order the modules run in.
    """
    install_crds(cluster)
    env = {**operator_env(cluster, nats_server), **moto_server.operator_env}
    op = Operator(cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log", env=env).start()
    yield op
    op.stop()


@dataclass
class Namespace:
    """kubectl bound to one test namespace."""

    cluster: KubeAccess
    name: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.name, *args, input=input, check=check)

    def get(self, *args: str) -> dict[str, Any] | None:
        proc = self.kubectl("get", *args, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def must(self, *args: str) -> dict[str, Any]:
        obj = self.get(*args)
        assert obj is not None, f"{' '.join(args)} not found in {self.name}"
        return obj

    def apply(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _fresh_namespace(cluster: KubeAccess) -> Iterator[Namespace]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield Namespace(cluster, name)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(cluster: KubeAccess) -> Iterator[Namespace]:
    yield from _fresh_namespace(cluster)


@pytest.fixture
def other_namespace(cluster: KubeAccess) -> Iterator[Namespace]:
    """A second test namespace, for what must stay apart from the first."""
    yield from _fresh_namespace(cluster)
