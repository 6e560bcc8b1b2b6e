"""External access to MCP endpoints (pure): an Agent's HTTPRoute, the HTTPRoute rules a Swarm's gateway shares, and IngressReady.

An Agent's own Ingress is built with its other children (``children.build_ingress``);
the Gateway API alternative is built here, the swarm-wide gateway in :mod:`..swarm.gateway`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubeswarm_runtime.resources import Agent, Condition

from ..kube.conditions import condition
from ..kube.kinds import INGRESS, Kind, Manifest
from .children import OAUTH_METADATA_PATH


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
        rule["filters"] = [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": rewrite_to}}}]
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
    accepted = [p for p in parents if any(c.get("type") == "Accepted" and c.get("status") == "True" for c in p.get("conditions", []))]
    if accepted:
        return None
    return f"HTTPRoute {entry.name!r} is not accepted by a Gateway yet; does the Gateway named in className exist?"


def _first_address(exposures: Sequence[Exposure]) -> str | None:
    for entry in exposures:
        for address in (entry.live or {}).get("status", {}).get("loadBalancer", {}).get("ingress") or []:
            return str(address.get("hostname") or address.get("ip"))
    return None
