"""An Agent's status from what its children report (pure), and the transitions worth an Event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubeswarm_runtime.resources import Agent, AgentStatus, Condition, Phase, SwarmStatus

from .children import endpoint, selector_string

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Observed:
    """What the cluster says about an Agent's children."""

    deployment: Manifest | None
    nats_url: str
    missing_refs: Sequence[str] = ()  # e.g. 'secret "x" has no key "y"'
    ingress_wanted: bool = False
    ingress: Manifest | None = None
    ingress_problem: str | None = None  # why the requested ingress cannot be made


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Readiness:
    wanted: int
    current: int
    ready: int
    updated: int
    failure: str | None = None  # a Deployment condition that will not heal by waiting
    rolled_out: bool = True


def readiness(agent: Agent, deployment: Manifest) -> Readiness:
    spec = deployment.get("spec", {})
    status = deployment.get("status", {})
    wanted = int(spec.get("replicas", agent.spec.replicas))
    failure = None
    for cond in status.get("conditions", []):
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            failure = cond.get("message") or "the rollout exceeded its progress deadline"
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            failure = cond.get("message") or "pods cannot be created"
    current_generation = status.get("observedGeneration", 0) >= deployment.get("metadata", {}).get("generation", 0)
    updated = int(status.get("updatedReplicas", 0))
    return Readiness(
        wanted=wanted,
        current=int(status.get("replicas", 0)),
        ready=int(status.get("readyReplicas", 0)),
        updated=updated,
        failure=failure,
        rolled_out=current_generation and updated >= wanted,
    )


def condition(type_: str, ok: bool | None, reason: str, message: str) -> Condition:
    return Condition(type=type_, status="Unknown" if ok is None else str(ok), reason=reason, message=message)


def ready_condition(agent: Agent, observed: Observed, pods: Readiness | None) -> Condition:
    name = agent.metadata.name
    if pods is None:
        return condition("Ready", False, "DeploymentMissing", f"waiting for Deployment {name!r} to be created")
    if pods.failure:
        return condition("Ready", False, "ProgressDeadlineExceeded", pods.failure)
    if observed.missing_refs:
        # Not ready while a Secret or key the pods read is missing, even if pods run: a new pod could not start.
        return condition("Ready", False, "SecretsNotReady", "; ".join(observed.missing_refs))
    if pods.wanted == 0:
        return condition("Ready", True, "ScaledToZero", "spec.replicas is 0")
    if pods.ready < pods.wanted:
        return condition("Ready", False, "ReplicasNotReady", f"{pods.ready} of {pods.wanted} pods ready")
    if not pods.rolled_out:
        return condition("Ready", True, "RolloutInProgress", f"{pods.updated} of {pods.wanted} pods updated")
    return condition("Ready", True, "AllReplicasReady", f"{pods.ready} of {pods.wanted} pods ready")


def compute_conditions(agent: Agent, observed: Observed, pods: Readiness | None) -> list[Condition]:
    conditions = [ready_condition(agent, observed, pods)]
    if observed.missing_refs:
        conditions.append(condition("SecretsReady", False, "SecretNotFound", "; ".join(observed.missing_refs)))
    else:
        conditions.append(condition("SecretsReady", True, "SecretsFound", "every referenced Secret and ConfigMap key exists"))
    if pods is not None and pods.ready > 0:
        conditions.append(condition("NatsReady", True, "PodsConnected", f"{pods.ready} ready pods reach NATS at {observed.nats_url}"))
    else:
        conditions.append(condition("NatsReady", None, "NoReadyPods", f"no ready pod has connected to NATS at {observed.nats_url} yet"))
    if observed.ingress_wanted:
        conditions.append(ingress_condition(observed))
    return conditions


