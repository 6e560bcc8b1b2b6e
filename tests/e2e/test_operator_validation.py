"""The API server rejects invalid Agents with a message naming the field (schema and CEL rules from the models)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubeswarm_runtime.resources import Agent, Swarm
from pydantic import ValidationError

from tests.testbed.cluster import KubeAccess
from tests.verdicts import CASES, Case

from .conftest import Namespace, install_crds

pytestmark = pytest.mark.e2e

ANTHROPIC = {"provider": "anthropic", "name": "claude"}
SECRET = {"secretKeyRef": {"name": "token", "key": "bearer"}}

# (id, spec or metadata override, text the error must contain)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("negative-replicas", {"replicas": -1}, "spec.replicas"),
    ("too-many-replicas", {"replicas": 5000}, "spec.replicas"),
    ("replicas-not-a-number", {"replicas": "three"}, "spec.replicas"),
    ("unknown-provider", {"model": {"provider": "gpt"}}, "spec.model.provider"),
    ("anthropic-without-key", {"model": ANTHROPIC}, "apiKeySecretRef or awsSecretsManager"),
    (
        "two-key-sources",
        {"model": {**ANTHROPIC, "apiKeySecretRef": {"name": "k", "key": "k"}, "awsSecretsManager": {"secretId": "s", "region": "r"}}},
        "at most one of apiKeySecretRef and awsSecretsManager",
    ),
    ("http-without-endpoint", {"model": {"provider": "http", "name": "hook"}}, "spec.model.endpoint"),
    ("bedrock-without-model-name", {"model": {"provider": "bedrock"}}, "spec.model.name"),
    ("endpoint-not-a-url", {"model": {"provider": "http", "name": "h", "endpoint": "ftp://x"}}, "spec.model.endpoint"),
    ("secret-ref-without-key", {"model": {**ANTHROPIC, "apiKeySecretRef": {"name": "k"}}}, "spec.model.apiKeySecretRef.key"),
    ("privileged-mcp-port", {"mcp": {"port": 80}}, "spec.mcp.port"),
    ("oidc-without-issuer", {"mcp": {"auth": {"mode": "oidc", "audience": "a"}}}, "oidc needs issuer and audience"),
    ("ingress-without-host", {"mcp": {"auth": {"mode": "jwt"}, "ingress": {"enabled": True}}}, "spec.mcp.ingress.host"),
    (
        "ingress-path-not-absolute",
        {"mcp": {"auth": {"mode": "jwt"}, "ingress": {"enabled": True, "host": "h", "path": "mcp"}}},
        "spec.mcp.ingress.path",
    ),
    ("min-above-max", {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "spec.autoscaling.minReplicas"),
    ("bad-capability", {"capabilities": ["web search"]}, "spec.capabilities[0]"),
    ("swarm-not-a-dns-label", {"swarm": "My_Swarm"}, "spec.swarm"),
    ("zero-concurrency", {"concurrency": 0}, "spec.concurrency"),
    ("heartbeat-too-slow", {"heartbeatSeconds": 1000}, "spec.heartbeatSeconds"),
    ("bad-pull-policy", {"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy"),
    ("typo-in-field-name", {"replica": 2}, "replica"),
    ("mcp-peer-without-selector", {"mcp": {"allowFrom": [{}]}}, "set namespaceSelector, podSelector or both"),
    (
        "mcp-peer-bad-operator",
        {"mcp": {"allowFrom": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}]}},
        "operator",
    ),
    ("name-starts-with-digit", {"__name__": "9lives"}, "metadata.name must start with a letter"),
    ("mcp-server-without-url", {"tools": {"mcpServers": [{"name": "search"}]}}, "spec.tools.mcpServers[0].url"),
    ("mcp-server-url-not-http", {"tools": {"mcpServers": [{"name": "search", "url": "ftp://x"}]}}, "spec.tools.mcpServers[0].url"),
    (
        "mcp-servers-same-name",
        {"tools": {"mcpServers": [{"name": "search", "url": "http://a"}, {"name": "search", "url": "http://b"}]}},
        "spec.tools.mcpServers[1]",
    ),
    (
        "mcp-header-value-and-secret",
        {"tools": {"mcpServers": [{"name": "s", "url": "http://s", "headers": [{"name": "A", "value": "v", "valueFrom": SECRET}]}]}},
        "set exactly one of value and valueFrom",
    ),
    ("max-turns-out-of-range", {"tools": {"maxTurns": 0}}, "spec.tools.maxTurns"),
    ("delegation-depth-out-of-range", {"tools": {"maxDelegationDepth": 100}}, "spec.tools.maxDelegationDepth"),
    ("tool-allowed-and-denied", {"tools": {"allow": ["broadcast"], "deny": ["broadcast"]}}, "a tool cannot be both allowed and denied"),
    ("agent-tool-not-a-dns-label", {"tools": {"agents": [{"name": "Bad_Name"}]}}, "spec.tools.agents[0].name"),
    (
        "cron-not-five-fields",
        {"triggers": {"cron": [{"name": "n", "schedule": "hourly", "capability": "c"}]}},
        "spec.triggers.cron[0].schedule",
    ),
    ("cron-without-capability", {"triggers": {"cron": [{"name": "n", "schedule": "0 * * * *"}]}}, "spec.triggers.cron[0].capability"),
    ("webhook-without-key", {"triggers": {"webhooks": [{"name": "n", "capability": "c"}]}}, "spec.triggers.webhooks[0].secretKeyRef"),
    (
        "trigger-names-shared",
        {
            "triggers": {
                "cron": [{"name": "n", "schedule": "0 * * * *", "capability": "c"}],
                "webhooks": [{"name": "n", "capability": "c", "secretKeyRef": {"name": "k", "key": "k"}}],
            }
        },
        "a cron trigger and a webhook cannot share a name",
    ),
]


def manifest(spec: dict[str, Any]) -> dict[str, Any]:
    spec = dict(spec)
    name = spec.pop("__name__", "invalid")
    return {"apiVersion": "kubeswarm.io/v1alpha1", "kind": "Agent", "metadata": {"name": name}, "spec": spec}


def swarm_manifest(spec: dict[str, Any]) -> dict[str, Any]:
    """The same spec as a Swarm member's template (the name as the member's)."""
    spec = dict(spec)
    member = {"name": spec.pop("__name__", "invalid"), "template": spec}
    return {"apiVersion": "kubeswarm.io/v1alpha1", "kind": "Swarm", "metadata": {"name": "invalid"}, "spec": {"agents": [member]}}


@pytest.fixture(scope="module")
def crd_namespace(cluster: KubeAccess) -> Iterator[Namespace]:
    install_crds(cluster)
    cluster.kubectl("create", "namespace", "e2e-validation", check=False)
    yield Namespace(cluster, "e2e-validation")
    cluster.kubectl("delete", "namespace", "e2e-validation", "--wait=false", check=False)


@pytest.mark.parametrize(("spec", "needle"), [(spec, needle) for _, spec, needle in INVALID], ids=[case for case, _, _ in INVALID])
def test_invalid_agent_is_rejected_naming_the_field(crd_namespace: Namespace, spec: dict[str, Any], needle: str) -> None:
    proc = crd_namespace.kubectl("apply", "-f", "-", input=json.dumps(manifest(spec)), check=False)
    assert proc.returncode != 0, f"accepted: {spec}"
    assert needle in proc.stderr, proc.stderr
    # Local mode reads the same manifests through the models and must refuse them too.
    with pytest.raises(ValidationError):
        Agent.model_validate(manifest(spec))


def test_a_valid_agent_is_accepted_and_defaulted(crd_namespace: Namespace) -> None:
    crd_namespace.apply(manifest({"model": {**ANTHROPIC, "apiKeySecretRef": {"name": "k", "key": "k"}}}))
    agent = crd_namespace.get("agent", "invalid")
    assert agent is not None
    assert agent["spec"]["mcp"]["port"] == 8080
    assert agent["spec"]["autoscaling"]["maxReplicas"] == 10
    crd_namespace.kubectl("delete", "agent", "invalid")


@pytest.mark.parametrize(("spec", "needle"), [(spec, needle) for _, spec, needle in INVALID], ids=[case for case, _, _ in INVALID])
def test_a_member_template_is_checked_as_an_agent_spec(crd_namespace: Namespace, spec: dict[str, Any], needle: str) -> None:
    proc = crd_namespace.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(swarm_manifest(spec)), check=False)
    assert proc.returncode != 0, f"accepted: {spec}"
    # The same words, at the member's path.
    assert needle.replace("spec.", "spec.agents[0].template.").replace("metadata.name ", "name ") in proc.stderr, proc.stderr
    with pytest.raises(ValidationError):
        Swarm.model_validate(swarm_manifest(spec))


def test_a_member_template_gets_no_defaults_that_would_override_the_swarms(crd_namespace: Namespace) -> None:
    team = swarm_manifest({"__name__": "scout", "role": "researcher"})
    team["spec"]["defaults"] = {"replicas": 3, "model": {"provider": "http", "name": "hook", "endpoint": "http://hook"}}
    crd_namespace.apply(team)
    stored = crd_namespace.must("swarm", "invalid")
    assert stored["spec"]["agents"][0]["template"] == {"role": "researcher"}
    member = Swarm.model_validate(stored).member_agent_spec(Swarm.model_validate(stored).spec.agents[0])
    assert (member.replicas, member.model.provider) == (3, "http")
    crd_namespace.kubectl("delete", "swarm", "invalid")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_the_shared_manifests_get_their_verdict(crd_namespace: Namespace, case: Case) -> None:
    proc = crd_namespace.kubectl("apply", "--dry-run=server", "-f", str(case.path), check=False)
    if case.refused_with is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0, f"accepted: {case.path}"
        assert case.refused_with in proc.stderr, proc.stderr
