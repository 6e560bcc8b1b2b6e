"""The operator's Prometheus metrics (prefix kubeswarm_operator_), served on their own port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "kubeswarm_operator_reconciles_total", "Reconciles by kind and outcome (unchanged, applied, error).", ["kind", "outcome"]
)
RECONCILE_SECONDS = Histogram(
    "kubeswarm_operator_reconcile_duration_seconds",
    "Time one reconcile took, API calls included.",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AGENTS = Gauge("kubeswarm_operator_agents", "Agents by phase.", ["phase"])
AGENT_REPLICAS = Gauge(
    "kubeswarm_operator_agent_replicas",
    "Replicas of each Agent: desired (its Deployment's spec.replicas, else spec.replicas) and ready.",
    ["namespace", "agent", "swarm", "state"],
)
API_REQUESTS = Counter("kubeswarm_operator_api_requests_total", "Requests the reconciler made, by verb and kind.", ["verb", "kind"])
API_ERRORS = Counter("kubeswarm_operator_api_errors_total", "Failed API requests by verb, kind and HTTP status.", ["verb", "kind", "code"])
EVENTS_DROPPED = Counter("kubeswarm_operator_events_dropped_total", "Kubernetes Events not posted: too many were waiting to be.")


def serve(port: int) -> None:
    if port:
        start_http_server(port)
