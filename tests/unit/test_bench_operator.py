"""The operator benchmark's own arithmetic: its children baseline, its linearity verdict, its profile summary."""

from __future__ import annotations

import pytest
from kubeswarm_operator.kube.kinds import CHILD_KINDS
from kubeswarm_runtime.render import JWT_SECRET_KEY

from bench.bench_operator import apiserver_work, children_manifests, exponent, profile_summary, rises
from bench.profile_parts import parts

pytestmark = pytest.mark.unit


def test_children_baseline_is_what_the_operator_builds_without_owners() -> None:
    manifests = children_manifests(2, "bench")
    kinds = [m["kind"] for m in manifests]
    # Every Agent's children, in the operator's order; no owner reference (no Agent exists: the garbage collector would delete them).
    built = [kind.kind for kind in CHILD_KINDS if kind.kind in kinds]
    assert kinds == built * 2
    assert all("ownerReferences" not in m["metadata"] and m["metadata"]["namespace"] == "bench" for m in manifests)
    secrets = [m for m in manifests if m["kind"] == "Secret"]
    assert all(JWT_SECRET_KEY in s["data"] for s in secrets)
    assert secrets[0]["data"] != secrets[1]["data"]  # a key of its own per Agent, as the operator makes


def test_a_per_agent_figure_rising_past_noise_is_worse_than_linear() -> None:
    assert not rises([0.20, 0.08, 0.075, 0.085])  # fixed costs at small sizes, then flat within noise
    assert rises([0.08, 0.075, 0.09])  # 20 % above the lowest before it


def test_growth_exponent_of_a_linear_curve_is_one() -> None:
    counts = [250, 1000, 5000]
    assert exponent(counts, [0.07 * n for n in counts]) == pytest.approx(1.0)
    assert exponent(counts, [0.07 * n**2 for n in counts]) == pytest.approx(2.0)


def test_api_server_work_counts_each_sample_once_under_the_first_part_its_stack_shows() -> None:
    create = "k8s.io/apiserver/pkg/endpoints/handlers.CreateResource.createHandler.func1"
    custom = "k8s.io/apiextensions-apiserver/pkg/apiserver.(*crdHandler).ServeHTTP"
    stacks = [
        (0.5, ["runtime.mallocgc", "k8s.io/apiserver/pkg/storage/cacher.(*CacheDelegator).GuaranteedUpdate", create, custom]),
        (0.25, ["crypto/tls.(*Conn).Write", "net/http.(*conn).serve"]),
        (1.0, ["runtime.scanObject", "runtime.gcBgMarkWorker"]),
        (0.125, ["runtime.futex"]),
    ]
    summary = apiserver_work(stacks)
    assert summary.startswith("API server CPU seconds sampled: 1.88; ")
    # A create's own work stays the create's though it went through the watch cache; most first.
    assert "by work: Go garbage collection 1.00, create 0.50, HTTP, TLS 0.25, other 0.12;" in summary
    assert summary.endswith("custom resources (Agents) 0.50")


def test_profile_summary_counts_own_and_inclusive_samples_without_line_numbers() -> None:
    collapsed = "\n".join(
        [
            "<module> (kubeswarm_operator/__main__.py:5);_converge (kubeswarm_operator/agent/reconciler.py:10);dumps (json/x.py:1) 3",
            "<module> (kubeswarm_operator/__main__.py:5);_converge (kubeswarm_operator/agent/reconciler.py:12) 1",
        ]
    )
    summary = profile_summary(collapsed)
    assert "4 samples" in summary
    assert " 75.0%  dumps (json/x.py)" in summary
    assert "100.0%  _converge (kubeswarm_operator/agent/reconciler.py)" in summary
    assert "__main__" not in summary


def test_profile_parts_count_a_sample_in_its_first_part_and_leave_waiting_out() -> None:
    collapsed = "\n".join(
        [
            "main;WorkQueue._run_queued (a.py:1);AgentReconciler._report (r.py:2);Kube._call (c.py:3) 3",  # a request
            "main;WorkQueue._run_queued (a.py:1);AgentReconciler._report (r.py:2) 1",  # the status itself
            "main;EpollSelector.select (selectors.py:468) 50",  # the event loop waiting
            "main;run_once (base_events.py:1) 1",
        ]
    )
    assert dict(parts(collapsed)) == {
        "its API requests: JSON encoding, HTTP, answers (Kube._call)": 0.6,
        "the Agent's status and Events (_report)": 0.2,
        "other (event loop, SSL, garbage collection)": 0.2,
    }
