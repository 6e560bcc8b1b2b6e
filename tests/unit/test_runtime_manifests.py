"""Local mode reads manifests by the cluster's rules: tests/verdicts' verdicts, errors in the manifest's words."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kubeswarm_runtime.manifests import ManifestError, load_manifests

from tests.verdicts import CASES, Case

pytestmark = pytest.mark.unit

VERDICTS = Path(__file__).parents[1] / "verdicts"
CLASS_NAME = re.compile(r"\b(Mcp|Agent|Swarm|Model|Ingress|Nats|Streams|Gateway|Autoscaling)[A-Z][a-z]+")
# What local mode says beyond the verdict's words: the path in the manifest and the shape expected there.
LOCAL_WORDS = {
    "agent-auth-as-a-string": 'spec.mcp.auth: expected an object like {mode: jwt}, got "jwt"',
    "agent-kind-misspelt": 'kind "Agnet" is not a kubeswarm kind; the kinds of kubeswarm.io are Agent, Swarm',
    "agent-field-misspelt": 'spec.modle: unknown field "modle"; did you mean "model"?',
    "agent-unknown-provider": "spec.model.provider: should be 'echo'",
    "swarm-member-name-starts-with-digit": "spec.agents[0].name: name must start with a letter",
    "swarm-duplicate-member-names": "spec.agents: member names must be unique",
    "swarm-member-template-typo": 'spec.agents[0].template.capabilites: unknown field "capabilites"; did you mean "capabilities"?',
    "swarm-member-template-wrong-type": "spec.agents[0].template.concurrency: should be a valid integer",
}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_local_mode_gives_the_shared_verdict(case: Case) -> None:
    if case.refused_with is None:
        assert load_manifests([case.path]).agents
        return
    with pytest.raises(ManifestError) as refused:
        load_manifests([case.path])
    message = str(refused.value)
    assert message.startswith(f"{case.path}: ")
    assert case.refused_with in message
    assert LOCAL_WORDS.get(case.id, "") in message
    assert not CLASS_NAME.search(message), f"a class name in: {message}"


def test_every_problem_of_every_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text((VERDICTS / "agent-kind-misspelt.yaml").read_text())
    (tmp_path / "b.yaml").write_text((VERDICTS / "swarm-duplicate-member-names.yaml").read_text())
    with pytest.raises(ManifestError) as refused:
        load_manifests([tmp_path])
    assert "Agnet" in str(refused.value) and "member names must be unique" in str(refused.value)


def test_a_merged_member_problem_names_where_it_was_written(tmp_path: Path) -> None:
    manifest = tmp_path / "s.yaml"
    manifest.write_text(
        "apiVersion: kubeswarm.io/v1alpha1\nkind: Swarm\nmetadata: {name: s}\n"
        "spec:\n  defaults: {model: {provider: http}}\n  agents:\n    - name: m\n"
    )
    with pytest.raises(ManifestError, match=r"Swarm/s: spec\.defaults\.model: provider http needs endpoint"):
        load_manifests([manifest])


def test_the_same_agent_twice_is_refused(tmp_path: Path) -> None:
    agent = (VERDICTS / "agent-accepted.yaml").read_text()
    (tmp_path / "twice.yaml").write_text(agent + "---\n" + agent)
    with pytest.raises(ManifestError, match="is defined twice"):
        load_manifests([tmp_path / "twice.yaml"])


def test_a_document_that_is_no_object_is_refused(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- kind: Agent\n")
    with pytest.raises(ManifestError, match="document 1: expected an object with apiVersion, kind and metadata"):
        load_manifests([tmp_path / "list.yaml"])
