"""An Agent's status from what its children report (pure), and the transitions worth an Event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubeswarm_runtime.resources import Agent, AgentStatus, Condition, Phase

from ..kube.conditions import Event, condition, condition_events, stamp
from ..kube.kinds import INGRESS, Manifest
from .children import endpoint, selector_string
from .ingress import Exposure, ingress_ready


@dataclass(frozen=True)
class Observed:
    """What the cluster says about an Agent's children."""

    deployment: Manifest | None
    nats_url: str
    missing_refs: Sequence[str] = ()  # e.g. 'secret "x" has no key "y"'
    ingress_wanted: bool = False
    ingress: Manifest | None = None
    conflicts: Sequence[str] = ()  # children left alone: an object we do not own holds the name


@dataclass(frozen=True)
class Readiness:
    wanted: int
    current: int
    ready: int
    updated: int
    failure: str | None = None  # a Deployment condition that will not heal by waiting
    rolled_out: bool = True


def deployment_observed(deployment: Manifest) -> bool:
    """The Deployment's controller has reported on its current spec (a new one has not: it has no status yet)."""
    generation = deployment.get("metadata", {}).get("generation")
    return generation is not None and deployment.get("status", {}).get("observedGeneration", 0) >= generation


def deployment_settling(deployment: Manifest) -> bool:
    """Its controller has reported on its current spec and its pods are still coming up: another step follows soon."""
    status = deployment.get("status", {})
    wanted = int(deployment.get("spec", {}).get("replicas", 1))
    return deployment_observed(deployment) and min(int(status.get("readyReplicas", 0)), int(status.get("updatedReplicas", 0))) < wanted


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


def ready_condition(agent: Agent, observed: Observed, pods: Readiness | None) -> Condition:
    name = agent.metadata.name
    if observed.conflicts:
        return condition("Ready", False, "NameConflict", "; ".join(observed.conflicts))
    if pods is None:
        return condition("Ready", False, "DeploymentMissing", f"waiting for Deployment {name!r} to be created")
    if pods.failure:
        return condition("Ready", False, "ProgressDeadlineExceeded", pods.failure)
    if observed.missing_refs:
        # Not ready while a Secret or key the pods read is missing, even if pods run: a new pod could not start.
        return condition("Ready", False, "SecretsNotReady", "; ".join(observed.missing_refs))
    if pods.wanted == 0:
        woken = (
            " (the first task published brings one up)"
            if agent.spec.autoscaling.enabled and agent.spec.autoscaling.min_replicas == 0
            else ""
        )
        return condition("Ready", True, "ScaledToZero", f"spec.replicas is 0: idle{woken}")
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
        conditions.append(ingress_ready([Exposure(INGRESS, agent.metadata.name, observed.ingress)]))
    return conditions


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
    if pods is not None and pods.wanted == 0 and pods.current == 0:
        return Phase.IDLE  # no pod, on purpose: not a failure (the first task brings one when it autoscales from zero)
    if pods is None or (pods.ready == 0 and pods.wanted > 0):
        return Phase.PENDING
    if pods.ready < pods.wanted:
        return Phase.DEGRADED
    return Phase.RUNNING


def compute_status(agent: Agent, observed: Observed, now: str) -> AgentStatus:
    old = agent.status or AgentStatus()
    pods = readiness(agent, observed.deployment) if observed.deployment is not None else None
    return AgentStatus(
        phase=phase(pods),
        replicas=pods.current if pods else 0,
        ready_replicas=pods.ready if pods else 0,
        ready=f"{pods.ready if pods else 0}/{pods.wanted if pods else agent.spec.replicas}",
        selector=selector_string(agent),
        observed_generation=agent.metadata.generation,
        endpoint=endpoint(agent),
        backlog=old.backlog,
        conditions=stamp(compute_conditions(agent, observed, pods), old.conditions, agent.metadata.generation, now),
    )


def transitions(old: AgentStatus | None, new: AgentStatus) -> list[Event]:
    """Events for condition changes (NatsReady follows pod readiness, which the Ready event already tells) and for
    a phase change for the worse."""
    events = condition_events(old.conditions if old else [], new.conditions, quiet=("NatsReady",))
    troubled = new.phase in (Phase.FAILED, Phase.DEGRADED)
    if old is not None and old.phase is not None and new.phase is not None and old.phase != new.phase and troubled:
        events.append(Event("Warning", f"Phase{new.phase.value}", f"phase {old.phase.value} -> {new.phase.value}"))
    return events
