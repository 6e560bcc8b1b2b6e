"""The images, as far as this machine can tell without a container engine (the built images
themselves: tests/integration/test_images_built.py).

Proven here: the Dockerfile parses and has the shape we promise (pinned base, non-root,
final stages that only copy a venv in), the image locks are what images/lock.sh makes and
pin the versions the tests ran, and the venvs images/install.sh builds (the script every
Dockerfile stage runs) start the runtime and the operator.  Not proven: that a container
engine builds the Dockerfile and that the base image tag exists in the registry.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]  # no stubs in the lock
from kubeswarm_operator.agent.children import RUNTIME_COMMAND, RUNTIME_USER

from images import build
from tests.e2e.conftest import until
from tests.testbed.nats import NatsServer
from tests.testbed.procs import free_port
from tests.unit.test_chart import one, render

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
TARGETS = ("runtime", "operator")
# Packages only the operator may carry.
OPERATOR_ONLY = {"kopf"}
# Neither image carries a generated Kubernetes client: the operator talks plain HTTP through
# kopf's login, and kopf would otherwise import a whole client at start (memory).
KUBERNETES_CLIENTS = {"kubernetes-asyncio", "kubernetes", "pykube-ng"}


def stages() -> dict[str, list[dict[str, str]]]:
    """Instructions of each stage, by stage name."""
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    result: dict[str, list[dict[str, str]]] = {}
    current = ""
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            current = instruction["value"].split(" AS ")[-1].strip() if " AS " in instruction["value"] else instruction["value"]
            result[current] = []
        result.setdefault(current, []).append(instruction)
    return result


def normalized(name: str) -> str:
    """A distribution name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    return {normalized(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(), re.M)}


@pytest.mark.unit
def test_base_image_is_pinned_and_shared() -> None:
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    args = dict(i["value"].split("=", 1) for i in parser.structure if i["instruction"] == "ARG" and "=" in i["value"])
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[a-f0-9]{64})?", base), base
    froms = {name: instructions[0]["value"].split()[0] for name, instructions in stages().items()}
    assert froms["build"] == froms["base"] == "${PYTHON_IMAGE}"
    assert froms["runtime"] == froms["operator"] == "base"


@pytest.mark.unit
@pytest.mark.parametrize("target", TARGETS)
def test_final_stage_only_copies_the_venv_in(target: str) -> None:
    final = stages()[target]
    assert not [i for i in final if i["instruction"] == "RUN"], "a final stage must not build anything"
    copies = [i["value"] for i in final if i["instruction"] == "COPY"]
    assert copies == [f"--from={target}-venv /opt/kubeswarm /opt/kubeswarm"]
    # The venv was made by the script the tests below run; the CA bundle a proxy may need is a
    # secret mounted for that step only.
    venv_runs = [i["value"] for i in stages()[f"{target}-venv"] if i["instruction"] == "RUN"]
    assert venv_runs == [f"--mount=type=secret,id=ca-bundle images/install.sh {target} /opt/kubeswarm"]


@pytest.mark.unit
def test_dockerfile_needs_neither_python_nor_pip_in_the_base() -> None:
    """The Debian base has python3 but no `python` and no pip: only the venv's `python` is used."""
    for name, instructions in stages().items():
        for run in (i["value"] for i in instructions if i["instruction"] == "RUN"):
            assert not re.search(r"(^|[\s;&|(])python(\s|$)", run), f"{name}: {run}"
            if "pip uninstall" in run:
                assert "python3 -c 'import pip'" in run.split("pip uninstall")[0], "pip must be optional in the base"
    # ARG PIP_CERT only in the venv stages, which no final image is built from.
    for name, instructions in stages().items():
        has_cert = any(i["instruction"] == "ARG" and i["value"].startswith("PIP_CERT") for i in instructions)
        assert has_cert == name.endswith("-venv"), name


@pytest.mark.unit
def test_images_run_as_the_user_the_pods_expect(tmp_path: Path) -> None:
    base = stages()["base"]
    assert [i["value"] for i in base if i["instruction"] == "USER"] == [f"{RUNTIME_USER}:{RUNTIME_USER}"]
    assert any("pip uninstall" in i["value"] for i in base if i["instruction"] == "RUN")
    deployment = one(render({}, tmp_path), "Deployment")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == RUNTIME_USER


@pytest.mark.unit
def test_entrypoints_are_what_the_pods_run(tmp_path: Path) -> None:
    entrypoints = {target: next(i["value"] for i in stages()[target] if i["instruction"] == "ENTRYPOINT") for target in TARGETS}
    chart_command = one(render({}, tmp_path), "Deployment")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert entrypoints["operator"] == str(chart_command).replace("'", '"')
    assert entrypoints["runtime"] == str(RUNTIME_COMMAND).replace("'", '"')


