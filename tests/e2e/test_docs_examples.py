"""Every YAML block in README.md and docs/*.md applies as written: to the API server, and (Agents, Swarms) to local mode."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeswarm_runtime.manifests import load_manifests

from tests.testbed.cluster import KubeAccess

from .conftest import REPO, Namespace, install_crds

pytestmark = pytest.mark.e2e

_BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    where: str  # file:line, for the test id and the failure
    text: str

    @property
    def documents(self) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self.text) if d is not None]


def yaml_blocks() -> list[Block]:
    blocks = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append(Block(f"{doc.relative_to(REPO)}:{line}", match.group(1)))
    return blocks


BLOCKS = yaml_blocks()


def test_the_docs_have_yaml_blocks_and_each_is_whole_manifests() -> None:
    assert len(BLOCKS) >= 5, "the extraction found (almost) no ```yaml blocks"
    for block in BLOCKS:
        for document in block.documents:
            missing = {"apiVersion", "kind", "metadata"} - document.keys()
            assert not missing, f"{block.where}: a fragment (no {sorted(missing)}): write the whole manifest so it applies as written"


@pytest.fixture(scope="module")
def docs_namespace(cluster: KubeAccess) -> Namespace:
    install_crds(cluster)
    return Namespace(cluster, "default")


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_a_docs_block_applies_to_the_cluster(docs_namespace: Namespace, block: Block) -> None:
    proc = docs_namespace.kubectl("apply", "--dry-run=server", "-f", "-", input=block.text, check=False)
    assert proc.returncode == 0, f"{block.where} does not apply:\n{proc.stderr}"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_a_docs_block_loads_in_local_mode(tmp_path: Path, block: Block) -> None:
    if not any(d.get("kind") in ("Agent", "Swarm") for d in block.documents):
        pytest.skip("no Agent or Swarm: nothing for local mode")
    manifest = tmp_path / "block.yaml"
    manifest.write_text(block.text)
    load_manifests([manifest])  # raises ManifestError, naming the field, if local mode refuses it