def ingress_condition(observed: Observed) -> Condition:
    if observed.ingress_problem:
        return condition("IngressReady", False, "Unsupported", observed.ingress_problem)
    if observed.ingress is None:
        return condition("IngressReady", False, "IngressMissing", "waiting for the Ingress to be created")
    addresses = observed.ingress.get("status", {}).get("loadBalancer", {}).get("ingress") or []
    if not addresses:
        name = observed.ingress.get("metadata", {}).get("name")
        message = f"Ingress {name!r} has no address yet; is an ingress controller for its class running?"
        return condition("IngressReady", False, "AwaitingAddress", message)
    first = addresses[0]
    return condition("IngressReady", True, "AddressAssigned", f"served at {first.get('hostname') or first.get('ip')}")


def secrets_gate(conditions: Sequence[Condition]) -> list[Condition]:
    """Ready is False while SecretsReady is False (whoever found it: the reconcile or the AWS sync)."""
    secrets = next((c for c in conditions if c.type == "SecretsReady"), None)
    if secrets is None or secrets.status != "False":
        return list(conditions)
    not_ready = condition("Ready", False, "SecretsNotReady", secrets.message)
    return [not_ready if c.type == "Ready" and c.status == "True" else c for c in conditions]


def phase(pods: Readiness | None) -> Phase:
    if pods is not None and pods.failure:
        return Phase.FAILED
    if pods is None or (pods.ready == 0 and pods.wanted > 0):
        return Phase.PENDING
    if pods.ready < pods.wanted:
        return Phase.DEGRADED
    return Phase.RUNNING


def stamp(new: Sequence[Condition], old: Sequence[Condition], generation: int | None, now: str) -> list[Condition]:
    """Carry lastTransitionTime over from the old condition of the same type and status."""
    before = {c.type: c for c in old}
    out = []
    for cond in new:
        prev = before.get(cond.type)
        since = prev.last_transition_time if prev is not None and prev.status == cond.status else now
        out.append(cond.model_copy(update={"last_transition_time": since, "observed_generation": generation}))
    return out


def compute_status(agent: Agent, observed: Observed, now: str) -> AgentStatus:
    old = agent.status or AgentStatus()
    pods = readiness(agent, observed.deployment) if observed.deployment is not None else None
    return AgentStatus(
        phase=phase(pods),
        replicas=pods.current if pods else 0,
        ready_replicas=pods.ready if pods else 0,
        selector=selector_string(agent),
        observed_generation=agent.metadata.generation,
        endpoint=endpoint(agent),
        backlog=old.backlog,
        conditions=stamp(compute_conditions(agent, observed, pods), old.conditions, agent.metadata.generation, now),
    )


def transitions(old: AgentStatus | None, new: AgentStatus) -> list[Event]:
    """Events for condition changes a human would want in `kubectl describe`.

    A condition seen for the first time is news only when it reports a
    problem (Ready starts out False on every new Agent, so not that one);
    a phase change is news when it is for the worse.
    """
    before = {c.type: c for c in (old.conditions if old else [])}
    events = []
    for cond in new.conditions:
        if cond.type == "NatsReady":
            continue  # follows pod readiness, which the Ready event already tells
        prev = before.get(cond.type)
        first_problem = prev is None and cond.status == "False" and cond.type != "Ready"
        if first_problem or (prev is not None and prev.status != cond.status):
            kind = "Normal" if cond.status == "True" else "Warning"
            events.append(Event(kind, cond.reason, f"{cond.type}: {cond.message}"))
    troubled = new.phase in (Phase.FAILED, Phase.DEGRADED)
    if old is not None and old.phase is not None and new.phase is not None and old.phase != new.phase and troubled:
        events.append(Event("Warning", f"Phase{new.phase.value}", f"phase {old.phase.value} -> {new.phase.value}"))
    return events


def status_patch(status: AgentStatus | SwarmStatus) -> Manifest:
    """An Agent's or a Swarm's status as JSON for a merge patch; unset fields become null so stale values are removed."""
    return status.model_dump(mode="json", by_alias=True, exclude={"conditions"}) | {
        "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in status.conditions]
    }
