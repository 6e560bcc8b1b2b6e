"""The checked-in CRDs are what the models generate, and read well in `kubectl explain`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeswarm_operator import crdgen

pytestmark = pytest.mark.unit
CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_checked_in_crds_match_the_models() -> None:
    for name, text in crdgen.rendered().items():
        assert (CRDS / name).read_text() == text, f"crds/{name} is stale: run `make crds`"


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("crd", [crdgen.agent_crd(), crdgen.swarm_crd()], ids=["agent", "swarm"])
def test_schema_is_structural_and_described(crd: dict[str, Any]) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema, ""):
        assert "type" in node, f"{path} has no type"
        assert not {"$ref", "anyOf", "allOf", "title"} & node.keys(), f"{path} is not structural: {sorted(node)}"
        if path.count(".") >= 2 and not path.endswith(("[]", "}")):
            assert node.get("description"), f"{path} has no description"


def test_agent_crd_names_subresources_and_columns() -> None:
    spec = crdgen.agent_crd()["spec"]
    assert spec["names"]["shortNames"] == ["ag"]
    assert spec["names"]["categories"] == ["kubeswarm"]
    version = spec["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = version["additionalPrinterColumns"]
    # Like a Deployment's: READY 2/3; -o wide (priority 1) adds what the agent is.
    assert [c["name"] for c in columns if not c.get("priority")] == ["Swarm", "Phase", "Ready", "Endpoint", "Age"]
    assert [c["name"] for c in columns if c.get("priority") == 1] == ["Role", "Capabilities", "Provider", "Model"]


def test_nested_objects_default_so_their_defaults_apply() -> None:
    props = crdgen.agent_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert props["mcp"]["default"]["port"] == 8080
    assert props["mcp"]["properties"]["port"]["default"] == 8080
    assert "default" not in props["model"]["properties"]["apiKeySecretRef"]


def test_check_mode_reports_stale_files(tmp_path: Path) -> None:
    assert crdgen.main(["--check", str(tmp_path)]) == 1
    assert crdgen.main([str(tmp_path)]) == 0
    assert crdgen.main(["--check", str(tmp_path)]) == 0
    assert yaml.safe_load((tmp_path / "agents.kubeswarm.io.yaml").read_text())["kind"] == "CustomResourceDefinition"
