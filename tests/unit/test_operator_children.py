"""The pure build_* functions: an Agent in, child manifests out."""

from __future__ import annotations

from typing import Any

import pytest
from kubeswarm_operator.agent import children
from kubeswarm_operator.agent.children import ChildInputs, build_children, build_deployment, build_network_policy
from kubeswarm_operator.kube import kinds, owned
from kubeswarm_operator.kube.drift import contains
from kubeswarm_runtime.resources import Agent

pytestmark = pytest.mark.unit


def agent(**spec: Any) -> Agent:
    return Agent.model_validate({"metadata": {"name": "scout", "namespace": "lab", "uid": "u-1", "generation": 1}, "spec": spec})


INPUTS = ChildInputs(
    image="runtime:1",
    runtime_env={"KUBESWARM_AGENT": "scout", "KUBESWARM_NATS__URL": "nats://nats.lab:4222"},
    nats_url="nats://nats.lab:4222",
    ingress_namespace="ingress-nginx",
    config_hash="h1",
    api_key_env="KUBESWARM_MODEL__API_KEY",
    jwt_key_env="KUBESWARM_MCP__JWT_KEY",
)


def deployment(a: Agent, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"image": "runtime:1", "config_hash": "h1", "api_key_env": "K_API", "jwt_key_env": "K_JWT", **kw}
    return build_deployment(a, **args)


def test_every_child_is_owned_labelled_and_hashed() -> None:
    built = build_children(agent(), INPUTS)
    assert built[kinds.PDB] is None
    assert built[kinds.INGRESS] is None
    for kind, manifest in built.items():
        if manifest is None:
            continue
        meta = manifest["metadata"]
        assert manifest["kind"] == kind.kind
        assert meta["namespace"] == "lab"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "kubeswarm.io/v1alpha1",
                "kind": "Agent",
                "name": "scout",
                "uid": "u-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"][owned.MANAGED_BY_LABEL] == "kubeswarm-operator"
        assert owned.SPEC_HASH_ANNOTATION in meta["annotations"]


def test_building_twice_gives_the_same_manifests() -> None:
    assert build_children(agent(), INPUTS) == build_children(agent(), INPUTS)


def test_pod_runs_restricted_with_probes_on_the_runtime_endpoints() -> None:
    pod = deployment(agent())["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "mcp"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "mcp"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["command"] == ["python", "-m", "kubeswarm_runtime"]
    assert container["resources"] == children.DEFAULT_RESOURCES


def test_secrets_reach_the_pod_as_references_never_values() -> None:
    a = agent(
        model={"provider": "anthropic", "name": "m", "apiKeySecretRef": {"name": "keys", "key": "anthropic"}}, mcp={"auth": {"mode": "jwt"}}
    )
    env = deployment(a)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "K_API", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "anthropic"}}},
        {"name": "K_JWT", "valueFrom": {"secretKeyRef": {"name": "scout-credentials", "key": "jwt-key"}}},
    ]
    assert children.build_secret(a).get("data") is None


def test_config_hash_changes_the_pod_template() -> None:
    first = deployment(agent(), config_hash="a")
    second = deployment(agent(), config_hash="b")
    assert first["spec"]["template"] != second["spec"]["template"]
    assert first["metadata"]["annotations"] != second["metadata"]["annotations"]


def test_user_pod_labels_cannot_break_the_selector() -> None:
    template = deployment(agent(podLabels={"kubeswarm.io/agent": "other", "team": "x"}))["spec"]["template"]
    assert template["metadata"]["labels"]["kubeswarm.io/agent"] == "scout"
    assert template["metadata"]["labels"]["team"] == "x"


def test_an_hpa_owns_replicas() -> None:
    assert "replicas" not in deployment(agent(replicas=3), with_replicas=False)["spec"]
    assert deployment(agent(replicas=3))["spec"]["replicas"] == 3


def test_pdb_only_with_several_replicas() -> None:
    assert children.build_pdb(agent(replicas=1)) is None
    pdb = children.build_pdb(agent(replicas=2))
    assert pdb is not None
    assert pdb["spec"]["maxUnavailable"] == 1


def test_network_policy_denies_by_default_and_opens_what_the_runtime_needs() -> None:
    policy = build_network_policy(
        agent(model={"provider": "http", "name": "m", "endpoint": "http://sidecar:9000/task"}),
        nats_url="nats://a:4222,nats://b:4333",
        ingress_namespace="edge",
    )["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = sorted({p["port"] for rule in policy["egress"] for p in rule["ports"]})
    assert egress_ports == [53, 4222, 4333, 9000]
    mcp_rule = policy["ingress"][0]
    # The ingress controller, and (allowFrom unset) every pod of the Agent's namespace: status.endpoint works there.
    assert mcp_rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "edge"}}}, {"podSelector": {}}]
    assert policy["ingress"][1]["ports"] == [{"port": "metrics", "protocol": "TCP"}]


