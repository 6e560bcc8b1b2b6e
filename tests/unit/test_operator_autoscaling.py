"""The backlog scaling decision, without a cluster."""

from __future__ import annotations

import pytest
from kubeswarm_operator.agent.autoscaling import decide, external_autoscaler, wanted_replicas
from kubeswarm_runtime.resources import AutoscalingSpec

SPEC = AutoscalingSpec(enabled=True, min_replicas=1, max_replicas=6, target_backlog_per_replica=10, scale_down_delay_seconds=60)


@pytest.mark.parametrize(
    ("backlog", "wanted"),
    [(0, 1), (1, 1), (10, 1), (11, 2), (35, 4), (60, 6), (10_000, 6)],
)
def test_wanted_replicas_is_the_backlog_over_the_target_within_bounds(backlog: int, wanted: int) -> None:
    assert wanted_replicas(SPEC, backlog) == wanted


def test_scale_up_is_immediate() -> None:
    decision = decide(SPEC, current=1, backlog=35, low_since=None, now=100.0)
    assert (decision.replicas, decision.reason, decision.low_since) == (4, "BacklogHigh", None)
    assert decision.changes(1)
    assert decision.as_condition().status == "True"


def test_matched_backlog_holds_and_resets_the_clock() -> None:
    decision = decide(SPEC, current=4, backlog=35, low_since=50.0, now=100.0)
    assert (decision.replicas, decision.reason, decision.low_since) == (4, "BacklogMatched", None)
    assert not decision.changes(4)


def test_scale_down_waits_for_the_delay_then_goes_to_what_the_backlog_needs() -> None:
    first = decide(SPEC, current=4, backlog=0, low_since=None, now=100.0)
    assert (first.replicas, first.reason, first.low_since) == (4, "ScaleDownDelayed", 100.0)
    assert "60s more" in first.message
    waiting = decide(SPEC, current=4, backlog=5, low_since=first.low_since, now=159.0)
    assert (waiting.replicas, waiting.low_since) == (4, 100.0)
    done = decide(SPEC, current=4, backlog=5, low_since=first.low_since, now=160.0)
    assert (done.replicas, done.reason, done.low_since) == (1, "BacklogLow", None)


def test_no_flapping_a_burst_within_the_delay_restarts_the_clock() -> None:
    low = decide(SPEC, current=4, backlog=0, low_since=None, now=100.0)
    burst = decide(SPEC, current=4, backlog=40, low_since=low.low_since, now=130.0)
    assert burst.low_since is None
    again = decide(SPEC, current=4, backlog=0, low_since=burst.low_since, now=170.0)
    assert (again.replicas, again.low_since) == (4, 170.0)


def test_zero_delay_scales_down_at_once() -> None:
    spec = SPEC.model_copy(update={"scale_down_delay_seconds": 0})
    assert decide(spec, current=5, backlog=0, low_since=None, now=1.0).replicas == 1


@pytest.mark.parametrize(("current", "backlog", "replicas"), [(0, 0, 1), (9, 0, 6), (0, 45, 5)])
def test_replicas_outside_the_bounds_are_brought_in_at_once(current: int, backlog: int, replicas: int) -> None:
    decision = decide(SPEC, current=current, backlog=backlog, low_since=None, now=1.0)
    assert (decision.replicas, decision.reason) == (replicas, "OutsideBounds")


def test_an_hpa_is_reported_as_the_one_scaling() -> None:
    cond = external_autoscaler("web")
    assert (cond.type, cond.status, cond.reason) == ("Scaling", "False", "ExternalAutoscaler")
    assert "'web'" in cond.message
