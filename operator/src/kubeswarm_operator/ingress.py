"""External access to MCP endpoints (pure): an Agent's HTTPRoute, a Swarm's gateway, and whether they are served.

An Agent's own Ingress is built with its other children (``children.build_ingress``);
the Gateway API alternative and the swarm-wide gateway are built here.

The swarm gateway serves ``/agents/<agent>/mcp`` of one host; each agent's
runtime serves ``/mcp``, so the prefix is rewritten.  MCP clients discover
the authorization server through the RFC 9728 protected-resource metadata at
``/.well-known/oauth-protected-resource<resource path>``, so that path is
routed to the same agent (and rewritten the same way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubeswarm_runtime.resources import Agent, Condition, GatewaySpec, Swarm

from .children import INGRESS, OAUTH_METADATA_PATH, Kind, sse_annotations
from .status import condition

Manifest = dict[str, Any]

HTTP_ROUTE = Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes")
NGINX = "nginx.ingress.kubernetes.io"
RUNTIME_MCP_PATH = "/mcp"


def agent_mcp_path(agent: str) -> str:
    """Where the swarm gateway serves an agent's MCP endpoint."""
    return f"/agents/{agent}/mcp"


def route_timeouts(timeout_seconds: int) -> Manifest:
    # Gateway API has no buffering knob; the request timeout bounds how long an SSE stream may stay open.
    return {"request": f"{timeout_seconds}s"}


def backend(agent: Agent) -> Manifest:
    return {"name": agent.metadata.name, "port": agent.spec.mcp.port}


def prefix_rule(path: str, agent: Agent, rewrite_to: str | None = None) -> Manifest:
    rule: Manifest = {
        "matches": [{"path": {"type": "PathPrefix", "value": path}}],
        "backendRefs": [backend(agent)],
        "timeouts": route_timeouts(agent.spec.mcp.timeout_seconds),
    }
    if rewrite_to is not None:
        rule["filters"] = [
            {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": rewrite_to}}}
        ]
    return rule


def route_spec(gateway: str | None, host: str, rules: Sequence[Manifest]) -> Manifest:
    spec: Manifest = {"hostnames": [host], "rules": list(rules)}
    if gateway:
        spec = {"parentRefs": [{"name": gateway}], **spec}
    return {"spec": spec}


def agent_route_body(agent: Agent) -> Manifest | None:
    """The body of an Agent's HTTPRoute (``spec.mcp.ingress.kind: HTTPRoute``), or None when it wants none."""
    mcp = agent.spec.mcp
    if not (mcp.enabled and mcp.ingress.enabled and mcp.ingress.kind == "HTTPRoute" and mcp.ingress.host):
        return None
    rules = [prefix_rule(mcp.ingress.path, agent), prefix_rule(OAUTH_METADATA_PATH, agent)]
    return route_spec(mcp.ingress.class_name, mcp.ingress.host, rules)


# -- the swarm gateway


def gateway_name(swarm: Swarm) -> str:
    return f"{swarm.metadata.name}-gateway"


def gateway_route_name(swarm: Swarm, agent: Agent) -> str:
    # One HTTPRoute per member: Gateway API allows 16 rules a route, a member takes 2.
    return f"{gateway_name(swarm)}-{agent.metadata.name}"


def exposed(members: Sequence[Agent]) -> list[Agent]:
    return sorted((a for a in members if a.spec.mcp.enabled), key=lambda a: a.metadata.name)


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
        for agent in exposed(members)
    ]
    spec: Manifest = {"rules": [{"host": gateway.host, "http": {"paths": paths}}]}
    if gateway.class_name:
        spec = {"ingressClassName": gateway.class_name, **spec}
    if gateway.tls:
        spec["tls"] = [{"hosts": [gateway.host], "secretName": gateway.tls.secret_name}]
    # One read timeout for the whole Ingress: the longest any member allows.
    timeout = max((a.spec.mcp.timeout_seconds for a in exposed(members)), default=3600)
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


# -- readiness


@dataclass(frozen=True)
class Exposure:
    """An external entry as the cluster holds it: its kind, and the live object (None if missing)."""

    kind: Kind
    name: str
    live: Mapping[str, Any] | None
    problem: str | None = None  # why it cannot be made (e.g. the Gateway API is not installed)


def ingress_ready(exposures: Sequence[Exposure]) -> Condition:
    """IngressReady: every Ingress has a load-balancer address and every HTTPRoute is accepted by its Gateway."""
    for entry in exposures:
        if entry.problem:
            return condition("IngressReady", False, "Unsupported", entry.problem)
        if entry.live is None:
            return condition("IngressReady", False, "IngressMissing", f"waiting for {entry.kind.kind} {entry.name!r} to be created")
        waiting = (_ingress_waiting if entry.kind is INGRESS else _route_waiting)(entry)
        if waiting:
            return condition("IngressReady", False, "AwaitingAddress", waiting)
    names = ", ".join(f"{e.kind.kind} {e.name}" for e in exposures)
    served = _first_address(exposures)
    return condition("IngressReady", True, "AddressAssigned", f"{names} served" + (f" at {served}" if served else ""))


def _ingress_waiting(entry: Exposure) -> str | None:
    assert entry.live is not None
    if entry.live.get("status", {}).get("loadBalancer", {}).get("ingress"):
        return None
    return f"Ingress {entry.name!r} has no address yet; is an ingress controller for its class running?"


def _route_waiting(entry: Exposure) -> str | None:
    assert entry.live is not None
    parents = entry.live.get("status", {}).get("parents") or []
    accepted = [
        p for p in parents if any(c.get("type") == "Accepted" and c.get("status") == "True" for c in p.get("conditions", []))
    ]
    if accepted:
        return None
    return f"HTTPRoute {entry.name!r} is not accepted by a Gateway yet; does the Gateway named in className exist?"


def _first_address(exposures: Sequence[Exposure]) -> str | None:
    for entry in exposures:
        for address in (entry.live or {}).get("status", {}).get("loadBalancer", {}).get("ingress") or []:
            return str(address.get("hostname") or address.get("ip"))
    return None
