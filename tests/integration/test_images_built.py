"""The built images, read from the archives ``images.build.build_all()`` exports (cached: cheap
when warm). Proven here: each archive names its image as the chart does, and the images hold what
we promise (uid 10001, the pods' entrypoints, no pip, no kopf or Kubernetes client in the runtime,
kopf in the operator, nats-server on PATH). Running them: the real node's e2e tests.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import pytest
from kubeswarm_operator.agent.children import RUNTIME_COMMAND, RUNTIME_USER

from images import build


def can_build() -> bool:
    return build.docker_running() or any(shutil.which(name) for name in ("buildah", "podman")) or os.geteuid() == 0


pytestmark = [
    pytest.mark.integration,
    # A cold build on a fresh machine installs buildah and mmdebstrap and builds everything.
    pytest.mark.timeout(1500),
    pytest.mark.skipif(
        not can_build(), reason="building images needs docker, buildah or podman, or root to install buildah (see docs/images.md)"
    ),
]


@dataclass
class Image:
    """One docker-archive: its manifest entry, its config and its merged file system."""

    archive: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    files: dict[str, tarfile.TarInfo] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.config["config"])

    def paths(self, part: str) -> list[str]:
        return [path for path in self.files if part in path]


def merge_layer(files: dict[str, tarfile.TarInfo], layer: tarfile.TarFile) -> None:
    """Apply one layer, whiteouts included, as an overlay would."""
    for member in layer:
        path = PurePosixPath("/", member.name)
        if path.name == ".wh..wh..opq":
            directory = str(path.parent) + "/"
            for existing in [p for p in files if p.startswith(directory)]:
                del files[existing]
        elif path.name.startswith(".wh."):
            gone = str(path.parent / path.name.removeprefix(".wh."))
            for existing in [p for p in files if p == gone or p.startswith(gone + "/")]:
                del files[existing]
        else:
            files[str(path)] = member


def read_archive(archive: Path) -> Image:
    with tarfile.open(archive) as outer:

        def member(name: str) -> IO[bytes]:
            extracted = outer.extractfile(name)
            assert extracted is not None, f"{archive}: no {name}"
            return extracted

        manifests = json.load(member("manifest.json"))
        assert len(manifests) == 1, manifests
        image = Image(archive, manifests[0], json.load(member(manifests[0]["Config"])))
        for layer in image.manifest["Layers"]:
            with tarfile.open(fileobj=member(layer), mode="r|*") as contents:
                merge_layer(image.files, contents)
    return image


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build.build_all(tmp_path_factory.mktemp("image-logs"))


@pytest.fixture(scope="module")
def images(archives: dict[str, Path]) -> dict[str, Image]:
    """By short name: runtime, operator, nats, pause."""
    by_ref = {ref: read_archive(path) for ref, path in archives.items()}
    return {ref.rsplit("/", 1)[-1].split(":")[0]: image for ref, image in by_ref.items()}


def test_archives_are_named_as_the_chart_names_the_images(archives: dict[str, Path], images: dict[str, Image]) -> None:
    refs = build.chart_refs()
    assert set(archives) == {refs["runtime"], refs["operator"], refs["nats"], next(r for r in archives if "/pause:" in r)}
    assert next(r for r in archives if "/pause:" in r).startswith("registry.k8s.io/pause:3.")
    for ref, path in archives.items():
        # `ctr images import` and `kind load image-archive` name the image by RepoTags.
        assert images[ref.rsplit("/", 1)[-1].split(":")[0]].manifest["RepoTags"] == [ref], path


def test_a_warm_build_builds_nothing(archives: dict[str, Path], tmp_path: Path) -> None:
    before = {ref: path.stat().st_mtime_ns for ref, path in archives.items()}
    again = build.build_all(tmp_path)
    assert again == archives
    assert {ref: path.stat().st_mtime_ns for ref, path in again.items()} == before


@pytest.mark.parametrize("name", ["runtime", "operator"])
def test_python_images_run_as_the_pods_user_what_the_pods_run(images: dict[str, Image], name: str) -> None:
    settings = images[name].settings
    assert settings["User"] in (f"{RUNTIME_USER}:{RUNTIME_USER}", str(RUNTIME_USER))
    assert settings["Entrypoint"] == ["python", "-m", f"kubeswarm_{name}"]
    if name == "runtime":
        assert settings["Entrypoint"] == RUNTIME_COMMAND
    assert any(env.startswith("PATH=/opt/kubeswarm/bin:") for env in settings["Env"])
    files = images[name].files
    # The entrypoint's `python` is the venv's, whichever base (official or Debian) it links to.
    assert files["/opt/kubeswarm/bin/python"].issym() or files["/opt/kubeswarm/bin/python"].isfile()
    # The runtime mounts /dev; device nodes in a layer only break rootless unpacking.
    assert not [path for path, member in files.items() if member.ischr() or member.isblk()]


@pytest.mark.parametrize("name", ["runtime", "operator"])
def test_no_pip_or_setuptools(images: dict[str, Image], name: str) -> None:
    image = images[name]
    for package in ("pip", "setuptools"):
        installed = [p for p in image.files if p.endswith((f"-packages/{package}/__init__.py", f"/bin/{package}"))]
        assert not installed, f"{name}: {installed}"
    assert not image.paths("/opt/kubeswarm/bin/pip")
    # Nor the wheels ensurepip would install them from (official image: ensurepip/_bundled;
    # Debian: /usr/share/python-wheels).
    assert not [p for p in image.files if p.endswith(".whl")]


def test_runtime_has_no_kopf_and_no_kubernetes_client(images: dict[str, Image]) -> None:
    site = "/opt/kubeswarm/lib/python3.11/site-packages/"
    runtime = images["runtime"].paths(site)
    assert any(p.startswith(site + "kubeswarm_runtime/") for p in runtime)
    for package in ("kopf", "kubernetes", "kubernetes_asyncio"):
        assert not [p for p in runtime if p.startswith(f"{site}{package}/")], package
    operator = images["operator"].paths(site)
    assert any(p.startswith(site + "kopf/") for p in operator)
    assert any(p.startswith(site + "kubeswarm_operator/") for p in operator)


def test_nats_image_runs_nats_server_from_path(images: dict[str, Image]) -> None:
    nats = images["nats"]
    assert nats.settings["Entrypoint"] == ["nats-server"]
    assert "PATH=/usr/local/bin" in nats.settings["Env"]
    binary = nats.files["/usr/local/bin/nats-server"]
    assert binary.isfile() and binary.mode & stat.S_IXOTH
    assert nats.settings["User"] == "1000:1000"  # the chart's NATS uid


def test_pause_image_is_kubernetes_pause(images: dict[str, Image]) -> None:
    pause = images["pause"]
    assert pause.settings["Entrypoint"] == ["/pause"]
    assert pause.settings["User"] == "65535:65535"
    assert [p for p in pause.files if not pause.files[p].isdir()] == ["/pause"]
