"""A real node beside kwok's fake ones: pods that run in containers.

This machine is the node. containerd (with runc) runs the pods, the
CNI bridge plugin gives each a network namespace on the bridge ``ks-cni0``,
kube-proxy (iptables) makes ClusterIP Services work, CoreDNS answers
``<svc>.<ns>.svc.cluster.local`` on the bridge's address, and
local-path-provisioner binds PVCs of the default StorageClass to directories
here.  kubelet, kube-proxy, containerd, the CNI plugins, CoreDNS and the
provisioner are built from their pinned Go modules (``build.py``), runc against
Debian's libseccomp; iptables and conntrack come from Debian's packages.  The project's images
(``images.build``) are imported into containerd, so pods need no registry.

Everything the node puts on the host is undone by ``cleanup_host``: processes,
containers, mounts, network namespaces and interfaces, iptables rules, cgroups
and the sysctls it changed.  It reads what to undo from ``RUN_DIR`` alone, so
``make cluster-down`` cleans up after a test bed that died.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from images import build as images

from . import build
from .procs import ManagedProcess, TestbedError, free_port, http_ok

NODE_NAME = "kubeswarm-node"
BRIDGE = "ks-cni0"
NODE_IP = "10.244.0.1"
# Not 10.88.0.0/16: podman and buildah put their own bridge there.
POD_CIDR = "10.244.0.0/16"
CLUSTER_DNS = NODE_IP
CLUSTER_DOMAIN = "cluster.local"
# Label every real node carries; tests that need running containers select it.
REAL_NODE_LABEL = "kubeswarm.io/real-node"
# Taint put on the kwok nodes when the real node takes the pods (KUBESWARM_REAL_NODE=1).
FAKE_NODE_TAINT = "kubeswarm.io/fake-node"
STORAGE_CLASS = "local-path"
PROVISIONER_NAMESPACE = "local-path-storage"
# Fixed, short paths: one real node per machine, and unix sockets allow only 108 bytes.
RUN_DIR = Path("/run/kubeswarm-node")
STATE_FILE = RUN_DIR / "host-state.json"
VOLUMES_DIR = RUN_DIR / "volumes"
# Our own filter chain: pods reach each other, the node and Services, never past the node.
FILTER_CHAIN = "KUBESWARM-NODE"
# Routes below the bridge's own (higher metric): while the bridge is up its routes win; should it vanish
# under a running test bed, the pod and Service ranges are unreachable instead of routed off the machine.
GUARD_METRIC = "4242"
# Sysctls that the node needs (ip_forward) or that the kubelet sets (kernel tunables).
SYSCTLS = ("net/ipv4/ip_forward", "kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom")
DEBIAN_PACKAGES = {"iptables": "iptables", "conntrack": "conntrack", "ip": "iproute2"}
CONTAINERD_NAMESPACE = "k8s.io"
# Where the node's containerd pulls from: nothing listens on port 1.
NO_REGISTRY = "http://127.0.0.1:1"


def real_node_requested() -> bool:
    """``KUBESWARM_REAL_NODE=1``: the test bed's pods run on a real node."""
    return os.environ.get("KUBESWARM_REAL_NODE", "") not in ("", "0")


def missing_requirements() -> list[str]:
    """What this machine lacks to run containers, each said so a user can act on it."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the kubelet and containerd manage mounts, cgroups and network namespaces)")
    filesystems = Path("/proc/filesystems").read_text()
    if "overlay" not in filesystems:
        missing.append("the overlay filesystem (containerd's snapshotter): `modprobe overlay`")
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        missing.append("cgroups mounted at /sys/fs/cgroup (v1 with the memory controller, or v2)")
    if not Path("/proc/sys/net/bridge").is_dir():
        missing.append("bridge netfilter (`modprobe br_netfilter`), for Services between pods on one bridge")
    if shutil.which("apt-get") is None:
        missing += [f"`{tool}` (Debian package {pkg})" for tool, pkg in DEBIAN_PACKAGES.items() if shutil.which(tool) is None]
    return missing


def unavailable_reason() -> str | None:
    """Why real-pod tests must be skipped here, or None; KUBESWARM_REQUIRE_REAL_NODE=1 (CI) makes it an error."""
    problems = missing_requirements()
    if not problems:
        return None
    message = "no real node on this machine; it lacks: " + "; ".join(problems)
    if os.environ.get("KUBESWARM_REQUIRE_REAL_NODE"):
        raise TestbedError(message + " (KUBESWARM_REQUIRE_REAL_NODE is set, so this is an error, not a skip)")
    return message


def ensure_debian_packages() -> None:
    """iptables, conntrack and iproute2 from Debian's packages, installed once."""
    wanted = sorted({pkg for tool, pkg in DEBIAN_PACKAGES.items() if shutil.which(tool) is None})
    if wanted:
        images.install_packages(wanted, build.LOGS / "node-packages.log", "the real node runs kube-proxy's iptables rules")


