"""A real Kubernetes control plane on loopback, with kwok's fake nodes.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real
binaries (built from their pinned Go modules by ``build.py``); kwok plays the
kubelets, so scheduled pods become Running and Ready without a container
runtime.  Everything listens on 127.0.0.1 on free ports and writes its log
under the work directory.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import build
from . import node as real
from .pki import Pki
from .procs import ManagedProcess, TestbedError, free_port, http_ok, log_tail, wheel_binary

SERVICE_CIDR = "10.96.0.0/16"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# The default client rate (20 QPS) makes the controllers, not the code under
# test, the bottleneck when a benchmark creates a thousand Deployments.
CONTROLLER_RATE_LIMITS = ("--kube-api-qps=500", "--kube-api-burst=1000")
# Fake nodes cost nothing: room for thousands of pods between two of them.
FAKE_NODE_CAPACITY = {"cpu": "1000", "memory": "4Ti", "pods": "5000"}


class KubeAccess:
    """kubectl against one kubeconfig: the local test bed or an existing cluster."""

    kubeconfig: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(wheel_binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise TestbedError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def kubectl_json(self, *args: str) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.kubectl(*args, "-o", "json").stdout)
        return data


@dataclass
class ExistingCluster(KubeAccess):
    """A cluster someone else runs (KUBESWARM_E2E_KUBECONFIG, kind)."""

    kubeconfig: Path


@dataclass
class Cluster(KubeAccess):
    """The local control plane; ``start()`` brings it up, ``stop()`` ends every process."""

    workdir: Path
    nodes: int = 2
    # A real kubelet and container runtime beside the kwok nodes (``node.py``); pods go there.
    real_node: bool = False
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    apiserver_port: int = field(default_factory=free_port)
    controller_manager_port: int = field(default_factory=free_port)
    scheduler_port: int = field(default_factory=free_port)
    kwok_port: int = field(default_factory=free_port)
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:  # type: ignore[override]
        return self.workdir / "admin.kubeconfig"

    @property
    def pki(self) -> Pki:
        if not self.real_node:
            return Pki(self.workdir / "pki")
        return Pki(
            self.workdir / "pki",
            extra_ips=(real.NODE_IP,),
            clients={"admin": ("kubeswarm-admin", "system:masters"), "node": (f"system:node:{real.NODE_NAME}", "system:nodes")},
        )

    @property
    def host(self) -> str:
        """Where the API server listens: loopback, or the real node's bridge so that pods reach it too."""
        return real.NODE_IP if self.real_node else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.apiserver_port}"

    @functools.cached_property
    def node(self) -> real.RealNode:
        """One per cluster: its ports are picked once."""
        return real.RealNode(
            self.workdir / "node",
            kubeconfig=self.workdir / "node.kubeconfig",
            admin_kubeconfig=self.kubeconfig,
            ca_cert=self.pki.ca_cert,
            service_cidr=SERVICE_CIDR,
            kubectl=self.kubectl,
        )

    def _write_kubeconfig(self, path: Path | None = None, user: str = "admin") -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeswarm-testbed", "cluster": {"server": self.server, "certificate-authority": str(self.pki.ca_cert)}}],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate": str(self.pki.directory / f"{user}.crt"),
                        "client-key": str(self.pki.directory / f"{user}.key"),
                    },
                }
            ],
            "contexts": [{"name": "kubeswarm-testbed", "context": {"cluster": "kubeswarm-testbed", "user": user}}],
            "current-context": "kubeswarm-testbed",
        }
        (path or self.kubeconfig).write_text(yaml.safe_dump(config))

    def _admin_ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def _apiserver_ready(self) -> bool:
        with urllib.request.urlopen(f"{self.server}/readyz", context=self._admin_ssl(), timeout=2) as resp:
            return bool(resp.status == 200)

    @staticmethod
    def _secure_healthz(port: int) -> bool:
        # Components serve /healthz to anonymous callers on a self-signed cert.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=context, timeout=2) as resp:
            return bool(resp.status == 200)

    def _start(self, name: str, argv: Sequence[str], ports: Sequence[int]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.workdir / "logs" / f"{name}.log", ports)
        self.processes.append(process)
        process.start()
        self._save_state()
        return process

    def _save_state(self) -> None:
        state = [{"name": p.name, "pid": p.pid} for p in self.processes if p.popen]
        (self.workdir / "pids.json").write_text(json.dumps(state))

    def start(self, timeout: float = 90) -> Cluster:
        """Start every component; on failure, stop what started and raise with the log tail."""
        try:
            self._start_components(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_components(self, timeout: float) -> None:
        binaries = build.build_all(node=self.real_node)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki.generate()
        self._write_kubeconfig()
        pki = self.pki
        if self.real_node:
            self.node.prepare_host()
            self._write_kubeconfig(self.node.kubeconfig, user="node")

        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{self.etcd_peer_port}"
        etcd = self._start(
            "etcd",
            [
                str(binaries["etcd"]),
                "--name=testbed",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=testbed={peer_url}",
                # A test cluster need not survive power loss; fsync dominates on small disks.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
            [self.etcd_port, self.etcd_peer_port],
        )
        etcd.wait_until(lambda: http_ok(f"{etcd_url}/health"), timeout)

        apiserver = self._start(
            "kube-apiserver",
            [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                *self._apiserver_node_flags(),
                "--allow-privileged=true",
                "--v=1",
            ],
            [self.apiserver_port],
        )
        apiserver.wait_until(self._apiserver_ready, timeout, "ready (/readyz)")

        kubeconfig = str(self.kubeconfig)

        def control_loop_flags(port: int) -> list[str]:
            """What the controller manager and the scheduler share: admin identity, a loopback port, no election."""
            return [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
                *CONTROLLER_RATE_LIMITS,
                "--v=1",
            ]

        controller_manager = self._start(
            "kube-controller-manager",
            [
                str(binaries["kube-controller-manager"]),
                *control_loop_flags(self.controller_manager_port),
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--use-service-account-credentials=false",
            ],
            [self.controller_manager_port],
        )
        scheduler = self._start(
            "kube-scheduler",
            [str(binaries["kube-scheduler"]), *control_loop_flags(self.scheduler_port)],
            [self.scheduler_port],
        )
        kwok = self._start(
            "kwok",
            [
                str(binaries["kwok"]),
                f"--kubeconfig={kubeconfig}",
                f"--config={build.KWOK_STAGES}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{self.kwok_port}",
            ],
            [self.kwok_port],
        )
        controller_manager.wait_until(lambda: self._secure_healthz(self.controller_manager_port), timeout)
        scheduler.wait_until(lambda: self._secure_healthz(self.scheduler_port), timeout)
        kwok.wait_until(lambda: http_ok(f"http://127.0.0.1:{self.kwok_port}/healthz"), timeout)

        for index in range(self.nodes):
            self.kubectl("apply", "-f", "-", input=json.dumps(fake_node(f"kwok-node-{index}")))
        if self.real_node:
            self.node.start(binaries, self._start, timeout)
            for index in range(self.nodes):
                # Pods go to the real node unless they tolerate this.
                self.kubectl("taint", "node", f"kwok-node-{index}", f"{real.FAKE_NODE_TAINT}=true:NoSchedule", "--overwrite")
        self._wait_nodes_ready(kwok, timeout)
        # Pods need the default ServiceAccount, which the controller manager creates.
        self._wait_for(
            kwok,
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
            timeout,
            "serviceaccount default/default",
        )

    def _apiserver_node_flags(self) -> list[str]:
        if not self.real_node:
            # The kubernetes Service would point at 127.0.0.1, which the endpoint reconciler refuses.
            return ["--endpoint-reconciler-type=none"]
        # Logs, exec and port-forward go from the API server to the kubelet with this identity.
        return [
            f"--kubelet-client-certificate={self.pki.admin_cert}",
            f"--kubelet-client-key={self.pki.admin_key}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    @staticmethod
    def _wait_for(process: ManagedProcess, condition: Callable[[], bool], timeout: float, what: str) -> None:
        process.wait_until(condition, timeout, f"done waiting for {what}")

    def _wait_nodes_ready(self, kwok: ManagedProcess, timeout: float) -> None:
        def all_ready() -> bool:
            nodes = self.kubectl_json("get", "nodes")["items"]
            assert isinstance(nodes, list)
            ready = [
                n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
            ]
            return len(ready) >= self.nodes + int(self.real_node)

        self._wait_for(kwok, all_ready, timeout, f"{self.nodes} Ready fake nodes" + (" and the real node" if self.real_node else ""))

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self.real_node:
            real.cleanup_host()
        (self.workdir / "pids.json").unlink(missing_ok=True)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ({p.log})\n{log_tail(p.log, 10)}" for p in self.processes)


def fake_node(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"allocatable": FAKE_NODE_CAPACITY, "capacity": FAKE_NODE_CAPACITY},
    }


def stop_recorded(workdir: Path) -> list[str]:
    """Stop the processes a previous ``cluster up`` recorded (``make cluster-down``)."""
    state_file = workdir / "pids.json"
    stopped = []
    for entry in reversed(json.loads(state_file.read_text()) if state_file.exists() else []):
        pid = int(entry["pid"])
        try:
            os.killpg(pid, 15)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, 9)
        stopped.append(entry["name"])
    state_file.unlink(missing_ok=True)
    if real.node_of(workdir):
        real.cleanup_host()
        stopped.append("the real node's containers, mounts, network and rules")
    return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by an init) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def remaining_pids(pids: Sequence[int]) -> list[int]:
    return [pid for pid in pids if _alive(pid)]


def env_kubeconfig() -> Path | None:
    value = os.environ.get("KUBESWARM_E2E_KUBECONFIG")
    return Path(value) if value else None


@contextlib.contextmanager
def benchmark_cluster(workdir: Path) -> Iterator[KubeAccess]:
    """A benchmark's cluster: KUBECONFIG's (or KUBESWARM_E2E_KUBECONFIG's) when set, else a test bed of its own, stopped after."""
    value = os.environ.get("KUBECONFIG") or os.environ.get("KUBESWARM_E2E_KUBECONFIG")
    if value:
        yield ExistingCluster(Path(value))
        return
    testbed = Cluster(workdir / "cluster").start()
    try:
        yield testbed
    finally:
        testbed.stop()
