"""The kubeswarm Grafana dashboards, built with Grafana's own dashboard model (grafana-foundation-sdk).

``python -m dashboards.build`` writes them into the chart (charts/kubeswarm/dashboards/),
which ships them as ConfigMaps for the Grafana sidecar; a test checks the files are what
this module builds, and that every series their PromQL reads is one the runtime or the
operator exports, with those labels.

Series labels: the runtime's own labels, plus namespace/swarm/agent/pod that the chart's
PodMonitor sets from the Agent pods' labels; the operator's, plus what a ServiceMonitor adds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as gd_common
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

OUT = Path(__file__).resolve().parents[1] / "charts" / "kubeswarm" / "dashboards"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAG = "kubeswarm"
# `cluster` is what a Prometheus watching several clusters adds (an external label); where there is
# none, its variable is empty or All, and `cluster=~""` / `=~".*"` match series without it.
CLUSTER = 'cluster=~"$cluster"'
# Every agent query is narrowed to the chosen cluster, namespaces and swarms.
AGENT = f'{CLUSTER}, namespace=~"$namespace", swarm=~"$swarm"'
# Every operator query to the chosen operators: cluster, scrape job, and the namespace it runs in
# (its own series carry the ServiceMonitor's namespace label).
OPERATOR = f'{CLUSTER}, job=~"$job", namespace=~"$namespace"'
WINDOW = "$__rate_interval"

# Units: a rate reads as what it counts (Grafana's "reqps" would call tasks and tokens requests).
TASKS_PER_S = "suffix: tasks/s"
TOKENS_PER_S = "suffix: tokens/s"
TOKENS = "suffix: tokens"
RECONCILES_PER_S = "suffix: reconciles/s"
ERRORS_PER_S = "suffix: errors/s"
REQUESTS_PER_S = "reqps"  # MCP and API requests: requests indeed
COUNT = "none"

# Stat colours: a count with no good or bad value is plain text; a count of trouble is green at 0 and
# turns orange or red from the first one (rates from any at all). Grafana's own default (red from 80)
# showed five Agents not Running in green.
NEUTRAL = [model.Threshold(None, "text")]
ANY_IS_BAD = [model.Threshold(None, "green"), model.Threshold(1, "red")]
ANY_RATE_IS_BAD = [model.Threshold(None, "green"), model.Threshold(0.001, "red")]
ANY_IS_A_WARNING = [model.Threshold(None, "green"), model.Threshold(1, "orange")]

Query = tuple[str, str]  # (PromQL, legend)
PanelBuilder = Callable[[], Any]


def queries(panel: Any, *exprs: Query) -> Any:
    for ref, (expr, legend) in zip("ABCDEFGH", exprs, strict=False):
        panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE))
    return panel


def graph(title: str, unit: str, *exprs: Query, description: str = "", width: int = 12, stacked: bool = False) -> Any:
    panel = timeseries.Panel().title(title).description(description).unit(unit).span(width).height(8).datasource(DATASOURCE)
    panel = panel.fill_opacity(10)
    if stacked:
        panel = panel.stacking(gd_common.StackingConfig().mode(common.StackingMode.NORMAL))
    return queries(panel, *exprs)


def single(title: str, unit: str, expr: str, *, thresholds: list[model.Threshold], description: str = "", width: int = 6) -> Any:
    panel = stat.Panel().title(title).description(description).unit(unit).span(width).height(4).datasource(DATASOURCE)
    panel = panel.thresholds(gd.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(thresholds))
    panel = panel.color_mode(common.BigValueColorMode.VALUE).color_scheme(gd.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
    return queries(panel.graph_mode(common.BigValueGraphMode.AREA), (expr, title))


def quantiles(title: str, histogram: str, selector: str, by: str, description: str = "") -> Any:
    """p50/p95/p99 of a Prometheus histogram, per ``by``."""
    exprs = [
        (f"histogram_quantile({q}, sum by ({by}, le) (rate({histogram}_bucket{{{selector}}}[{WINDOW}])))", f"p{int(q * 100)} {{{{{by}}}}}")
        for q in (0.5, 0.95, 0.99)
    ]
    return graph(title, "s", *exprs, description=description)


def variable(name: str, label: str, query: str) -> Any:
    return (
        gd.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(DATASOURCE)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )


def datasource_variable() -> Any:
    return gd.DatasourceVariable("datasource").label("Data source").type("prometheus")


def base(uid: str, title: str, description: str) -> Any:
    # The other kubeswarm dashboards, one click away, with the same time range and variables.
    others = (
        gd.DashboardLink("kubeswarm")
        .type(model.DashboardLinkType.DASHBOARDS)
        .tags([TAG])
        .as_dropdown(False)
        .include_vars(True)
        .keep_time(True)
        .target_blank(False)
    )
    return (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(others)
        .with_variable(datasource_variable())
    )


def swarm_overview() -> Any:
    clusters = "label_values(kubeswarm_nats_connected, cluster)"
    namespaces = f"label_values(kubeswarm_nats_connected{{{CLUSTER}}}, namespace)"
    swarms = f'label_values(kubeswarm_nats_connected{{{CLUSTER}, namespace=~"$namespace"}}, swarm)'
    return (
        base("kubeswarm-swarm", "kubeswarm / Swarm overview", "Agents, tasks, backlog, MCP and LLM usage of kubeswarm swarms.")
        .with_variable(variable("cluster", "Cluster", clusters))
        .with_variable(variable("namespace", "Namespace", namespaces))
        .with_variable(variable("swarm", "Swarm", swarms))
        .with_row(gd.Row("Agents"))
        .with_panel(
            single(
                "Agents ready",
                COUNT,
                f"count(max by (namespace, agent) (kubeswarm_nats_connected{{{AGENT}}}) == 1)",
                thresholds=NEUTRAL,
                description="Agents with at least one replica connected to NATS.",
            )
        )
        .with_panel(single("Tasks/s", TASKS_PER_S, f"sum(rate(kubeswarm_tasks_total{{{AGENT}}}[{WINDOW}]))", thresholds=NEUTRAL))
        .with_panel(single("Backlog", COUNT, f"sum(kubeswarm_backlog{{{AGENT}}})", thresholds=NEUTRAL))
        .with_panel(
            single(
                "Dead letters waiting",
                COUNT,
                f"sum(max by (namespace, swarm, capability) (kubeswarm_dead_letters_waiting{{{AGENT}}}))",
                thresholds=ANY_IS_A_WARNING,
                description="Dead letters in the swarms' dead-letter streams: `kubeswarm dlq list` shows them, `replay` queues them again.",
            )
        )
        .with_panel(
            graph(
                "Replicas ready vs desired",
                COUNT,
                (f'sum by (agent) (kubeswarm_operator_agent_replicas{{{AGENT}, state="desired"}})', "{{agent}} desired"),
                (f'sum by (agent) (kubeswarm_operator_agent_replicas{{{AGENT}, state="ready"}})', "{{agent}} ready"),
                description="The Agent's spec.replicas (desired) and its ready pods, from the operator.",
            )
        )
        .with_panel(
            graph(
                "Runtimes connected to NATS",
                COUNT,
                (f"sum by (agent) (kubeswarm_nats_connected{{{AGENT}}})", "{{agent}}"),
                (f"sum by (agent) (increase(kubeswarm_nats_reconnects_total{{{AGENT}}}[{WINDOW}]))", "{{agent}} reconnects"),
                description="Replicas whose runtime is connected to NATS (what /readyz checks), and reconnections.",
            )
        )
        .with_row(gd.Row("Tasks"))
        .with_panel(
            graph(
                "Tasks/s by capability and outcome",
                TASKS_PER_S,
                (f"sum by (capability, outcome) (rate(kubeswarm_tasks_total{{{AGENT}}}[{WINDOW}]))", "{{capability}} {{outcome}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Backlog by capability",
                COUNT,
                (f"sum by (capability) (kubeswarm_backlog{{{AGENT}}})", "{{capability}}"),
                (f"sum(kubeswarm_tasks_in_flight{{{AGENT}}})", "in flight"),
                description="Tasks pending or unacknowledged on each capability's consumer: what autoscaling follows.",
            )
        )
        .with_panel(quantiles("Task latency", "kubeswarm_task_duration_seconds", AGENT, "capability"))
        .with_panel(
            graph(
                "Dead letters and open breakers",
                COUNT,
                (f"sum by (capability) (increase(kubeswarm_dead_letters_total{{{AGENT}}}[{WINDOW}]))", "{{capability}} dead letters"),
                (f"max by (capability) (kubeswarm_dead_letters_waiting{{{AGENT}}})", "{{capability}} waiting"),
                (f"max by (capability) (kubeswarm_capability_breaker_open{{{AGENT}}})", "{{capability}} breaker open"),
                description=(
                    "Tasks that failed their last delivery (see the P.dlq.> subjects), the dead letters waiting per capability "
                    "(every replica reports its capabilities', hence max), and capabilities whose circuit breaker is open."
                ),
            )
        )
        .with_row(gd.Row("MCP"))
        .with_panel(
            graph(
                "MCP requests/s by method",
                REQUESTS_PER_S,
                (f"sum by (method) (rate(kubeswarm_mcp_requests_total{{{AGENT}}}[{WINDOW}]))", "{{method}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "MCP errors/s by code",
                REQUESTS_PER_S,
                (
                    f'sum by (method, code) (rate(kubeswarm_mcp_requests_total{{{AGENT}, outcome="error"}}[{WINDOW}]))',
                    "{{method}} {{code}}",
                ),
                description="Requests answered with an error (401/403/429 included).",
            )
        )
        .with_panel(
            graph(
                "A2A requests/s by method and outcome",
                REQUESTS_PER_S,
                (f"sum by (method, outcome) (rate(kubeswarm_a2a_requests_total{{{AGENT}}}[{WINDOW}]))", "{{method}} {{outcome}}"),
                description="A2A JSON-RPC requests on /a2a; the tasks they create are counted with every other task.",
            )
        )
        .with_row(gd.Row("LLM"))
        .with_panel(
            graph(
                "LLM tokens/s by model",
                TOKENS_PER_S,
                (f"sum by (model, kind) (rate(kubeswarm_llm_tokens_total{{{AGENT}}}[{WINDOW}]))", "{{model}} {{kind}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "LLM tokens by model (range)",
                TOKENS,
                (f"sum by (model) (increase(kubeswarm_llm_tokens_total{{{AGENT}}}[$__range]))", "{{model}}"),
                (f"sum by (provider) (increase(kubeswarm_llm_retries_total{{{AGENT}}}[$__range]))", "{{provider}} retries"),
                description="Tokens used over the dashboard's time range, and retried LLM API calls.",
            )
        )
    )


def operator_overview() -> Any:
    series = "kubeswarm_operator_reconciles_total"
    return (
        base("kubeswarm-operator", "kubeswarm / Operator", "Reconciles, errors, latency and Agents by phase of the kubeswarm operator.")
        .with_variable(variable("cluster", "Cluster", f"label_values({series}, cluster)"))
        .with_variable(variable("job", "Job", f"label_values({series}{{{CLUSTER}}}, job)"))
        .with_variable(variable("namespace", "Operator namespace", f'label_values({series}{{{CLUSTER}, job=~"$job"}}, namespace)'))
        .with_panel(
            single(
                "Reconciles/s",
                RECONCILES_PER_S,
                f"sum(rate(kubeswarm_operator_reconciles_total{{{OPERATOR}}}[{WINDOW}]))",
                thresholds=NEUTRAL,
            )
        )
        .with_panel(
            single(
                "Reconcile errors/s",
                ERRORS_PER_S,
                f'sum(rate(kubeswarm_operator_reconciles_total{{{OPERATOR}, outcome="error"}}[{WINDOW}]))',
                thresholds=ANY_RATE_IS_BAD,
            )
        )
        .with_panel(
            single(
                "API errors/s",
                ERRORS_PER_S,
                f"sum(rate(kubeswarm_operator_api_errors_total{{{OPERATOR}}}[{WINDOW}]))",
                thresholds=ANY_RATE_IS_BAD,
            )
        )
        .with_panel(
            single(
                "Agents not Running",
                COUNT,
                f'sum(kubeswarm_operator_agents{{{OPERATOR}, phase!="Running"}})',
                thresholds=ANY_IS_BAD,
                description="Pending, Degraded or Failed: `kubectl get agents -A` lists them, the Swarm overview shows their swarms.",
            )
        )
        .with_panel(
            graph(
                "Reconciles/s by kind and outcome",
                RECONCILES_PER_S,
                (f"sum by (kind, outcome) (rate(kubeswarm_operator_reconciles_total{{{OPERATOR}}}[{WINDOW}]))", "{{kind}} {{outcome}}"),
                stacked=True,
                description="unchanged: the cluster already matched; applied: something drifted and was put back; error: retried.",
            )
        )
        .with_panel(quantiles("Reconcile latency", "kubeswarm_operator_reconcile_duration_seconds", OPERATOR, "kind"))
        .with_panel(
            graph("Agents by phase", COUNT, (f"sum by (phase) (kubeswarm_operator_agents{{{OPERATOR}}})", "{{phase}}"), stacked=True)
        )
        .with_panel(
            graph(
                "API requests and errors/s",
                REQUESTS_PER_S,
                (f"sum by (verb, kind) (rate(kubeswarm_operator_api_requests_total{{{OPERATOR}}}[{WINDOW}]))", "{{verb}} {{kind}}"),
                (
                    f"sum by (verb, kind, code) (rate(kubeswarm_operator_api_errors_total{{{OPERATOR}}}[{WINDOW}]))",
                    "{{verb}} {{kind}} {{code}} error",
                ),
            )
        )
    )


DASHBOARDS: dict[str, Callable[[], Any]] = {"swarm-overview": swarm_overview, "operator": operator_overview}


def render(build: Callable[[], Any]) -> str:
    board: dict[str, Any] = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    # Grafana links and alerts refer to panels by id; stable ids keep those links valid across rebuilds.
    for number, panel in enumerate(board["panels"], start=1):
        panel["id"] = number
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main(out: Path = OUT) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (out / f"{name}.json").write_text(render(build))
        print(f"wrote {out / f'{name}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
