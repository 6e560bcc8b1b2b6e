"""The Grafana dashboards: built from the code in dashboards/, valid for Grafana, reading only series we export.

Every series a dashboard's PromQL reads is checked against the real metric objects of the
runtime (a RuntimeMetrics instance) and of the operator (its metrics module), with the
labels it filters, groups or labels legends by.  Labels Prometheus adds at scrape time are
taken from the chart's PodMonitor relabelings (runtime) and the ServiceMonitor (operator).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.models.dashboard import Dashboard
from kubeswarm_operator import metrics as operator_metrics
from kubeswarm_runtime.metrics import RuntimeMetrics
from prometheus_client.metrics import MetricWrapperBase

from dashboards import build
from tests.unit.test_chart import EVERYTHING, one, render

pytestmark = pytest.mark.unit

# What Prometheus adds to every scraped series; `cluster`, what one watching several clusters adds
# (an external label; the dashboards' matchers on it also match series without it).
PROMETHEUS_TARGET_LABELS = {"job", "instance", "cluster"}
# What a Prometheus Operator ServiceMonitor adds to the operator's series.
SERVICE_MONITOR_LABELS = {"namespace", "pod", "service", "endpoint", "container"}
PROMQL_FUNCTIONS_AND_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
METRIC = re.compile(r"\b(kubeswarm_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(kubeswarm_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class Series:
    name: str
    labels: frozenset[str]


def exposed(metric: MetricWrapperBase, scrape_labels: set[str]) -> Iterator[Series]:
    """The series names a metric object exposes, each with the labels it can carry."""
    labels = set(metric._labelnames) | scrape_labels  # prometheus_client keeps the declared label names here
    for family in metric.describe():
        if family.type == "counter":
            suffixes = ["_total", "_created"]
        elif family.type == "histogram":
            yield Series(f"{family.name}_bucket", frozenset(labels | {"le"}))
            suffixes = ["_count", "_sum", "_created"]
        else:
            suffixes = [""]
        for suffix in suffixes:
            yield Series(f"{family.name}{suffix}", frozenset(labels))


def pod_monitor_labels(tmp: Path) -> set[str]:
    monitor = one(render(EVERYTHING, tmp), "PodMonitor")
    return {r["targetLabel"] for r in monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, frozenset[str]]:
    runtime_scrape = pod_monitor_labels(tmp_path_factory.mktemp("chart")) | PROMETHEUS_TARGET_LABELS
    operator_scrape = SERVICE_MONITOR_LABELS | PROMETHEUS_TARGET_LABELS
    runtime = [m for m in vars(RuntimeMetrics()).values() if isinstance(m, MetricWrapperBase)]
    operator = [m for m in vars(operator_metrics).values() if isinstance(m, MetricWrapperBase)]
    assert runtime and operator
    series = [s for m in runtime for s in exposed(m, runtime_scrape)] + [s for m in operator for s in exposed(m, operator_scrape)]
    return {s.name: s.labels for s in series}


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(build.OUT.glob("*.json"))}


def targets(board: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, PromQL, legend) of every query, the template variables' included."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"], target.get("legendFormat", "")
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable["query"], ""


def label_values_label(expr: str) -> set[str]:
    match = re.fullmatch(r"label_values\((?:[^,]*),\s*([a-zA-Z_]+)\)", expr)
    return {match.group(1)} if match else set()


def test_dashboard_files_are_what_the_builder_makes() -> None:
    files = {path.name for path in build.OUT.glob("*.json")}
    assert files == {f"{name}.json" for name in build.DASHBOARDS}, "run `python -m dashboards.build`"
    for name, make in build.DASHBOARDS.items():
        assert (build.OUT / f"{name}.json").read_text() == build.render(make), f"{name}.json is stale: run `python -m dashboards.build`"


@pytest.mark.parametrize("name", build.DASHBOARDS)
def test_dashboard_json_is_a_valid_grafana_dashboard(name: str) -> None:
    board = dashboards()[name]
    # Grafana's own dashboard model (generated from its schema) reads it back unchanged.
    model = Dashboard.from_json(board)
    assert model.uid == board["uid"] and model.title == board["title"] and model.schema_version == board["schemaVersion"]
    assert len(model.panels or []) == len(board["panels"])
    assert board["uid"].startswith("kubeswarm-") and len(board["uid"]) <= 40  # Grafana's uid limit
    ids = [panel["id"] for panel in board["panels"]]
    assert len(set(ids)) == len(ids)
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]  # Grafana's grid is 24 wide
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


def test_the_issue_asks_for_these_panels() -> None:
    titles = {name: {panel["title"] for panel in board["panels"]} for name, board in dashboards().items()}
    assert {
        "Replicas ready vs desired",
        "Tasks/s by capability and outcome",
        "Backlog by capability",
        "Task latency",
        "Dead letters and open breakers",
        "MCP requests/s by method",
        "MCP errors/s by code",
        "LLM tokens/s by model",
    } <= titles["swarm-overview"]
    assert {"Reconciles/s by kind and outcome", "Reconcile errors/s", "Reconcile latency", "Agents by phase"} <= titles["operator"]


@pytest.mark.parametrize("name", build.DASHBOARDS)
def test_every_series_the_dashboards_read_is_exported_with_those_labels(name: str, exported: dict[str, frozenset[str]]) -> None:
    problems = []
    for title, expr, legend in targets(dashboards()[name]):
        metrics = set(METRIC.findall(expr))
        assert metrics, f"{title}: no kubeswarm series in {expr}"
        for metric in metrics:
            if metric not in exported:
                problems.append(f"{title}: {metric} is exported by neither the runtime nor the operator")
        known = [exported[m] for m in metrics if m in exported]
        for metric, matchers in SELECTOR.findall(expr):
            if metric in exported:
                missing = [label for label in MATCHER.findall(matchers) if label not in exported[metric]]
                problems += [f"{title}: {metric} has no label {label}" for label in missing]
        grouped = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",") if label.strip()}
        wanted = (grouped | set(LEGEND.findall(legend)) | label_values_label(expr)) - PROMQL_FUNCTIONS_AND_KEYWORDS
        for labels in known:
            problems += [f"{title}: a series in {expr!r} has no label {label}" for label in sorted(wanted - labels)]
    assert not problems, "\n".join(problems)


# -- the rules of a readable dashboard (units, colours, variables, links)

RATE = re.compile(r"\b(?:i?rate)\((kubeswarm_[a-z0-9_]+)")
# What a rate of each counter is per second of: its panel's unit must say it.
RATE_UNITS = {
    "kubeswarm_tasks_total": "suffix: tasks/s",
    "kubeswarm_llm_tokens_total": "suffix: tokens/s",
    "kubeswarm_operator_reconciles_total": ("suffix: reconciles/s", "suffix: errors/s"),
    "kubeswarm_mcp_requests_total": "reqps",
    "kubeswarm_a2a_requests_total": "reqps",
    "kubeswarm_operator_api_requests_total": "reqps",
    "kubeswarm_operator_api_errors_total": ("reqps", "suffix: errors/s"),
}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from (panel for panel in board["panels"] if panel["type"] != "row")


def color_at(panel: dict[str, Any], value: float) -> str:
    """The colour Grafana gives ``value`` from the panel's absolute thresholds (the last step it reaches)."""
    thresholds = panel["fieldConfig"]["defaults"]["thresholds"]
    assert thresholds["mode"] == "absolute", panel["title"]
    reached = [step for step in thresholds["steps"] if step["value"] is None or value >= step["value"]]
    return str(reached[-1]["color"])


