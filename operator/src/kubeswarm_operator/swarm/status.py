"""A Swarm's status from its members and what the operator found (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubeswarm_runtime.names import SwarmNames
from kubeswarm_runtime.resources import Agent, Condition, Phase, Swarm, SwarmStatus

from ..kube.conditions import condition, stamp


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
    ready_agents = sum(ready(a) for a in members)
    return SwarmStatus(
        phase=swarm_phase(members, nats_ok, observed.invalid),
        agents=len(members),
        ready_agents=ready_agents,
        ready=f"{ready_agents}/{len(members)}",
        conditions=stamp(conditions, old.conditions, swarm.metadata.generation, now),
        streams=dict(observed.streams) if observed.streams is not None else old.streams,
        # The dead-letter stream's count, read with the others: no request of its own.
        dead_letters=observed.streams.get(SwarmNames(swarm.subject_prefix).dlq_stream, 0)
        if observed.streams is not None
        else old.dead_letters,
        observed_generation=swarm.metadata.generation,
        endpoint=observed.endpoint,
    )