def run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=120)
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


@dataclass
class RealNode:
    """The node's processes and files; ``Cluster`` starts it when asked for a real node."""

    workdir: Path
    kubeconfig: Path  # the node's own identity (system:node:<name>)
    admin_kubeconfig: Path
    ca_cert: Path
    service_cidr: str
    kubectl: Callable[..., subprocess.CompletedProcess[str]]  # the cluster's, as admin
    kubelet_port: int = field(default_factory=free_port)
    kubelet_healthz_port: int = field(default_factory=free_port)
    proxy_healthz_port: int = field(default_factory=free_port)
    proxy_metrics_port: int = field(default_factory=free_port)
    dns_ready_port: int = field(default_factory=free_port)

    @property
    def containerd_socket(self) -> Path:
        return RUN_DIR / "containerd.sock"

    @staticmethod
    def containerd_root() -> Path:
        # Cached across runs: imported images stay, so a warm start imports nothing.
        return build.CACHE / "node" / "containerd"

    def prepare_host(self) -> None:
        """Before the control plane: the bridge (the API server listens on its address), sysctls, rules."""
        problems = missing_requirements()
        if problems:
            raise TestbedError("this machine cannot run the real node; it lacks: " + "; ".join(problems))
        ensure_debian_packages()
        cleanup_host()  # whatever a test bed that died left behind
        taken = run("ip", "-o", "route", "show", "match", NODE_IP).stdout.strip().splitlines()
        if any(not line.startswith("default") for line in taken):
            raise TestbedError(f"the real node's pod network {POD_CIDR} is already routed on this machine: {taken}")
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        guarded = [POD_CIDR, self.service_cidr]
        state = {
            "sysctls": {name: sysctl_path(name).read_text().strip() for name in SYSCTLS},
            "netns": sorted(p.name for p in Path("/run/netns").glob("*")) if Path("/run/netns").is_dir() else [],
            "workdir": str(self.workdir.resolve()),
            "guarded": guarded,
        }
        STATE_FILE.write_text(json.dumps(state))
        for cidr in guarded:
            run("ip", "route", "add", "unreachable", cidr, "metric", GUARD_METRIC)
        sysctl_path("net/ipv4/ip_forward").write_text("1\n")
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{NODE_IP}/16", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        # Service addresses stay on this machine: a ClusterIP that kube-proxy has not (yet)
        # translated goes to the bridge and dies there, never out of the default route.
        run("ip", "route", "add", self.service_cidr, "dev", BRIDGE)
        run("iptables", "-w", "-N", FILTER_CHAIN)
        run("iptables", "-w", "-A", FILTER_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
        run("iptables", "-w", "-I", "FORWARD", "1", "-j", FILTER_CHAIN)

    def start(
        self, binaries: dict[str, Path], launch: Callable[[str, Sequence[str], Sequence[int]], ManagedProcess], timeout: float
    ) -> None:
        """Start containerd, the images, kubelet, kube-proxy, CoreDNS and the provisioner."""
        archives = images.build_all()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._containerd_config(binaries, image_ref(archives, "pause"))
        containerd = launch("containerd", [str(binaries["containerd"]), "--config", str(config)], [])
        ctr = [str(binaries["ctr"]), "--address", str(self.containerd_socket), "--namespace", CONTAINERD_NAMESPACE]
        containerd.wait_until(lambda: run(*ctr, "version", check=False).returncode == 0, timeout, "serving its socket")
        self._import_images(ctr, archives)

        kubelet = launch(
            "kubelet",
            [
                str(binaries["kubelet"]),
                f"--config={self._kubelet_config()}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={self.workdir / 'kubelet'}",
                # Its self-signed serving certificate; the default is under /var/lib/kubelet.
                f"--cert-dir={self.workdir / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--node-labels={REAL_NODE_LABEL}=true",
                "--v=1",
            ],
            [self.kubelet_healthz_port],
        )
        proxy = launch(
            "kube-proxy",
            [
                str(binaries["kube-proxy"]),
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={POD_CIDR}",
                # Without it a pod that reaches itself or a neighbour through a Service on the
                # same bridge gets an answer from an address it did not call.
                "--masquerade-all",
                f"--healthz-bind-address=127.0.0.1:{self.proxy_healthz_port}",
                f"--metrics-bind-address=127.0.0.1:{self.proxy_metrics_port}",
                # Leave the host's conntrack table size and localhost routing as they are.
                "--conntrack-max-per-core=0",
                "--oom-score-adj=0",
                "--iptables-localhost-nodeports=false",
                "--v=1",
            ],
            [self.proxy_healthz_port, self.proxy_metrics_port],
        )
        coredns = launch("coredns", [str(binaries["coredns"]), "-conf", str(self._corefile())], [self.dns_ready_port])
        helper = image_ref(archives, "runtime")
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(provisioner_objects(helper)))
        provisioner = launch(
            "local-path-provisioner",
            [
                str(binaries["local-path-provisioner"]),
                "start",
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--namespace={PROVISIONER_NAMESPACE}",
                f"--provisioner-name=rancher.io/{STORAGE_CLASS}",
                "--configmap-name=local-path-config",
                f"--service-account-name={STORAGE_CLASS}-provisioner",
                f"--helper-image={helper}",
            ],
            [],
        )
        kubelet.wait_until(lambda: http_ok(f"http://127.0.0.1:{self.kubelet_healthz_port}/healthz"), timeout)
        proxy.wait_until(lambda: http_ok(f"http://127.0.0.1:{self.proxy_healthz_port}/healthz"), timeout)
        coredns.wait_until(lambda: http_ok(f"http://127.0.0.1:{self.dns_ready_port}/ready"), timeout)
        kubelet.wait_until(self._node_ready, timeout, f"node {NODE_NAME} Ready")
        assert provisioner.running()

    def _containerd_config(self, binaries: dict[str, Path], pause: str) -> Path:
        cni = self.workdir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-kubeswarm.conflist").write_text(json.dumps(cni_config(), indent=2))
        # Every registry resolves to a closed loopback port: an image the node lacks fails to pull at once
        # (ErrImagePull), and no pull ever leaves this machine.
        registries = self.workdir / "registries"
        (registries / "_default").mkdir(parents=True, exist_ok=True)
        (registries / "_default" / "hosts.toml").write_text(f'server = "{NO_REGISTRY}"\n')
        config = {
            "version": 3,
            "root": str(self.containerd_root()),
            "state": str(RUN_DIR / "containerd"),
            "grpc": {"address": str(self.containerd_socket)},
            "ttrpc": {"address": str(RUN_DIR / "containerd.sock.ttrpc")},
            "plugins": {
                "io.containerd.cri.v1.images": {
                    "snapshotter": "overlayfs",
                    "pinned_images": {"sandbox": pause},
                    "registry": {"config_path": str(registries)},
                },
                "io.containerd.cri.v1.runtime": {
                    # This machine's root lacks CAP_SYS_RESOURCE: no OOM score below containerd's own.
                    "restrict_oom_score_adj": True,
                    "cni": {"bin_dirs": [str(binaries["bridge"].parent)], "conf_dir": str(cni), "max_conf_num": 1},
                    "containerd": {
                        "default_runtime_name": "runc",
                        "runtimes": {
                            "runc": {
                                "runtime_type": "io.containerd.runc.v2",
                                "options": {"BinaryName": str(binaries["runc"]), "Root": str(RUN_DIR / "runc"), "SystemdCgroup": False},
                            }
                        },
                    },
                },
                "io.containerd.grpc.v1.cri": {"stream_server_address": "127.0.0.1", "stream_server_port": "0"},
            },
        }
        path = self.workdir / "containerd.toml"
        path.write_text(toml_dump(config))
        # The shim is found on PATH, next to containerd.
        os.environ["PATH"] = f"{binaries['containerd'].parent}:{os.environ['PATH']}"
        return path

    def _import_images(self, ctr: list[str], archives: dict[str, Path]) -> None:
        imported = self.containerd_root() / "imported"
        imported.mkdir(parents=True, exist_ok=True)
        present = set(run(*ctr, "images", "list", "--quiet").stdout.split())
        for ref, archive in archives.items():
            marker = imported / f"{archive.name}.done"
            if marker.exists() and ref in present:
                continue
            print(f"importing {ref} into the real node's containerd", flush=True)
            run(*ctr, "images", "import", "--no-unpack=false", str(archive))
            marker.write_text(ref + "\n")

    def _kubelet_config(self) -> Path:
        resolv = self.workdir / "resolv.conf"
        # No upstream resolver: the cluster's names are all a pod may look up.
        resolv.write_text("")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine's cgroups are v1; Kubernetes 1.35+ refuses them unless told.
            "failCgroupV1": False,
            # Without CAP_SYS_RESOURCE (this machine's root) no process may lower its OOM score.
            "oomScoreAdj": 0,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": NODE_IP,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.kubelet_healthz_port,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDNS": [CLUSTER_DNS],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(resolv),
            "podLogsDir": str(self.workdir / "pod-logs"),
            "failSwapOn": False,
            "registerNode": True,
            "serializeImagePulls": False,
            # Small disks: never evict the test's pods for disk the machine's other work uses.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "maxPods": 250,
            "nodeStatusReportFrequency": "10s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "shutdownGracePeriod": "0s",
        }
        path = self.workdir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _corefile(self) -> Path:
        path = self.workdir / "Corefile"
        path.write_text(
            f""".:53 {{
    bind {CLUSTER_DNS}
    errors
    ready 127.0.0.1:{self.dns_ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.admin_kubeconfig} kubeswarm-testbed
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""
        )
        return path

    def _node_ready(self) -> bool:
        """Ready, and the node controller has lifted its not-ready taint: pods schedule at once."""
        node = json.loads(self.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
        return ready and not any(t["key"].startswith("node.kubernetes.io/") for t in node["spec"].get("taints", []))


def cni_config() -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "kubeswarm",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # Nothing leaves this machine, so pods need no masquerade to the outside.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "rangeStart": "10.244.0.10", "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(RUN_DIR / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def image_ref(archives: dict[str, Path], name: str) -> str:
    """The ref of one of the project's images (``pause``, ``runtime``, ...), as the chart names it."""
    return next(ref for ref in archives if ref.rsplit("/", 1)[1].startswith(name + ":"))


def provisioner_objects(helper_image: str) -> list[dict[str, object]]:
    """local-path-provisioner's namespace, configuration and default StorageClass (from its deploy/ manifest).

    Its helper pods need a shell, mkdir and rm: the runtime image (Debian) has them, and no registry
    is needed for it.
    """
    helper_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper-pod"},
        "spec": {
            "priorityClassName": "system-node-critical",
            # The helper creates and removes volume directories owned by any pod's user.
            "securityContext": {"runAsUser": 0, "runAsGroup": 0},
            "containers": [{"name": "helper-pod", "image": helper_image, "imagePullPolicy": "IfNotPresent"}],
        },
    }
    config = {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [str(VOLUMES_DIR)]}]}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROVISIONER_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": f"{STORAGE_CLASS}-provisioner", "namespace": PROVISIONER_NAMESPACE},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "local-path-config", "namespace": PROVISIONER_NAMESPACE},
            "data": {
                "config.json": json.dumps(config),
                "setup": '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n',
                "teardown": '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n',
                "helperPod.yaml": yaml.safe_dump(helper_pod),
            },
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": f"rancher.io/{STORAGE_CLASS}",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
        },
    ]