@pytest.mark.parametrize("name", build.DASHBOARDS)
def test_a_rate_is_shown_per_second_of_what_it_counts(name: str) -> None:
    problems = []
    for panel in panels(dashboards()[name]):
        unit = panel["fieldConfig"]["defaults"]["unit"]
        for target in panel["targets"]:
            for metric in RATE.findall(target["expr"]):
                if metric.endswith("_seconds_bucket"):  # a latency histogram's quantiles: seconds
                    problems += [] if unit == "s" else [f"{panel['title']}: quantiles of {metric} in {unit!r}, not 's'"]
                    continue
                assert metric in RATE_UNITS, f"{panel['title']}: which unit is a rate of {metric}? (add it to RATE_UNITS)"
                allowed = RATE_UNITS[metric]
                if unit not in (allowed if isinstance(allowed, tuple) else (allowed,)):
                    problems.append(f"{panel['title']}: a rate of {metric} in {unit!r}, not {allowed!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", build.DASHBOARDS)
def test_every_stat_panel_has_its_own_thresholds_and_trouble_is_not_green(name: str) -> None:
    for panel in panels(dashboards()[name]):
        if panel["type"] != "stat":
            continue
        assert panel["fieldConfig"]["defaults"].get("thresholds"), f"{panel['title']}: Grafana's default (red from 80) would colour it"
        assert panel["options"]["colorMode"] == "value"
        title = panel["title"].lower()
        if "not running" in title or "errors" in title or "dead letters" in title:
            assert color_at(panel, 0) == "green", panel["title"]
            assert color_at(panel, 1) in ("red", "orange") and color_at(panel, 5) in ("red", "orange"), panel["title"]
            if "errors/s" in title:
                assert color_at(panel, 0.01) == "red", panel["title"]  # any error rate at all
    operator = {panel["title"]: panel for panel in panels(dashboards()["operator"])}
    assert color_at(operator["Agents not Running"], 5) == "red"  # the issue's example: five showed green


def test_the_operator_dashboard_narrows_every_query_to_a_cluster_job_and_namespace() -> None:
    board = dashboards()["operator"]
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "cluster", "job", "namespace"]
    for title, expr, _ in targets(board):
        if title.startswith("variable"):
            continue
        for _metric, matchers in SELECTOR.findall(expr):
            assert {"cluster", "job", "namespace"} <= set(MATCHER.findall(matchers)), f"{title}: {expr}"
        assert all(f"{m}{{" in expr for m in METRIC.findall(expr)), f"{title}: a series without the variables' matchers in {expr}"
    swarm = dashboards()["swarm-overview"]
    assert [v["name"] for v in swarm["templating"]["list"]] == ["datasource", "cluster", "namespace", "swarm"]


def test_the_dashboards_link_to_each_other_keeping_time_and_variables() -> None:
    boards = dashboards()
    for name, board in boards.items():
        (link,) = board["links"]
        assert link["type"] == "dashboards" and link["includeVars"] and link["keepTime"], name
        others = [other for other_name, other in boards.items() if other_name != name]
        assert others and all(set(link["tags"]) <= set(other["tags"]) for other in others), f"{name}: its link misses a dashboard"
