"""What a Swarm owns and reports, as pure functions of the Swarm and its members (no cluster needed).

Members are the Agents the Swarm lists (``spec.agents``, built here and owned
by it) and the Agents that name it in ``spec.swarm``; both count in its status
and get a route in its gateway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubeswarm_runtime.resources import API_VERSION, Agent, Condition, Phase, Swarm, SwarmMember, SwarmStatus
from pydantic import ValidationError

from .children import INGRESS, MANAGED_BY, MANAGED_BY_LABEL, SPEC_HASH_ANNOTATION, SWARM_LABEL, Kind, controller_reference, digest
from .ingress import HTTP_ROUTE, gateway_ingress_body, gateway_name, gateway_route_body, gateway_route_name
from .status import condition, stamp

Manifest = dict[str, Any]

AGENT = Kind(API_VERSION, "Agent", "agents")
SWARM = Kind(API_VERSION, "Swarm", "swarms")


def owner_reference(swarm: Swarm) -> Manifest:
    return controller_reference("Swarm", swarm.metadata.name, swarm.metadata.uid)


def swarm_labels(swarm: Swarm) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, SWARM_LABEL: swarm.metadata.name}


def owned(swarm: Swarm, kind: Kind, name: str, body: Manifest, annotations: Mapping[str, str] | None = None) -> Manifest:
    """An object the Swarm owns, with our labels and the hash of its own content (as an Agent's children carry)."""
    meta: Manifest = {
        "name": name,
        "namespace": swarm.metadata.namespace,
        "labels": swarm_labels(swarm),
        "ownerReferences": [owner_reference(swarm)],
    }
    content = {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta, **body}
    meta["annotations"] = {**(annotations or {}), SPEC_HASH_ANNOTATION: digest(content)}
    return content


def build_member(swarm: Swarm, member: SwarmMember) -> Manifest:
    """A member Agent: spec.defaults, then its template, then its replicas; raises ValueError if that is no valid Agent spec.

    Only the fields the Swarm sets are in the manifest (server-side apply owns
    exactly those).  Replicas are left out when the member autoscales, so the
    autoscaler's writes are not undone by the next apply.
    """
    spec = swarm.spec.member_spec(member)
    fields = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    fields["swarm"] = swarm.metadata.name
    if spec.autoscaling.enabled:
        fields.pop("replicas", None)
    return owned(swarm, AGENT, member.name, {"spec": fields})


@dataclass(frozen=True)
class Members:
    """The Agents a Swarm wants (by name) and the spec errors of those it cannot build."""

    manifests: dict[str, Manifest]
    invalid: dict[str, str]


def build_members(swarm: Swarm) -> Members:
    manifests, invalid = {}, {}
    for member in swarm.spec.agents:
        try:
            manifests[member.name] = build_member(swarm, member)
        except ValidationError as error:
            invalid[member.name] = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in error.errors(include_url=False)
            )
    return Members(manifests, invalid)


def controlled_by(body: Mapping[str, Any], swarm: Swarm) -> bool:
    refs = body.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == swarm.metadata.uid and ref.get("controller") for ref in refs)


def stale_members(swarm: Swarm, agents: Sequence[Mapping[str, Any]]) -> list[str]:
    """Agents this Swarm created that its spec no longer lists (to be deleted)."""
    listed = {member.name for member in swarm.spec.agents}
    return sorted(a["metadata"]["name"] for a in agents if controlled_by(a, swarm) and a["metadata"]["name"] not in listed)


def joined(swarm: Swarm, agents: Sequence[Agent]) -> list[Agent]:
    """Every Agent of the swarm's namespace that names it (its own members do)."""
    return sorted(
        (a for a in agents if a.metadata.namespace == swarm.metadata.namespace and a.spec.swarm == swarm.metadata.name),
        key=lambda a: a.metadata.name,
    )


def capabilities(members: Sequence[Agent]) -> list[str]:
    return sorted({capability for agent in members for capability in agent.spec.capabilities})


# -- the gateway


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
        for agent in members
        if agent.spec.mcp.enabled
    }


# -- status


def ready(agent: Agent) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (agent.status.conditions if agent.status else []))


def swarm_phase(members: Sequence[Agent], nats_ok: bool, invalid: Mapping[str, str]) -> Phase:
    if invalid or any(a.status is not None and a.status.phase is Phase.FAILED for a in members):
        return Phase.FAILED if not members else Phase.DEGRADED
    ready_count = sum(ready(a) for a in members)
    if not members or ready_count == 0:
        return Phase.PENDING
    if ready_count < len(members) or not nats_ok:
        return Phase.DEGRADED
    return Phase.RUNNING


def ready_condition(members: Sequence[Agent], nats_ok: bool, invalid: Mapping[str, str]) -> Condition:
    if invalid:
        detail = "; ".join(f"{name}: {error}" for name, error in sorted(invalid.items()))
        return condition("Ready", False, "InvalidMember", f"member spec is not a valid Agent spec: {detail}")
    waiting = [a.metadata.name for a in members if not ready(a)]
    if waiting:
        return condition("Ready", False, "AgentsNotReady", f"not ready: {', '.join(waiting)}")
    if not nats_ok:
        return condition("Ready", False, "NatsNotReady", "the swarm's streams cannot be managed (see NatsReady)")
    if not members:
        return condition("Ready", True, "NoAgents", "the swarm has no agents")
    return condition("Ready", True, "AllAgentsReady", f"{len(members)} agents ready")


@dataclass(frozen=True)
class SwarmObserved:
    """What the operator found for a Swarm besides its members."""

    nats: Condition
    streams: Mapping[str, int] | None  # None: unknown (NATS unreachable), keep the last counts
    invalid: Mapping[str, str]
    ingress: Condition | None = None  # IngressReady of the gateway, when enabled
    endpoint: str | None = None


def compute_swarm_status(swarm: Swarm, members: Sequence[Agent], observed: SwarmObserved, now: str) -> SwarmStatus:
    old = swarm.status or SwarmStatus()
    nats_ok = observed.nats.status == "True"
    conditions = [ready_condition(members, nats_ok, observed.invalid), observed.nats]
    if observed.ingress is not None:
        conditions.append(observed.ingress)
    return SwarmStatus(
        phase=swarm_phase(members, nats_ok, observed.invalid),
        agents=len(members),
        ready_agents=sum(ready(a) for a in members),
        conditions=stamp(conditions, old.conditions, swarm.metadata.generation, now),
        streams=dict(observed.streams) if observed.streams is not None else old.streams,
        observed_generation=swarm.metadata.generation,
        endpoint=observed.endpoint,
    )