def toml_dump(data: dict[str, object]) -> str:
    """The TOML subset containerd's configuration needs: nested tables of strings, numbers, booleans, lists."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(item) for item in v) + "]"
        raise TypeError(f"no TOML for {v!r}")

    lines: list[str] = []

    def table(path: list[str], body: dict[str, object]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        if path and scalars:
            lines.append("[" + ".".join(json.dumps(p) if not re.fullmatch(r"[\w-]+", p) else p for p in path) + "]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in body.items():
            if isinstance(v, dict):
                table([*path, k], v)

    table([], data)
    return "\n".join(lines) + "\n"


# --- cleanup -----------------------------------------------------------------------------------


def _node_processes() -> list[int]:
    """Processes of the node: containers (in the kubelet's cgroups) and shims (from our build)."""
    pids: set[int] = set()
    for procs in Path("/sys/fs/cgroup").glob("*/kubepods/**/cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in procs.read_text().split())
    node_bins = build.CACHE / "testbed"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if str(proc.joinpath("exe").readlink()).startswith(str(node_bins)):
                    cmdline = proc.joinpath("cmdline").read_bytes()
                    if b"containerd-shim" in cmdline or b"containerd" in cmdline.split(b"\0")[0]:
                        pids.add(int(proc.name))
    pids.discard(os.getpid())
    return sorted(pids)


def _unmount_below(*roots: Path) -> None:
    prefixes = tuple(str(root) for root in roots)
    for _ in range(5):
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        ours = sorted((m for m in mounts if m.startswith(prefixes)), key=len, reverse=True)
        if not ours:
            return
        for mountpoint in ours:
            mountpoint = mountpoint.encode().decode("unicode_escape")
            if subprocess.run(["umount", mountpoint], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mountpoint], capture_output=True)


def _remove_rules() -> None:
    """Every iptables rule and chain of kube-proxy (KUBE-*), the CNI plugins (CNI-*) and ours."""
    for table in ("filter", "nat", "mangle"):
        saved = run("iptables-save", "-t", table, check=False).stdout
        ours = re.compile(rf"\b(KUBE-[\w-]+|CNI-[\w-]+|{FILTER_CHAIN})\b")
        if not ours.search(saved):
            continue
        kept = [line for line in saved.splitlines() if not ours.search(line)]
        run("iptables-restore", "-w", "-T", table, input="\n".join(kept) + "\n", check=False)
        # iptables-restore of a table replaces it whole, so chains not listed are gone too.


def _remove_cgroups() -> None:
    for kubepods in Path("/sys/fs/cgroup").glob("*/kubepods"):
        for directory in sorted((p for p in kubepods.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            kubepods.rmdir()


def host_state() -> dict[str, Any]:
    """What ``prepare_host`` recorded, or nothing when no real node is on this machine."""
    state: dict[str, Any] = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}
    return state


def node_of(workdir: Path) -> bool:
    """Whether the real node on this machine is the test bed's under ``workdir``, or was left by one
    that died (none of its processes runs): another test bed's live node is never torn down."""
    state = host_state()
    if not state:
        return False
    return Path(state.get("workdir", "/")).is_relative_to(workdir.resolve()) or not _node_processes()


def cleanup_host() -> None:
    """Undo everything ``RealNode`` did on this machine; safe to call when nothing is there."""
    state = host_state()
    for _ in range(3):
        pids = _node_processes()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.05)
    workdir = Path(state["workdir"]) if "workdir" in state else None
    netns_before = set(state.get("netns", []))
    netns_dir = Path("/run/netns")
    if netns_dir.is_dir():
        for netns in netns_dir.iterdir():
            if netns.name.startswith("cni-") and netns.name not in netns_before:
                subprocess.run(["umount", str(netns)], capture_output=True)
                netns.unlink(missing_ok=True)
    _unmount_below(*(p for p in (RUN_DIR, workdir, RealNode.containerd_root()) if p is not None))
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
    for cidr in state.get("guarded", []):
        subprocess.run(["ip", "route", "del", "unreachable", cidr, "metric", GUARD_METRIC], capture_output=True)
    if shutil.which("iptables-save"):
        _remove_rules()
    _remove_cgroups()
    for name, value in state.get("sysctls", {}).items():
        with contextlib.suppress(OSError):
            sysctl_path(name).write_text(value + "\n")
    shutil.rmtree(RUN_DIR, ignore_errors=True)


def host_footprint() -> dict[str, list[str]]:
    """What a node could leave on the host, as comparable lists (``make cluster-down`` test)."""
    links = sorted(line.split(":")[1].strip().split("@")[0] for line in run("ip", "-o", "link").stdout.splitlines())
    routes = sorted(run("ip", "-o", "route").stdout.splitlines())
    mounts = sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
    rules = sorted(
        re.sub(r"\[\d+:\d+\]", "", line)
        for table in ("filter", "nat", "mangle")
        for line in run("iptables-save", "-t", table).stdout.splitlines()
        if line.startswith(("-A", ":"))
    )
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods"))
    netns = sorted(p.name for p in Path("/run/netns").glob("*")) if Path("/run/netns").is_dir() else []
    return {
        "links": links,
        "routes": routes,
        "mounts": mounts,
        "iptables": rules,
        "cgroups": cgroups,
        "netns": netns,
        "processes": [str(pid) for pid in _node_processes()],
        "sysctls": [f"{name}={sysctl_path(name).read_text().strip()}" for name in SYSCTLS],
    }
