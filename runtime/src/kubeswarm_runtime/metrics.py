"""Prometheus metrics of one runtime (names listed in docs/metrics.md).

Each runtime has its own registry, so several runtimes can live in one
process (tests, benchmarks) without clashing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class RuntimeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks = Counter("kubeswarm_tasks", "Task attempts finished, by capability and outcome.", ["capability", "outcome"], registry=r)
        self.task_duration = Histogram(
            "kubeswarm_task_duration_seconds",
            "Duration of task attempts.",
            ["capability"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.tasks_in_flight = Gauge("kubeswarm_tasks_in_flight", "Tasks being handled by this replica.", registry=r)
        self.messages = Counter("kubeswarm_messages", "Messages sent (out) and received (in), by kind.", ["direction", "kind"], registry=r)
        self.nats_reconnects = Counter("kubeswarm_nats_reconnects", "Reconnections to NATS.", registry=r)
        self.nats_connected = Gauge("kubeswarm_nats_connected", "1 while connected to NATS.", registry=r)
        self.backlog = Gauge(
            "kubeswarm_backlog", "Tasks pending or unacknowledged, as last seen on the consumer.", ["capability"], registry=r
        )
        self.llm_tokens = Counter(
            "kubeswarm_llm_tokens",
            "LLM tokens by provider, model and kind (input, output, cache_read, cache_write).",
            ["provider", "model", "kind"],
            registry=r,
        )
        self.tool_calls = Counter(
            "kubeswarm_tool_calls",
            "Tool calls of the tool loop, by tool (as the model names it; unknown for a name it made up) and outcome "
            "(ok, error, timeout, refused).",
            ["tool", "outcome"],
            registry=r,
        )
        self.tool_call_duration = Histogram(
            "kubeswarm_tool_call_duration_seconds",
            "Duration of the tool loop's tool calls.",
            ["tool"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.llm_retries = Counter("kubeswarm_llm_retries", "Retried LLM API calls.", ["provider"], registry=r)
        self.breaker_open = Gauge(
            "kubeswarm_capability_breaker_open",
            "1 while the circuit breaker of a capability is open.",
            ["capability"],
            registry=r,
        )
        self.dead_letters = Counter("kubeswarm_dead_letters", "Tasks sent to the dead-letter subject.", ["capability"], registry=r)
        self.dead_letters_waiting = Gauge(
            "kubeswarm_dead_letters_waiting",
            "Dead letters waiting in the swarm's dead-letter stream, as last seen (refreshed every heartbeat).",
            ["capability"],
            registry=r,
        )
        self.received_messages_bytes = Gauge(
            "kubeswarm_received_messages_bytes", "Bytes of the received messages this replica keeps for its readers.", registry=r
        )
        self.buffer_dropped = Counter(
            "kubeswarm_buffer_dropped",
            "What a bounded in-memory buffer dropped when full, by buffer (received_messages, discovery_stream, legacy_sse).",
            ["buffer"],
            registry=r,
        )
        self.unreadable_records = Counter(
            "kubeswarm_unreadable_records",
            "Stored records a listing skipped because they no longer parse, by kind (task, discovery, agent).",
            ["kind"],
            registry=r,
        )
        self.mcp_requests = Counter(
            "kubeswarm_mcp_requests",
            "MCP and JSON-RPC requests handled, by method, outcome (ok, error) and code (JSON-RPC error code or HTTP status).",
            ["method", "outcome", "code"],
            registry=r,
        )
        self.admission_rejected = Counter(
            "kubeswarm_admission_rejected",
            "Requests the MCP port refused before any work (429/503 with Retry-After), by reason (in_flight, in_flight_bytes, draining).",
            ["reason"],
            registry=r,
        )

        self.a2a_requests = Counter(
            "kubeswarm_a2a_requests",
            "A2A JSON-RPC requests handled, by method, outcome (ok, error) and code (JSON-RPC error code or HTTP status).",
            ["method", "outcome", "code"],
            registry=r,
        )

    def record_tokens(self, provider: str, model: str, usage: dict[str, int]) -> None:
        for kind, count in usage.items():
            if count:
                self.llm_tokens.labels(provider, model, kind).inc(count)
