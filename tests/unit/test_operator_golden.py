"""Golden files of what the operator builds: an Agent's children, its HTTPRoute, a Swarm's members and gateway.

Each case renders its objects to ``tests/unit/golden/<case>.yaml``; a change to
any built object shows as a diff of that file.  After an intended change:
``KUBESWARM_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_operator_golden.py`` and review the diff.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeswarm_operator.agent.children import ChildInputs, build_children, config_hash, manifest
from kubeswarm_operator.agent.ingress import agent_route_body
from kubeswarm_operator.kube.kinds import HTTP_ROUTE
from kubeswarm_operator.swarm.gateway import build_gateway
from kubeswarm_operator.swarm.members import build_members
from kubeswarm_runtime.render import MCP_JWT_KEY_ENV, MODEL_API_KEY_ENV, render_runtime_env
from kubeswarm_runtime.resources import Agent, Swarm

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden"
NATS_URL = "nats://nats-0.nats.kubeswarm-system.svc:4222,nats://nats-1.nats.kubeswarm-system.svc:4222"


def agent(name: str, **spec: Any) -> Agent:
    return Agent.model_validate({"metadata": {"name": name, "namespace": "lab", "uid": f"uid-{name}", "generation": 1}, "spec": spec})


MINIMAL = agent("minimal")
FULL = agent(
    "full",
    swarm="research",
    replicas=3,
    image="example.test/runtime:2",
    imagePullPolicy="IfNotPresent",
    role="scout",
    capabilities=["summarize", "search"],
    model={"provider": "anthropic", "name": "claude", "maxTokens": 2048, "apiKeySecretRef": {"name": "llm", "key": "api-key"}},
    mcp={
        "auth": {"mode": "jwt"},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "full.example.test",
            "tls": {"secretName": "full-tls"},
            "annotations": {"example.test/team": "research"},
        },
    },
    env=[
        {"name": "PLAIN", "value": "1"},
        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "extra", "key": "token"}}},
        {"name": "FROM_MAP", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
    ],
    envFrom=[{"configMapRef": {"name": "shared"}}],
    tools={
        "deny": ["broadcast"],
        "maxTurns": 6,
        "mcpServers": [
            {
                "name": "search",
                "url": "http://search.lab.svc:8000/mcp",
                "headers": [
                    {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "search-token", "key": "bearer"}}},
                    {"name": "X-Team", "value": "research"},
                ],
            }
        ],
        "agents": [{"name": "writer", "capability": "write"}],
    },
    resources={"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    nodeSelector={"pool": "agents"},
    tolerations=[{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
    serviceAccountName="scout",
    podAnnotations={"example.test/scrape": "yes"},
    podLabels={"team": "research"},
)
SCALED = agent(
    "scaled",
    model={
        "provider": "http",
        "name": "local",
        "endpoint": "http://sidecar.lab.svc:9000/tasks",
        "awsSecretsManager": {"secretId": "llm", "region": "eu-west-1"},
    },
    mcp={"auth": {"mode": "oidc", "issuer": "https://issuer.example.test", "audience": "kubeswarm"}},
    autoscaling={"enabled": True, "minReplicas": 0, "maxReplicas": 5},
)
ROUTED = agent(
    "routed",
    mcp={"auth": {"mode": "jwt"}, "ingress": {"enabled": True, "kind": "HTTPRoute", "className": "public", "host": "routed.example.test"}},
)


def children_of(agent: Agent, *, scaled_externally: bool = False) -> dict[str, Any]:
    inputs = ChildInputs(
        image="kubeswarm/runtime:0.1.0",
        runtime_env=render_runtime_env(agent, None, namespace="lab", nats_url=NATS_URL),
        nats_url=NATS_URL,
        ingress_namespace="ingress-nginx",
        config_hash=config_hash({("Secret", "llm"): {"api-key": "0123456789abcdef"}, ("ConfigMap", "shared"): None}),
        api_key_env=MODEL_API_KEY_ENV,
        jwt_key_env=MCP_JWT_KEY_ENV,
        scaled_externally=scaled_externally,
    )
    return {kind.kind: built for kind, built in build_children(agent, inputs).items()}


def swarm(**gateway: Any) -> Swarm:
    return Swarm.model_validate(
        {
            "metadata": {"name": "research", "namespace": "lab", "uid": "uid-research", "generation": 2},
            "spec": {
                "defaults": {"model": {"provider": "echo"}, "capabilities": ["summarize"], "mcp": {"auth": {"mode": "jwt"}}},
                "agents": [
                    {"name": "reader", "replicas": 2, "template": {"role": "reader"}},
                    {"name": "writer", "template": {"role": "writer", "autoscaling": {"enabled": True, "maxReplicas": 4}}},
                ],
                "gateway": {"enabled": True, "host": "research.example.test", **gateway},
            },
        }
    )


def swarm_objects(team: Swarm) -> dict[str, Any]:
    members = build_members(team)
    agents = [Agent.model_validate(m) for m in members.manifests.values()]
    gateway = build_gateway(team, agents)
    return {"members": members.manifests, "gateway": {f"{kind.kind}/{name}": obj for (kind, name), obj in gateway.items()}}


CASES: dict[str, Callable[[], Any]] = {
    "agent-minimal": lambda: children_of(MINIMAL),
    "agent-full": lambda: children_of(FULL),
    "agent-scaled-by-hpa": lambda: children_of(SCALED, scaled_externally=True),
    "agent-httproute": lambda: {"HTTPRoute": manifest(ROUTED, HTTP_ROUTE, agent_route_body(ROUTED) or {})},
    "swarm-gateway-ingress": lambda: swarm_objects(swarm(className="nginx", tls={"secretName": "research-tls"})),
    "swarm-gateway-httproute": lambda: swarm_objects(swarm(kind="HTTPRoute", className="public")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_built_objects_match_their_golden_file(case: str) -> None:
    rendered = yaml.safe_dump(CASES[case](), sort_keys=True, default_flow_style=False)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("KUBESWARM_UPDATE_GOLDEN"):
        path.write_text(rendered)
    assert path.exists(), f"no golden file {path.name}: run with KUBESWARM_UPDATE_GOLDEN=1 and review it"
    assert rendered == path.read_text(), f"{case} differs from {path.name}; if intended, update it with KUBESWARM_UPDATE_GOLDEN=1"
