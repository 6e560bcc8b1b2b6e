"""A Swarm's members, as pure functions of the Swarm (no cluster needed).

Members are the Agents the Swarm lists (``spec.agents``, built here and owned
by it) and the Agents that name it in ``spec.swarm``; both count in its status
and get a route in its gateway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubeswarm_runtime.manifests import describe_errors, member_source
from kubeswarm_runtime.resources import Agent, AgentSpec, Swarm, SwarmMember
from pydantic import ValidationError

from ..kube.kinds import AGENT, Kind, Manifest
from ..kube.owned import MANAGED_BY, MANAGED_BY_LABEL, SWARM_LABEL, controlled_by, controller_reference
from ..kube.owned import owned as owned_object


def owner_reference(swarm: Swarm) -> Manifest:
    return controller_reference("Swarm", swarm.metadata.name, swarm.metadata.uid)


def swarm_labels(swarm: Swarm) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, SWARM_LABEL: swarm.metadata.name}


def owned(swarm: Swarm, kind: Kind, name: str, body: Manifest, annotations: Mapping[str, str] | None = None) -> Manifest:
    """An object the Swarm owns, with our labels and the hash of its own content (as an Agent's children carry)."""
    return owned_object(
        kind,
        name,
        swarm.metadata.namespace,
        labels=swarm_labels(swarm),
        owner=owner_reference(swarm),
        body=body,
        annotations=annotations,
    )


def build_member(swarm: Swarm, member: SwarmMember) -> Manifest:
    """A member Agent: spec.defaults, then its template, then its replicas; raises ValueError if that is no valid Agent spec.

    Only the fields the Swarm sets are in the manifest (server-side apply owns
    exactly those).  Replicas are left out when the member autoscales, so the
    autoscaler's writes are not undone by the next apply.
    """
    spec = swarm.member_agent_spec(member)
    fields = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if spec.autoscaling.enabled:
        fields.pop("replicas", None)
    return owned(swarm, AGENT, member.name, {"spec": fields})


def replicas_undone(swarm: Swarm, live: Mapping[str, Any], manifest: Manifest) -> str | None:
    """Why a member's replicas are about to be put back, when someone (``kubectl scale``) changed what the Swarm sets.

    A member whose replicas the Swarm does not set (none in spec.defaults, its template or
    spec.agents[].replicas; or autoscaling) is not in the manifest and keeps any scale.
    """
    want, have = manifest["spec"].get("replicas"), live.get("spec", {}).get("replicas")
    if want is None or have is None or want == have:
        return None
    name = manifest["metadata"]["name"]
    return (
        f"replicas {have} put back to {want}: Swarm {swarm.metadata.name} sets this member's replicas; "
        f"scale it there (spec.agents[name={name}].replicas), or enable autoscaling in its template"
    )


@dataclass(frozen=True)
class Members:
    """The Agents a Swarm wants (by name) and the spec errors of those it cannot build."""

    manifests: dict[str, Manifest]
    invalid: dict[str, str]


def build_members(swarm: Swarm) -> Members:
    manifests, invalid = {}, {}
    for index, member in enumerate(swarm.spec.agents):
        try:
            manifests[member.name] = build_member(swarm, member)
        except ValidationError as error:  # in the Swarm's own words, as local mode says it
            invalid[member.name] = "; ".join(describe_errors(error, AgentSpec, under=member_source(swarm, index)))
    return Members(manifests, invalid)


def stale_members(swarm: Swarm, agents: Sequence[Mapping[str, Any]]) -> list[str]:
    """Agents this Swarm created that its spec no longer lists (to be deleted)."""
    listed = {member.name for member in swarm.spec.agents}
    return sorted(a["metadata"]["name"] for a in agents if controlled_by(a, swarm.metadata.uid) and a["metadata"]["name"] not in listed)


def joined(swarm: Swarm, agents: Sequence[Agent]) -> list[Agent]:
    """Every Agent of the swarm's namespace that names it (its own members do)."""
    return sorted(
        (a for a in agents if a.metadata.namespace == swarm.metadata.namespace and a.spec.swarm == swarm.metadata.name),
        key=lambda a: a.metadata.name,
    )


def capabilities(members: Sequence[Agent]) -> list[str]:
    return sorted({capability for agent in members for capability in agent.spec.capabilities})
