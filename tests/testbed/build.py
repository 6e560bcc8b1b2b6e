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
from dataclasses import dataclass
from pathlib import Path

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
    name: str
    module: str
    commands: dict[str, str]  # binary name -> Go package path

    def ldflags(self, version: str) -> str:
        if self.name == "kubernetes":
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
        if self.name == "etcd":
            return f"-X go.etcd.io/etcd/api/v3/version.GitSHA={version}"
        if self.name == "kwok":
            return f"-X sigs.k8s.io/kwok/pkg/consts.Version={version}"
        if self.name == "helm":
            return f"-X helm.sh/helm/v3/internal/version.version={version} -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
        raise AssertionError(self.name)


COMPONENTS = [
    Component("etcd", "go.etcd.io/etcd/server/v3", {"etcd": "go.etcd.io/etcd/server/v3"}),
    Component(
        "kubernetes",
        "k8s.io/kubernetes",
        {
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        },
    ),
    Component("kwok", "sigs.k8s.io/kwok", {"kwok": "sigs.k8s.io/kwok/cmd/kwok"}),
    Component("helm", "helm.sh/helm/v3", {"helm": "helm.sh/helm/v3/cmd/helm"}),
]


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(CACHE / "gomod"),
        GOCACHE=str(CACHE / "gobuild"),
        GOTOOLCHAIN="local",
        GOFLAGS="-mod=mod -buildvcs=false",
        CGO_ENABLED="0",
    )
    return env


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
    digest.update(pins()[component.name].encode())
    digest.update(component.ldflags("v0.0.0").split("buildDate")[0].encode())
    for path in sorted((WRAPPERS / component.name).iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def bin_dir(component: Component) -> Path:
    return CACHE / "testbed" / f"{component.name}-{pins()[component.name]}-{stamp(component)}"


def _run_logged(cmd: list[str], cwd: Path, log: Path, what: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=go_env(), stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BuildError(f"building {what} failed (exit {proc.returncode}); full log: {log}\n{tail}")


def build(component: Component, *, force: bool = False) -> Path:
    """Build one component's binaries unless the cache already has them."""
    target = bin_dir(component)
    done = target / ".complete"
    if done.exists() and not force:
        return target
    go = go_binary()
    version = pins()[component.name]
    log = LOGS / f"build-{component.name}.log"
    log.unlink(missing_ok=True)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    wrapper = WRAPPERS / component.name
    for binary, package in component.commands.items():
        print(f"building {binary} {version} (log: {log})", file=sys.stderr, flush=True)
        _run_logged(
            [go, "build", "-trimpath", "-ldflags", f"-s -w {component.ldflags(version)}", "-o", str(tmp / binary), package],
            wrapper,
            log,
            f"{binary} {version}",
        )
    (tmp / ".complete").write_text(version + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def build_all(*, force: bool = False) -> dict[str, Path]:
    """Return binary name -> path for every component, building what is missing."""
    paths: dict[str, Path] = {}
    for component in COMPONENTS:
        directory = build(component, force=force)
        for binary in component.commands:
            paths[binary] = directory / binary
    return paths


def regenerate_wrappers() -> None:
    """Rewrite every hack/testbed/<component>/go.mod from pins.json.

    k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them
    with local paths, which a dependent module cannot see; its wrapper replaces
    each with the matching v0.<minor>.<patch> tag, a list read from the
    module's own go.mod.
    """
    go = go_binary()
    for component in COMPONENTS:
        version = pins()[component.name]
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
        if component.name == "kubernetes":
            staging = sorted(set(re.findall(r"^\s+(k8s\.io/[\w.-]+) v0\.0\.0$", upstream, re.M)))
            tag = "v0." + version.lstrip("v").split(".", 1)[1]
            lines += ["replace (", *[f"\t{mod} => {mod} {tag}" for mod in staging], ")", ""]
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
