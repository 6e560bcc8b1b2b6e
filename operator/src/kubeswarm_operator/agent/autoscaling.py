"""Backlog-driven replicas (pure): how many an Agent should run, and why.

``wanted = ceil(backlog / targetBacklogPerReplica)`` within
``[minReplicas, maxReplicas]``.  Up is immediate: a backlog is work waiting.
Down waits until the backlog has allowed fewer replicas for
``scaleDownDelaySeconds`` without a break (the clock restarts whenever it
asks for as many as run), so a bursty queue does not make replicas flap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kubeswarm_runtime.resources import AutoscalingSpec, Condition

from ..kube.conditions import condition


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int  # what spec.replicas should be now
    reason: str
    message: str
    low_since: float | None  # since when the backlog has asked for fewer replicas (the scale-down clock)

    def changes(self, current: int) -> bool:
        return self.replicas != current

    def as_condition(self) -> Condition:
        return condition("Scaling", True, self.reason, self.message)


def wanted_replicas(spec: AutoscalingSpec, backlog: int) -> int:
    return min(spec.max_replicas, max(spec.min_replicas, math.ceil(backlog / spec.target_backlog_per_replica)))


def decide(spec: AutoscalingSpec, current: int, backlog: int, low_since: float | None, now: float) -> ScaleDecision:
    wanted = wanted_replicas(spec, backlog)
    load = f"backlog {backlog} (target {spec.target_backlog_per_replica} per replica)"
    if current < spec.min_replicas or current > spec.max_replicas:
        bounded = min(spec.max_replicas, max(spec.min_replicas, current, wanted))
        message = f"{current} replicas outside [{spec.min_replicas}, {spec.max_replicas}]; {load}"
        return ScaleDecision(bounded, "OutsideBounds", message, None)
    if wanted > current:
        return ScaleDecision(wanted, "BacklogHigh", f"{load} needs {wanted} replicas, {current} run", None)
    if wanted == current:
        return ScaleDecision(current, "BacklogMatched", f"{load} matches {current} replicas", None)
    since = now if low_since is None else low_since
    remaining = spec.scale_down_delay_seconds - (now - since)
    if remaining <= 0:
        return ScaleDecision(wanted, "BacklogLow", f"{load} needed only {wanted} replicas for {spec.scale_down_delay_seconds}s", None)
    message = f"{load} needs {wanted} replicas; keeping {current} for {math.ceil(remaining)}s more (scaleDownDelaySeconds)"
    return ScaleDecision(current, "ScaleDownDelayed", message, since)


def external_autoscaler(hpa: str) -> Condition:
    message = f"HorizontalPodAutoscaler {hpa!r} scales this Agent; the operator leaves replicas to it"
    return condition("Scaling", False, "ExternalAutoscaler", message)
