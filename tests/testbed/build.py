"""Build the test bed's Go components from their pinned modules, once.

Each component has a wrapper module in ``hack/testbed/<component>/`` whose
``go.mod`` pins it (``tool`` directives name the commands to build).  Binaries
land in ``~/.cache/kubeswarm/testbed/<component>-<stamp>/`` where the stamp
hashes the pins and the wrapper's files, so a build happens only when a pin
changes.  The Go module and build caches live under ``~/.cache/kubeswarm`` too,
so a warm CI run reuses them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from images import build as images

REPO = Path(__file__).resolve().parents[2]
WRAPPERS = REPO / "hack" / "testbed"
CACHE = Path(os.environ.get("KUBESWARM_CACHE", Path.home() / ".cache" / "kubeswarm"))
LOGS = CACHE / "logs"


class BuildError(RuntimeError):
    """A component could not be built; the message says what to do."""


def pins() -> dict[str, str]:
    data: dict[str, str] = json.loads((WRAPPERS / "pins.json").read_text())
    return data


@dataclass(frozen=True)
class Component:
    """One wrapper module under hack/testbed/<name>, pinned by ``pins.json[pin]``."""

    name: str
    module: str
    commands: dict[str, str]  # binary name -> Go package path
    pin: str = ""  # key in pins.json; the component's name when empty
    version_flags: tuple[str, ...] = ()  # -X flags; {version} is replaced
    tags: tuple[str, ...] = ()
    # Only the real node needs it (kubelet, container runtime, ...): built on demand.
    node: bool = False
    # Links C libraries (runc: libseccomp, so that pods get their RuntimeDefault seccomp profile).
    cgo: bool = False

    @property
    def version(self) -> str:
        return pins()[self.pin or self.name]

    @property
    def kubernetes(self) -> bool:
        """Built from k8s.io/kubernetes, whose staging modules need replacing and whose version flags are special."""
        return self.module == "k8s.io/kubernetes"

    def ldflags(self, version: str) -> str:
        if self.kubernetes:
            minor = version.lstrip("v").split(".")[1]
            date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            flags = []
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
                flags += [
                    f"-X {pkg}.gitVersion={version}",
                    f"-X {pkg}.gitMajor=1",
                    f"-X {pkg}.gitMinor={minor}",
                    f"-X {pkg}.gitTreeState=clean",
                    f"-X {pkg}.buildDate={date}",
                ]
            return " ".join(flags)
        return " ".join(f"-X {flag.format(version=version)}" for flag in self.version_flags)


KUBERNETES = "k8s.io/kubernetes"
COMPONENTS = [
    Component(
        "etcd",
        "go.etcd.io/etcd/server/v3",
        {"etcd": "go.etcd.io/etcd/server/v3"},
        version_flags=("go.etcd.io/etcd/api/v3/version.GitSHA={version}",),
    ),
    Component(
        "kubernetes",
        KUBERNETES,
        {
            "kube-apiserver": f"{KUBERNETES}/cmd/kube-apiserver",
            "kube-controller-manager": f"{KUBERNETES}/cmd/kube-controller-manager",
            "kube-scheduler": f"{KUBERNETES}/cmd/kube-scheduler",
        },
    ),
    Component(
        "kwok",
        "sigs.k8s.io/kwok",
        {"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
        version_flags=("sigs.k8s.io/kwok/pkg/consts.Version={version}",),
    ),
    Component(
        "helm",
        "helm.sh/helm/v3",
        {"helm": "helm.sh/helm/v3/cmd/helm"},
        version_flags=("helm.sh/helm/v3/internal/version.version={version}", "helm.sh/helm/v3/internal/version.gitTreeState=clean"),
    ),
    # The real node: the same Kubernetes pin as the control plane, in a module of its own so that
    # the kwok-only test bed never builds it.
    Component(
        "kubelet",
        KUBERNETES,
        {"kubelet": f"{KUBERNETES}/cmd/kubelet", "kube-proxy": f"{KUBERNETES}/cmd/kube-proxy"},
        pin="kubernetes",
        node=True,
    ),
    Component(
        "containerd",
        "github.com/containerd/containerd/v2",
        {
            "containerd": "github.com/containerd/containerd/v2/cmd/containerd",
            "containerd-shim-runc-v2": "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
            "ctr": "github.com/containerd/containerd/v2/cmd/ctr",
        },
        version_flags=("github.com/containerd/containerd/v2/version.Version={version}",),
        # Snapshotters that need cgo or tools this node lacks; overlayfs is the one it uses.
        tags=("no_btrfs", "no_devmapper", "no_zfs"),
        node=True,
    ),
    # The version containerd's own CI runs with (its script/setup/runc-version).
    Component(
        "runc",
        "github.com/opencontainers/runc",
        {"runc": "github.com/opencontainers/runc"},
        version_flags=("main.version={version}",),
        tags=("seccomp", "urfave_cli_no_docs"),
        node=True,
        cgo=True,
    ),
    Component(
        "cni-plugins",
        "github.com/containernetworking/plugins",
        {
            "bridge": "github.com/containernetworking/plugins/plugins/main/bridge",
            "loopback": "github.com/containernetworking/plugins/plugins/main/loopback",
            "host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
            "portmap": "github.com/containernetworking/plugins/plugins/meta/portmap",
        },
        version_flags=("github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion={version}",),
        node=True,
    ),
    Component(
        "coredns",
        "github.com/coredns/coredns",
        {"coredns": "github.com/coredns/coredns"},
        version_flags=("github.com/coredns/coredns/coremain.GitCommit={version}",),
        node=True,
    ),
    Component(
        "local-path-provisioner",
        "github.com/rancher/local-path-provisioner",
        {"local-path-provisioner": "github.com/rancher/local-path-provisioner"},
        version_flags=("main.VERSION={version}",),
        node=True,
    ),
]


def go_env(*, cgo: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(CACHE / "gomod"),
        GOCACHE=str(CACHE / "gobuild"),
        GOTOOLCHAIN="local",
        GOFLAGS="-mod=mod -buildvcs=false",
        CGO_ENABLED="1" if cgo else "0",
    )
    return env


# Debian packages a cgo component builds against.
CGO_PACKAGES = ("gcc", "libc6-dev", "libseccomp-dev", "pkg-config")


def ensure_cgo_packages() -> None:
    if shutil.which("pkg-config") and subprocess.run(["pkg-config", "--exists", "libseccomp"]).returncode == 0:
        return
    images.install_packages(CGO_PACKAGES, LOGS / "build-packages.log", "building runc needs libseccomp's headers")


def go_binary() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the test bed builds etcd, Kubernetes, kwok and helm from their Go modules, "
            "but no `go` is on PATH: install Go 1.26 or newer (https://go.dev/doc/install) and retry"
        )
    return go


def stamp(component: Component) -> str:
    digest = hashlib.sha256()
    digest.update(component.version.encode())
    digest.update(component.ldflags("v0.0.0").split("buildDate")[0].encode())
    digest.update(" ".join(component.tags).encode())
    digest.update(b"cgo" if component.cgo else b"")
    for path in sorted((WRAPPERS / component.name).iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def bin_dir(component: Component) -> Path:
    return CACHE / "testbed" / f"{component.name}-{component.version}-{stamp(component)}"


def _run_logged(cmd: list[str], cwd: Path, log: Path, what: str, env: dict[str, str] | None = None) -> None:
    try:
        images.run(cmd, log, f"building {what}", env=env or go_env(), cwd=cwd)
    except images.ImageBuildError as error:
        raise BuildError(str(error)) from error


def build(component: Component, *, force: bool = False) -> Path:
    """Build one component's binaries unless the cache already has them."""
    target = bin_dir(component)
    done = target / ".complete"
    if done.exists() and not force:
        return target
    go = go_binary()
    version = component.version
    log = LOGS / f"build-{component.name}.log"
    log.unlink(missing_ok=True)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    wrapper = WRAPPERS / component.name
    if component.cgo:
        ensure_cgo_packages()
    for binary, package in component.commands.items():
        print(f"building {binary} {version} (log: {log})", file=sys.stderr, flush=True)
        _run_logged(
            [
                go,
                "build",
                "-trimpath",
                f"-tags={','.join(component.tags)}",
                "-ldflags",
                f"-s -w {component.ldflags(version)}",
                "-o",
                str(tmp / binary),
                package,
            ],
            wrapper,
            log,
            f"{binary} {version}",
            go_env(cgo=component.cgo),
        )
    (tmp / ".complete").write_text(version + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def build_all(*, force: bool = False, node: bool = False) -> dict[str, Path]:
    """Return binary name -> path for the control plane's components (and the real node's, with
    ``node``), building what is missing."""
    paths: dict[str, Path] = {}
    for component in COMPONENTS:
        if component.node and not node:
            continue
        directory = build(component, force=force)
        for binary in component.commands:
            paths[binary] = directory / binary
    return paths


def regenerate_wrappers(names: Sequence[str] = ()) -> None:
    """Rewrite hack/testbed/<component>/go.mod (every component's, or those named) from pins.json.

    k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them
    with local paths, which a dependent module cannot see; its wrapper replaces
    each with the matching v0.<minor>.<patch> tag, a list read from the
    module's own go.mod.
    """
    go = go_binary()
    unknown = set(names) - {c.name for c in COMPONENTS}
    if unknown:
        raise BuildError(f"no test bed component named {', '.join(sorted(unknown))}")
    for component in COMPONENTS:
        if names and component.name not in names:
            continue
        version = component.version
        out = subprocess.run(
            [go, "mod", "download", "-json", f"{component.module}@{version}"],
            env=go_env(),
            capture_output=True,
            text=True,
            cwd=WRAPPERS,
        )
        info = json.loads(out.stdout)
        if "Error" in info:
            raise BuildError(info["Error"])
        upstream = Path(info["GoMod"]).read_text()
        go_line = re.search(r"^go (\S+)$", upstream, re.M)
        assert go_line, f"{component.module} has no go line"
        lines = [
            "// Generated from hack/testbed/pins.json by `python -m tests.testbed regenerate`.",
            f"module kubeswarm.io/testbed/{component.name}",
            "",
            f"go {go_line.group(1)}",
            "",
            *[f"tool {pkg}" for pkg in component.commands.values()],
            "",
            f"require {component.module} {version}",
            "",
        ]
        if component.kubernetes:
            staging = sorted(set(re.findall(r"^\s+(k8s\.io/[\w.-]+) v0\.0\.0$", upstream, re.M)))
            tag = "v0." + version.lstrip("v").split(".", 1)[1]
            lines += ["replace (", *[f"\t{mod} => {mod} {tag}" for mod in staging], ")", ""]
        if component.name == "kubernetes":
            check_etcd_pin(Path(info["Dir"]))
        if component.name == "kwok":
            write_kwok_stages(Path(info["Dir"]))
        wrapper = WRAPPERS / component.name
        wrapper.mkdir(exist_ok=True)
        (wrapper / "go.mod").write_text("\n".join(lines))
        (wrapper / "go.sum").unlink(missing_ok=True)
        subprocess.run([go, "mod", "tidy"], cwd=wrapper, env=go_env(), check=True)


KWOK_STAGES = WRAPPERS / "kwok-stages.yaml"
# kwok's own "fast" stages: nodes become Ready (heartbeats through leases), pods
# become Running and Ready at once, and complete or go away when deleted.
KWOK_STAGE_FILES = [
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
]


def write_kwok_stages(kwok_dir: Path) -> None:
    parts = [f"# Generated from sigs.k8s.io/kwok@{pins()['kwok']} by `python -m tests.testbed regenerate`."]
    parts += [(kwok_dir / name).read_text().strip() for name in KWOK_STAGE_FILES]
    KWOK_STAGES.write_text("\n---\n".join(parts) + "\n")


def kubeadm_etcd_version(kubernetes_dir: Path) -> str:
    constants = (kubernetes_dir / "cmd/kubeadm/app/constants/constants.go").read_text()
    match = re.search(r'DefaultEtcdVersion = "([\d.]+)-\d+"', constants)
    assert match, "kubeadm no longer declares DefaultEtcdVersion"
    return "v" + match.group(1)


def check_etcd_pin(kubernetes_dir: Path) -> None:
    wanted = kubeadm_etcd_version(kubernetes_dir)
    if pins()["etcd"] != wanted:
        raise BuildError(f"kubeadm {pins()['kubernetes']} pins etcd {wanted}; hack/testbed/pins.json says {pins()['etcd']}")