def test_mcp_allow_from_replaces_the_own_namespace_default() -> None:
    def mcp_peers(mcp: dict[str, Any]) -> list[dict[str, Any]]:
        policy = build_network_policy(agent(mcp=mcp), nats_url="nats://n:4222", ingress_namespace="edge")
        peers: list[dict[str, Any]] = policy["spec"]["ingress"][0]["from"]
        return peers[1:]  # after the ingress controller's namespace

    clients = {
        "namespaceSelector": {"matchLabels": {"team": "a"}},
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
    }
    assert mcp_peers({"allowFrom": [clients]}) == [clients]
    assert mcp_peers({"allowFrom": []}) == []  # only the ingress controller
    assert mcp_peers({}) == [{"podSelector": {}}]


def test_ingress_is_sse_safe_and_sets_the_endpoint() -> None:
    a = agent(
        mcp={
            "auth": {"mode": "jwt"},
            "ingress": {"enabled": True, "host": "agents.example.com", "className": "nginx", "tls": {"secretName": "tls"}},
        }
    )
    ingress = children.build_ingress(a)
    assert ingress is not None
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {"name": "scout", "port": {"name": "mcp"}}
    assert children.endpoint(a) == "https://agents.example.com/mcp"
    assert children.endpoint(agent()) == "http://scout.lab.svc:8080/mcp"


def test_referenced_objects_cover_env_and_env_from() -> None:
    a = agent(
        model={"provider": "anthropic", "name": "m", "apiKeySecretRef": {"name": "keys", "key": "k"}},
        env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "x"}}}],
        envFrom=[{"secretRef": {"name": "bulk"}}],
    )
    assert children.referenced_objects(a) == {
        ("ConfigMap", "scout-runtime"),
        ("Secret", "scout-credentials"),
        ("Secret", "keys"),
        ("ConfigMap", "cm"),
        ("Secret", "bulk"),
    }


@pytest.mark.parametrize(
    ("live", "want", "held"),
    [
        ({"a": 1, "b": 2}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
        ({}, {"labels": {}}, True),
        ({"ports": [{"port": 1, "protocol": "TCP"}]}, {"ports": [{"port": 1}]}, True),
        ({"ports": [{"port": 1}, {"port": 2}]}, {"ports": [{"port": 1}]}, False),
        ({"memory": "128"}, {"memory": 128}, True),
        ({"x": False}, {"x": 0}, False),
    ],
)
def test_contains(live: Any, want: Any, held: bool) -> None:
    assert contains(live, want) is held


def test_network_policy_egress_goes_only_where_the_agent_talks() -> None:
    spec = {
        "model": {"provider": "http", "name": "m", "endpoint": "http://10.2.0.7:9000/task"},
        "tools": {"mcpServers": [{"name": "docs", "url": "https://docs.tools.svc.cluster.local/mcp"}]},
    }
    policy = build_network_policy(
        agent(**spec), nats_url="nats://nats.kubeswarm-system.svc:4222,nats://nats-1:4223", ingress_namespace="edge"
    )["spec"]

    def namespace(name: str) -> list[dict[str, Any]]:
        return [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}]

    assert {
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    } in policy["egress"]
    expected = [
        {"ports": [{"port": 4222, "protocol": "TCP"}], "to": namespace("kubeswarm-system")},
        {"ports": [{"port": 4223, "protocol": "TCP"}], "to": namespace("lab")},  # a bare name: the Agent's namespace
        {"ports": [{"port": 9000, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.2.0.7/32"}}]},
        {"ports": [{"port": 443, "protocol": "TCP"}], "to": namespace("tools")},
    ]
    for rule in expected:
        assert rule in policy["egress"], rule
    assert len(policy["egress"]) == 5  # DNS and the four above: nothing open to any destination


def test_a_public_provider_api_is_open_by_port_only() -> None:
    policy = build_network_policy(
        agent(model={"provider": "anthropic", "name": "m", "apiKeySecretRef": {"name": "k", "key": "v"}}),
        nats_url="nats://nats.example.com:4222",
        ingress_namespace="edge",
        dns_selector={},
    )["spec"]
    assert policy["egress"] == [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        {"ports": [{"port": 4222, "protocol": "TCP"}]},
        {"ports": [{"port": 443, "protocol": "TCP"}]},
    ]
