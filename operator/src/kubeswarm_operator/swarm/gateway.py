"""A Swarm's gateway (pure): one host for the whole swarm, ``/agents/<agent>/mcp`` routed to each member.

Each agent's runtime serves ``/mcp``, so the prefix is rewritten.  MCP clients
discover the authorization server through the RFC 9728 protected-resource
metadata at ``/.well-known/oauth-protected-resource<resource path>``, so that
path is routed to the same agent (and rewritten the same way).
"""

from __future__ import annotations

from collections.abc import Sequence

from kubeswarm_runtime.resources import Agent, AuthMode, GatewaySpec, Swarm

from ..agent.children import OAUTH_METADATA_PATH, sse_annotations
from ..agent.ingress import prefix_rule, route_spec
from ..kube.kinds import HTTP_ROUTE, INGRESS, Kind, Manifest
from .members import owned

NGINX = "nginx.ingress.kubernetes.io"
RUNTIME_MCP_PATH = "/mcp"


def agent_mcp_path(agent: str) -> str:
    """Where the swarm gateway serves an agent's MCP endpoint."""
    return f"/agents/{agent}/mcp"


def gateway_name(swarm: Swarm) -> str:
    return f"{swarm.metadata.name}-gateway"


def gateway_route_name(swarm: Swarm, agent: Agent) -> str:
    # One HTTPRoute per member: Gateway API allows 16 rules a route, a member takes 2.
    return f"{gateway_name(swarm)}-{agent.metadata.name}"


def exposed(gateway: GatewaySpec, members: Sequence[Agent]) -> list[Agent]:
    """The members the gateway routes to: those serving MCP, with auth unless the gateway allows anonymous callers."""
    return sorted(
        (a for a in members if a.spec.mcp.enabled and (gateway.allow_anonymous or a.spec.mcp.auth.mode is not AuthMode.NONE)),
        key=lambda a: a.metadata.name,
    )


def gateway_ingress_body(gateway: GatewaySpec, members: Sequence[Agent]) -> tuple[Manifest, dict[str, str]]:
    """Body and annotations of the swarm's gateway Ingress (ingress-nginx).

    One regex path per member captures an optional metadata prefix ($1) and
    the path from ``mcp`` on ($2), so a single rewrite target serves both
    ``/agents/a/mcp`` -> ``/mcp`` and
    ``/.well-known/oauth-protected-resource/agents/a/mcp`` ->
    ``/.well-known/oauth-protected-resource/mcp``.
    """
    metadata = OAUTH_METADATA_PATH.lstrip("/").replace(".", r"\.")
    paths = [
        {
            "path": f"/({metadata}/)?agents/{agent.metadata.name}/(mcp.*)",
            "pathType": "ImplementationSpecific",
            "backend": {"service": {"name": agent.metadata.name, "port": {"name": "mcp"}}},
        }
        for agent in exposed(gateway, members)
    ]
    spec: Manifest = {"rules": [{"host": gateway.host, "http": {"paths": paths}}]}
    if gateway.class_name:
        spec = {"ingressClassName": gateway.class_name, **spec}
    if gateway.tls:
        spec["tls"] = [{"hosts": [gateway.host], "secretName": gateway.tls.secret_name}]
    # One read timeout for the whole Ingress: the longest any member allows.
    timeout = max((a.spec.mcp.timeout_seconds for a in exposed(gateway, members)), default=3600)
    annotations = {
        **sse_annotations(timeout),
        f"{NGINX}/use-regex": "true",
        f"{NGINX}/rewrite-target": "/$1$2",
        **gateway.annotations,
    }
    return {"spec": spec}, annotations


def gateway_route_body(gateway: GatewaySpec, agent: Agent) -> Manifest:
    """The HTTPRoute of one member under the swarm gateway."""
    assert gateway.host
    path = agent_mcp_path(agent.metadata.name)
    rules = [
        prefix_rule(path, agent, rewrite_to=RUNTIME_MCP_PATH),
        prefix_rule(OAUTH_METADATA_PATH + path, agent, rewrite_to=OAUTH_METADATA_PATH + RUNTIME_MCP_PATH),
    ]
    return route_spec(gateway.class_name, gateway.host, rules)


def gateway_url(gateway: GatewaySpec) -> str:
    return f"{'https' if gateway.tls else 'http'}://{gateway.host}"


def build_gateway(swarm: Swarm, members: Sequence[Agent]) -> dict[tuple[Kind, str], Manifest]:
    """(kind, name) -> manifest of the swarm gateway's objects; empty when the gateway is off."""
    gateway = swarm.spec.gateway
    if not gateway.enabled:
        return {}
    if gateway.kind == "Ingress":
        body, annotations = gateway_ingress_body(gateway, members)
        return {(INGRESS, gateway_name(swarm)): owned(swarm, INGRESS, gateway_name(swarm), body, annotations)}
    return {
        (HTTP_ROUTE, gateway_route_name(swarm, agent)): owned(
            swarm, HTTP_ROUTE, gateway_route_name(swarm, agent), gateway_route_body(gateway, agent)
        )
        for agent in exposed(gateway, members)
    }