@pytest.mark.unit
def test_image_locks_pin_what_the_tests_ran() -> None:
    tested = pins(REPO / "requirements.lock")
    for target in TARGETS:
        locked = pins(IMAGES / f"requirements-{target}.lock")
        assert locked
        drifted = {name: (version, tested.get(name)) for name, version in locked.items() if tested.get(name) != version}
        assert not drifted, f"{target}: {drifted} differ from requirements.lock: run `make images-lock`"
    runtime = set(pins(IMAGES / "requirements-runtime.lock"))
    operator = set(pins(IMAGES / "requirements-operator.lock"))
    assert not runtime & (OPERATOR_ONLY | KUBERNETES_CLIENTS)
    assert operator >= OPERATOR_ONLY
    assert not operator & KUBERNETES_CLIENTS


@pytest.mark.unit
def test_image_locks_are_what_lock_sh_makes(tmp_path: Path) -> None:
    subprocess.run([str(IMAGES / "lock.sh"), str(tmp_path)], check=True, capture_output=True, timeout=300)
    for lock in sorted(IMAGES.glob("requirements-*.lock")):
        assert (tmp_path / lock.name).read_text() == lock.read_text(), f"{lock.name} is stale: run `make images-lock`"


# -- the venvs the images run


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    built = {}
    for target in TARGETS:
        venv = root / target
        # The interpreter the image's python would be: a plain CPython 3.11, not this test venv.
        env = {**os.environ, "PYTHON": os.path.realpath(sys.executable)}
        proc = subprocess.run([str(IMAGES / "install.sh"), target, str(venv)], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        built[target] = venv
    return built


def installed(venv: Path) -> set[str]:
    script = "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, check=True).stdout
    return {normalized(name) for name in out.split()}


@pytest.mark.integration
def test_image_venvs_hold_exactly_their_lock(venvs: dict[str, Path]) -> None:
    for target, venv in venvs.items():
        ours = {"kubeswarm-runtime"} | ({"kubeswarm-operator"} if target == "operator" else set())
        assert installed(venv) == set(pins(IMAGES / f"requirements-{target}.lock")) | ours
        assert not installed(venv) & {"pip", "setuptools", "hatchling"}


@pytest.mark.integration
def test_operator_image_entrypoint_starts(venvs: dict[str, Path]) -> None:
    proc = subprocess.run(
        [str(venvs["operator"] / "bin" / "python"), "-m", "kubeswarm_operator", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "--namespace" in proc.stdout, proc.stderr


@pytest.mark.integration
def test_runtime_image_entrypoint_serves_an_agent(venvs: dict[str, Path], nats_server: NatsServer, tmp_path: Path) -> None:
    """The runtime venv alone (no kopf, no Kubernetes client) runs an agent that gets ready on a real NATS."""
    probe_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESWARM_")} | {
        "KUBESWARM_AGENT": "image-check",
        "KUBESWARM_SUBJECT_PREFIX": "ks.images.check",
        "KUBESWARM_CAPABILITIES": "echo",
        "KUBESWARM_NATS__URL": nats_server.url,
        "KUBESWARM_MCP__PORT": str(probe_port),
        "KUBESWARM_METRICS_PORT": str(free_port()),
    }
    log = tmp_path / "runtime.log"
    with log.open("wb") as out:
        argv = [str(venvs["runtime"] / "bin" / "python"), "-m", "kubeswarm_runtime"]
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:

        def ready() -> bool:
            assert process.poll() is None, f"the runtime exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{probe_port}/readyz", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        until(ready, 60, f"the runtime's /readyz (log: {log})")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0, log.read_text()[-3000:]


# -- images/build.py: names, digests, engine choice


@pytest.mark.unit
def test_refs_are_the_charts_defaults(tmp_path: Path) -> None:
    version = build.app_version()
    refs = build.chart_refs()
    nats_tag = build.yaml_scalar((build.CHART / "values.yaml").read_text(), "nats", "image", "tag")
    assert refs == {
        "runtime": f"docker.io/kubeswarm/runtime:{version}",
        "operator": f"docker.io/kubeswarm/operator:{version}",
        "nats": f"docker.io/library/nats:{nats_tag}",
    }
    # What the chart renders, as a container runtime normalises it, is what we build.
    rendered = one(render({}, tmp_path), "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert build.qualified(rendered.rsplit(":", 1)[0]) + ":" + rendered.rsplit(":", 1)[1] == refs["operator"]


@pytest.mark.unit
def test_refs_follow_chart_yaml_and_values(tmp_path: Path) -> None:
    (tmp_path / "Chart.yaml").write_text('apiVersion: v2\nname: kubeswarm\nversion: 9.9.9\nappVersion: "1.2.3"\n')
    (tmp_path / "values.yaml").write_text(
        "operator:\n  image:\n    repository: ghcr.io/acme/op\n    tag: ''\n"
        'runtime:\n  # -- a comment\n  image:\n    repository: acme/rt\n    tag: "7"  # pinned\n'
        "nats:\n  enabled: true\n  image:\n    repository: nats\n    tag: 2.0.0-alpine\n"
    )
    assert build.chart_refs(tmp_path) == {
        "operator": "ghcr.io/acme/op:1.2.3",
        "runtime": "docker.io/acme/rt:7",
        "nats": "docker.io/library/nats:2.0.0-alpine",
    }


@pytest.mark.unit
@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        ("nats", "docker.io/library/nats"),
        ("kubeswarm/runtime", "docker.io/kubeswarm/runtime"),
        ("registry.k8s.io/pause", "registry.k8s.io/pause"),
        ("localhost/kubeswarm/python-base", "localhost/kubeswarm/python-base"),
        ("localhost:5000/x", "localhost:5000/x"),
    ],
)
def test_qualified_names(repository: str, expected: str) -> None:
    assert build.qualified(repository) == expected


@pytest.mark.unit
def test_pause_tag_is_read_from_kubernetes_makefile() -> None:
    assert build.pause_tag("REGISTRY ?= staging-k8s.gcr.io\nTAG ?= 3.10.2\nREV = $(shell git describe)\n") == "3.10.2"
    with pytest.raises(build.ImageBuildError, match="TAG"):
        build.pause_tag("REV = 1\n")


@pytest.mark.unit
def test_input_digest_changes_with_any_input(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    source = tmp_path / "src" / "a.py"
    source.write_text("print(1)\n")
    files = ["src/a.py"]

    def digest(**parts: str) -> str:
        return build.input_digest({"base": "abc", **parts}, files, tmp_path)

    first = digest()
    assert digest() == first
    assert digest(base="abd") != first
    source.write_text("print(2)\n")
    changed = digest()
    assert changed != first
    source.chmod(0o755)
    assert digest() != changed


@pytest.mark.unit
def test_image_sources_are_what_git_sees() -> None:
    sources = build.image_sources("runtime")
    assert "Dockerfile" in sources and "images/install.sh" in sources
    assert any(name.startswith("runtime/src/kubeswarm_runtime/") for name in sources)
    assert any(name.startswith("operator/src/kubeswarm_operator/") for name in sources)
    assert not [name for name in sources if "__pycache__" in name or name.startswith(".venv")]
    assert all(name.startswith("images/") for name in build.image_sources("nats"))


@pytest.mark.unit
def test_engine_choice() -> None:
    def which(present: set[str]) -> Callable[[str], str | None]:
        return lambda name: f"/usr/bin/{name}" if name in present else None

    assert build.choose_engine(which=which({"buildah"}), docker_ok=lambda: True).name == "docker"
    assert build.choose_engine(which=which({"buildah", "podman"}), docker_ok=lambda: False).name == "buildah"
    podman = build.choose_engine(which=which({"podman"}), docker_ok=lambda: False)
    assert podman.name == "podman"
    # Storage under the cache, never /var/lib/containers.
    assert str(build.STORAGE / "storage") in podman.argv
    installed: set[str] = set()
    engine = build.choose_engine(which=which(installed), docker_ok=lambda: False, install=lambda: installed.add("buildah"))
    assert engine.name == "buildah"


@pytest.mark.unit
def test_no_engine_is_a_clear_error() -> None:
    with pytest.raises(build.ImageBuildError) as error:
        build.choose_engine(which=lambda name: None, docker_ok=lambda: False, install=None)
    assert str(error.value) == (
        "no container engine: docker is not installed, and neither buildah nor podman is installed. "
        "Install buildah (Debian/Ubuntu: apt-get install buildah runc), or run `python3 -m images.build` as root on "
        "Debian/Ubuntu to have it installed."
    )


@pytest.mark.unit
def test_a_docker_cli_without_its_daemon_is_named_and_buildah_used(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def which(present: set[str]) -> Callable[[str], str | None]:
        return lambda name: f"/usr/bin/{name}" if name in present else None

    assert build.choose_engine(which=which({"docker", "buildah"}), docker_ok=lambda: False).name == "buildah"
    assert "docker is installed but its daemon does not answer (`docker info` failed" in capsys.readouterr().err
    with pytest.raises(build.ImageBuildError) as error:
        build.choose_engine(which=which({"docker"}), docker_ok=lambda: False, install=None)
    assert "docker is installed but its daemon does not answer" in str(error.value)
    # The check itself: a docker CLI that exits 0 printing only its client half (no server version) is no daemon.
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho ''\nexit 0\n")
    fake.chmod(0o755)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
        assert build.docker_running() is False


@pytest.mark.unit
def test_cli_rejects_unknown_images(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build.main(["runtime", "bogus"])
    assert "unknown image(s) bogus" in capsys.readouterr().err
