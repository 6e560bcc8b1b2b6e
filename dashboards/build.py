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
# Every agent query is narrowed to the chosen namespaces and swarms.
AGENT = 'namespace=~"$namespace", swarm=~"$swarm"'
WINDOW = "$__rate_interval"

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


def single(title: str, unit: str, expr: str, description: str = "", width: int = 6) -> Any:
    panel = stat.Panel().title(title).description(description).unit(unit).span(width).height(4).datasource(DATASOURCE)
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
    return (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["kubeswarm"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
    )


def swarm_overview() -> Any:
    namespaces = "label_values(kubeswarm_nats_connected, namespace)"
    swarms = 'label_values(kubeswarm_nats_connected{namespace=~"$namespace"}, swarm)'
    return (
        base("kubeswarm-swarm", "kubeswarm / Swarm overview", "Agents, tasks, backlog, MCP and LLM usage of kubeswarm swarms.")
        .with_variable(variable("namespace", "Namespace", namespaces))
        .with_variable(variable("swarm", "Swarm", swarms))
        .with_row(gd.Row("Agents"))
        .with_panel(
            single(
                "Agents ready",
                "none",
                f"count(max by (namespace, agent) (kubeswarm_nats_connected{{{AGENT}}}) == 1)",
                description="Agents with at least one replica connected to NATS.",
            )
        )
        .with_panel(single("Tasks/s", "reqps", f"sum(rate(kubeswarm_tasks_total{{{AGENT}}}[{WINDOW}]))"))
        .with_panel(single("Backlog", "none", f"sum(kubeswarm_backlog{{{AGENT}}})"))
        .with_panel(
            single(
                "Dead letters waiting",
                "none",
                f"sum(max by (namespace, swarm, capability) (kubeswarm_dead_letters_waiting{{{AGENT}}}))",
                description="Dead letters in the swarms' dead-letter streams: `kubeswarm dlq list` shows them, `replay` queues them again.",
            )
        )
        .with_panel(
            graph(
                "Replicas ready vs desired",
                "none",
                (f'sum by (agent) (kubeswarm_operator_agent_replicas{{{AGENT}, state="desired"}})', "{{agent}} desired"),
                (f'sum by (agent) (kubeswarm_operator_agent_replicas{{{AGENT}, state="ready"}})', "{{agent}} ready"),
                description="The Agent's spec.replicas (desired) and its ready pods, from the operator.",
            )
        )
        .with_panel(
            graph(
                "Runtimes connected to NATS",
                "none",
                (f"sum by (agent) (kubeswarm_nats_connected{{{AGENT}}})", "{{agent}}"),
                (f"sum by (agent) (increase(kubeswarm_nats_reconnects_total{{{AGENT}}}[{WINDOW}]))", "{{agent}} reconnects"),
                description="Replicas whose runtime is connected to NATS (what /readyz checks), and reconnections.",
            )
        )
        .with_row(gd.Row("Tasks"))
        .with_panel(
            graph(
                "Tasks/s by capability and outcome",
                "reqps",
                (f"sum by (capability, outcome) (rate(kubeswarm_tasks_total{{{AGENT}}}[{WINDOW}]))", "{{capability}} {{outcome}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Backlog by capability",
                "none",
                (f"sum by (capability) (kubeswarm_backlog{{{AGENT}}})", "{{capability}}"),
                (f"sum(kubeswarm_tasks_in_flight{{{AGENT}}})", "in flight"),
                description="Tasks pending or unacknowledged on each capability's consumer: what autoscaling follows.",
            )
        )
        .with_panel(quantiles("Task latency", "kubeswarm_task_duration_seconds", AGENT, "capability"))
        .with_panel(
            graph(
                "Dead letters and open breakers",
                "none",
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
                "reqps",
                (f"sum by (method) (rate(kubeswarm_mcp_requests_total{{{AGENT}}}[{WINDOW}]))", "{{method}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "MCP errors/s by code",
                "reqps",
                (
                    f'sum by (method, code) (rate(kubeswarm_mcp_requests_total{{{AGENT}, outcome="error"}}[{WINDOW}]))',
                    "{{method}} {{code}}",
                ),
                description="Requests answered with an error (401/403/429 included).",
            )
        )
        .with_row(gd.Row("LLM"))
        .with_panel(
            graph(
                "LLM tokens/s by model",
                "none",
                (f"sum by (model, kind) (rate(kubeswarm_llm_tokens_total{{{AGENT}}}[{WINDOW}]))", "{{model}} {{kind}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "LLM tokens by model (range)",
                "none",
                (f"sum by (model) (increase(kubeswarm_llm_tokens_total{{{AGENT}}}[$__range]))", "{{model}}"),
                (f"sum by (provider) (increase(kubeswarm_llm_retries_total{{{AGENT}}}[$__range]))", "{{provider}} retries"),
                description="Tokens used over the dashboard's time range, and retried LLM API calls.",
            )
        )
    )


def operator_overview() -> Any:
    return (
        base("kubeswarm-operator", "kubeswarm / Operator", "Reconciles, errors, latency and Agents by phase of the kubeswarm operator.")
        .with_panel(single("Reconciles/s", "reqps", f"sum(rate(kubeswarm_operator_reconciles_total[{WINDOW}]))"))
        .with_panel(single("Reconcile errors/s", "reqps", f'sum(rate(kubeswarm_operator_reconciles_total{{outcome="error"}}[{WINDOW}]))'))
        .with_panel(single("API errors/s", "reqps", f"sum(rate(kubeswarm_operator_api_errors_total[{WINDOW}]))"))
        .with_panel(single("Agents not Running", "none", 'sum(kubeswarm_operator_agents{phase!="Running"})'))
        .with_panel(
            graph(
                "Reconciles/s by kind and outcome",
                "reqps",
                (f"sum by (kind, outcome) (rate(kubeswarm_operator_reconciles_total[{WINDOW}]))", "{{kind}} {{outcome}}"),
                stacked=True,
                description="unchanged: the cluster already matched; applied: something drifted and was put back; error: retried.",
            )
        )
        .with_panel(quantiles("Reconcile latency", "kubeswarm_operator_reconcile_duration_seconds", "", "kind"))
        .with_panel(graph("Agents by phase", "none", ("sum by (phase) (kubeswarm_operator_agents)", "{{phase}}"), stacked=True))
        .with_panel(
            graph(
                "API requests and errors/s",
                "reqps",
                (f"sum by (verb, kind) (rate(kubeswarm_operator_api_requests_total[{WINDOW}]))", "{{verb}} {{kind}}"),
                (f"sum by (verb, kind, code) (rate(kubeswarm_operator_api_errors_total[{WINDOW}]))", "{{verb}} {{kind}} {{code}} error"),
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
