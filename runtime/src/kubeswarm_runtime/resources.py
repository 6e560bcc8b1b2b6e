"""The Agent and Swarm custom resources (group kubeswarm.io, version v1alpha1).

These pydantic models are the single source of the resources' shape: the
operator generates the CRD schemas from them (``make crds``) and reconciles
with them, and local mode (``kubeswarm up``) reads the same manifests through
them.  Field descriptions become ``kubectl explain`` text; rules that span
fields are CEL (``x-kubernetes-validations``) so the API server enforces them,
and the same rules are checked here so local mode rejects what a cluster would.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "kubeswarm.io"
VERSION = "v1alpha1"
API_VERSION: Final = "kubeswarm.io/v1alpha1"
DEFAULT_SWARM = "default"

# Kubernetes core types we pass through unchanged to the pod template; the API
# server validates them when the Deployment is applied.
PRESERVE: JsonDict = {"x-kubernetes-preserve-unknown-fields": True}
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One x-kubernetes-validations entry."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class Model(BaseModel):
    """Base: frozen, camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SecretKeyRef(Model):
    name: str = Field(min_length=1, description="Name of a Secret in the Agent's namespace.")
    key: str = Field(min_length=1, description="Key within the Secret whose value is used.")


class AwsSecretsManagerRef(Model):
    secret_id: str = Field(min_length=1, description="Secret name or ARN in AWS Secrets Manager.")
    region: str = Field(min_length=1, description="AWS region of the secret, e.g. eu-west-1.")
    key: str | None = Field(
        default=None,
        description="If the secret string is a JSON object, the key whose value is the API key; otherwise the whole string is used.",
    )


class Provider(StrEnum):
    ECHO = "echo"
    ANTHROPIC = "anthropic"
    BEDROCK = "bedrock"
    OPENAI = "openai"
    HTTP = "http"


class ModelSpec(Model):
    """Which model answers this agent's tasks."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.apiKeySecretRef) && has(self.awsSecretsManager))",
                    "set at most one of apiKeySecretRef and awsSecretsManager",
                ),
                cel(
                    "self.provider != 'anthropic' || has(self.apiKeySecretRef) || has(self.awsSecretsManager)",
                    "provider anthropic needs an API key: set apiKeySecretRef or awsSecretsManager",
                ),
                cel("self.provider != 'http' || has(self.endpoint)", "provider http needs endpoint", ".endpoint"),
                cel("self.provider == 'echo' || has(self.name)", "a model name is required unless provider is echo", ".name"),
            ]
        }
    )

    provider: Provider = Field(
        default=Provider.ECHO,
        description="echo (offline, deterministic), anthropic (Messages API), bedrock (AWS Converse), "
        "openai (any OpenAI-compatible Chat Completions endpoint: OpenAI, vLLM, Ollama, LiteLLM) or http (POST to endpoint).",
    )
    name: str | None = Field(default=None, description="Model name, e.g. claude-sonnet-4-5 or a Bedrock model id.")
    max_tokens: int = Field(default=1024, ge=1, le=200000, description="Upper bound of output tokens per task.")
    api_key_secret_ref: SecretKeyRef | None = Field(default=None, description="Secret key holding the provider API key.")
    aws_secrets_manager: AwsSecretsManagerRef | None = Field(
        default=None,
        description="Read the API key from AWS Secrets Manager; the operator syncs it into a Secret and re-checks it for rotation.",
    )
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="URL the http provider POSTs each task to (a sidecar or webhook); for anthropic, bedrock and openai, "
        "the API base URL (openai: up to /v1, e.g. http://vllm:8000/v1).",
    )
    region: str | None = Field(default=None, description="AWS region for the bedrock provider.")
    system_prompt: str | None = Field(
        default=None, max_length=100000, description='System prompt of every task (a task\'s own "system" input wins).'
    )

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.api_key_secret_ref and self.aws_secrets_manager:
            raise ValueError("set at most one of apiKeySecretRef and awsSecretsManager")
        if self.provider is Provider.ANTHROPIC and not (self.api_key_secret_ref or self.aws_secrets_manager):
            raise ValueError("provider anthropic needs an API key: set apiKeySecretRef or awsSecretsManager")
        if self.provider is Provider.HTTP and not self.endpoint:
            raise ValueError("provider http needs endpoint")
        if self.provider is not Provider.ECHO and not self.name:
            raise ValueError("a model name is required unless provider is echo")
        return self


class AuthMode(StrEnum):
    NONE = "none"
    JWT = "jwt"
    OIDC = "oidc"


class McpAuth(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.mode != 'oidc' || (has(self.issuer) && has(self.audience))", "oidc needs issuer and audience"),
            ]
        }
    )

    mode: AuthMode = Field(
        default=AuthMode.NONE,
        description="none; jwt (HS256 bearer tokens signed with the swarm's key); or oidc (tokens from issuer, audience checked).",
    )
    issuer: str | None = Field(default=None, pattern=r"^https?://", description="OIDC issuer URL (its JWKS is fetched).")
    audience: str | None = Field(default=None, description="Audience tokens must carry (oidc).")
    required_scopes: list[str] = Field(default_factory=list, description="Scopes a token must carry; else 403.")

    @model_validator(mode="after")
    def _check(self) -> McpAuth:
        if self.mode is AuthMode.OIDC and not (self.issuer and self.audience):
            raise ValueError("oidc needs issuer and audience")
        return self


# An HTTPRoute attaches to a Gateway through parentRefs; without one it serves nothing.
HTTP_ROUTE_GATEWAY_RULE = cel(
    "!self.enabled || self.kind != 'HTTPRoute' || has(self.className)",
    "kind HTTPRoute needs className: the name of the Gateway to attach to",
    ".className",
)


def check_route_gateway(enabled: bool, kind: str, class_name: str | None) -> None:
    if enabled and kind == "HTTPRoute" and not class_name:
        raise ValueError(HTTP_ROUTE_GATEWAY_RULE["message"])


class IngressTls(Model):
    secret_name: str = Field(min_length=1, description="Secret of type kubernetes.io/tls holding the certificate.")


class IngressSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("!self.enabled || has(self.host)", "host is required when ingress is enabled", ".host"),
                HTTP_ROUTE_GATEWAY_RULE,
            ]
        }
    )

    enabled: bool = Field(default=False, description="Expose the MCP endpoint outside the cluster.")
    kind: Literal["Ingress", "HTTPRoute"] = Field(default="Ingress", description="Ingress (networking.k8s.io) or HTTPRoute (Gateway API).")
    class_name: str | None = Field(default=None, description="IngressClass name, or the Gateway name for HTTPRoute.")
    host: str | None = Field(default=None, description="External host name, e.g. agents.example.com.")
    path: str = Field(default="/mcp", pattern=r"^/", description="Path prefix routed to the agent's MCP endpoint.")
    tls: IngressTls | None = Field(default=None, description="Terminate TLS with this Secret.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations on the Ingress.")
    allow_anonymous: bool = Field(
        default=False, description="Expose the endpoint although spec.mcp.auth.mode is none: anyone on the internet may call it."
    )

    @model_validator(mode="after")
    def _check(self) -> IngressSpec:
        if self.enabled and not self.host:
            raise ValueError("host is required when ingress is enabled")
        check_route_gateway(self.enabled, self.kind, self.class_name)
        return self


class LabelSelectorRequirement(Model):
    key: str = Field(min_length=1, description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] = Field(default_factory=list, description="Values for In and NotIn.")


class LabelSelector(Model):
    """A core LabelSelector; empty selects everything."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels that must all match.")
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, description="Requirements that must all hold.")


MCP_PEER_RULE = cel(
    "has(self.namespaceSelector) || has(self.podSelector)",
    "set namespaceSelector, podSelector or both ({podSelector: {}} is every pod of the Agent's namespace)",
)


class McpPeer(Model):
    """Pods that may open connections to the MCP port (a NetworkPolicy peer)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [MCP_PEER_RULE]})

    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Namespaces whose pods may connect ({} is every namespace); without it, the Agent's own namespace.",
    )
    pod_selector: LabelSelector | None = Field(default=None, description="Pods that may connect ({} is every pod of those namespaces).")

    @model_validator(mode="after")
    def _check(self) -> McpPeer:
        if self.namespace_selector is None and self.pod_selector is None:
            raise ValueError(MCP_PEER_RULE["message"])
        return self


# has() tests only where a member template may leave a field to the Swarm's defaults (an Agent's own spec has them all).
EXPOSED_NEEDS_AUTH_RULE = cel(
    "!has(self.ingress) || !has(self.ingress.enabled) || !self.ingress.enabled"
    " || !has(self.auth) || !has(self.auth.mode) || self.auth.mode != 'none'"
    " || (has(self.ingress.allowAnonymous) && self.ingress.allowAnonymous)",
    "an endpoint exposed by ingress needs auth (mode jwt or oidc); set ingress.allowAnonymous: true to expose it without",
    ".auth",
)


class McpSpec(Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [EXPOSED_NEEDS_AUTH_RULE]})

    enabled: bool = Field(default=True, description="Serve the MCP endpoint (Streamable HTTP at /mcp).")
    port: int = Field(default=8080, ge=1024, le=65535, description="Container port of the MCP endpoint.")
    auth: McpAuth = Field(
        default_factory=McpAuth,
        description="Who may call the endpoint: an object, e.g. {mode: jwt} (not the bare string jwt).",
    )
    ingress: IngressSpec = Field(default_factory=IngressSpec, description="External access to the endpoint.")
    timeout_seconds: int = Field(
        default=3600, ge=1, le=86400, description="Longest a request or stream may stay open (also the ingress read timeout)."
    )
    processes: int = Field(
        default=1,
        ge=1,
        le=16,
        description=(
            "Processes serving the MCP port in each replica (they share it; give the container a CPU for each). "
            "Only the first runs tasks; the others answer HTTP requests."
        ),
    )
    allow_from: list[McpPeer] = Field(
        default_factory=lambda: [McpPeer(pod_selector=LabelSelector())],
        max_length=32,
        description=(
            "Who in the cluster may reach the MCP port (NetworkPolicy ingress peers), besides the ingress controller. "
            "Unset: every pod of the Agent's namespace, so status.endpoint works there; [] : only the ingress controller."
        ),
    )

    allowed_hosts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+$")]] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "More Host names the endpoint answers to (e.g. a proxy's); its Service names, ingress host and swarm gateway "
            "host always are. Other names get 421 (DNS rebinding defence); IP addresses and localhost always pass."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> McpSpec:
        if self.ingress.enabled and self.auth.mode is AuthMode.NONE and not self.ingress.allow_anonymous:
            raise ValueError(EXPOSED_NEEDS_AUTH_RULE["message"])
        return self


class AutoscalingSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.minReplicas <= self.maxReplicas", "minReplicas must be <= maxReplicas", ".minReplicas"),
            ]
        }
    )

    enabled: bool = Field(default=False, description="Scale replicas on the JetStream task backlog.")
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas when idle.")
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Most replicas under load.")
    target_backlog_per_replica: int = Field(default=10, ge=1, description="Pending + unacknowledged tasks one replica should carry.")
    scale_down_delay_seconds: int = Field(
        default=300, ge=0, le=86400, description="How long the backlog must stay low before replicas are removed."
    )

    @model_validator(mode="after")
    def _check(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        return self


# A tool namespace (an MCP server's name): tools are offered to models as <server>__<tool>, within the 64 characters APIs allow.
TOOL_NAMESPACE = r"^[a-z0-9]([a-z0-9_-]{0,22}[a-z0-9])?$"
HTTP_HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"


def keyed_list(description: str, max_length: int) -> Any:
    """A list field of objects keyed by name: the API server refuses two of one name, server-side apply merges them by name."""
    return Field(
        default_factory=list,
        max_length=max_length,
        description=description,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class HeaderSource(Model):
    secret_key_ref: SecretKeyRef = Field(description="Secret key holding the header's value (e.g. a bearer token).")


class McpServerHeader(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.value) != has(self.valueFrom)", "set exactly one of value and valueFrom"),
            ]
        }
    )

    name: str = Field(min_length=1, max_length=128, pattern=HTTP_HEADER_NAME, description="HTTP header name, e.g. Authorization.")
    value: str | None = Field(default=None, max_length=8192, description="A literal value (not for secrets: it is stored in a ConfigMap).")
    value_from: HeaderSource | None = Field(default=None, description="Read the value from a Secret (passed to the pods as an env var).")

    @model_validator(mode="after")
    def _check(self) -> McpServerHeader:
        if (self.value is None) == (self.value_from is None):
            raise ValueError("set exactly one of value and valueFrom")
        return self


class McpServerSpec(Model):
    name: str = Field(
        pattern=TOOL_NAMESPACE, description="Short name; its tools are offered as <name>__<tool> (lowercase, digits, '-', '_')."
    )
    url: str = Field(pattern=r"^https?://", max_length=2048, description="Endpoint of the MCP server, e.g. http://search:8000/mcp.")
    transport: Literal["streamable-http", "sse"] = Field(
        default="streamable-http",
        description="streamable-http (the current and 2025 protocol revisions, negotiated) or sse (the 2024 HTTP+SSE transport).",
    )
    timeout_seconds: int = Field(
        default=30, ge=1, le=3600, description="Longest wait for one tool call (or the connection) of this server."
    )
    headers: list[McpServerHeader] = keyed_list("Headers sent with every request, e.g. Authorization from a Secret.", 16)

    @model_validator(mode="after")
    def _check(self) -> McpServerSpec:
        unique([h.name for h in self.headers], "header")
        return self


class A2aAgentSpec(Model):
    name: str = Field(pattern=TOOL_NAMESPACE, description="Short name; the agent is offered to the model as the tool a2a__<name>.")
    url: str = Field(
        pattern=r"^https?://",
        max_length=2048,
        description="Base URL of the external A2A agent: its card is read from <url>/.well-known/agent-card.json.",
    )
    description: str = Field(
        default="", max_length=1024, description="What the agent is good at, shown to the model (default: its card's)."
    )
    timeout_seconds: int = Field(default=120, ge=1, le=3600, description="Longest wait for one call's task to end.")
    headers: list[McpServerHeader] = keyed_list("Headers sent with every request, e.g. Authorization from a Secret.", 16)

    @model_validator(mode="after")
    def _check(self) -> A2aAgentSpec:
        unique([h.name for h in self.headers], "header")
        return self


class AgentToolSpec(Model):
    name: str = Field(
        pattern=DNS_LABEL, max_length=63, description="Name of another Agent of the swarm; offered as the tool agent__<name>."
    )
    capability: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Reach it through this capability (request/reply, load-balanced); default: a direct query to the agent by name.",
    )
    description: str = Field(default="", max_length=1024, description="What the agent is good at, shown to the model.")


def unique(names: list[str], what: str) -> None:
    """Local mode's check of what the API server enforces with x-kubernetes-list-type: map."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} name {name!r} appears twice")
        seen.add(name)


class ToolsSpec(Model):
    """What the agent's model may call, and the limits of one task's tool loop."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.allow) || !has(self.deny) || self.allow.all(t, !(t in self.deny))",
                    "a tool cannot be both allowed and denied",
                    ".allow",
                ),
            ]
        }
    )

    swarm: bool = Field(
        default=True,
        description="Offer the swarm's own tools (request_capability, create_task, get_task, share_discovery, list_discoveries, "
        "list_agents, send_message, broadcast, ...), served in process.",
    )
    allow: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=128, description="Only these tool names (as the model sees them); empty: all."
    )
    deny: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=128, description="Never these tool names (as the model sees them)."
    )
    mcp_servers: list[McpServerSpec] = keyed_list("Remote MCP servers whose tools the model may call.", 32)
    agents: list[AgentToolSpec] = keyed_list("Other Agents the model may ask, each as one tool.", 64)
    # "a2a" as written (the camelCase generator would make it "a2A")
    a2a: Annotated[list[A2aAgentSpec], Field(alias="a2a")] = keyed_list(
        "External A2A agents the model may ask, each as one tool (docs/a2a.md).", 32
    )
    max_turns: int = Field(default=10, ge=1, le=200, description="Model calls per task; the task fails when the limit is hit.")
    max_tool_calls: int = Field(default=50, ge=0, le=2000, description="Tool calls per task; the task fails past it.")
    max_tokens_per_task: int = Field(
        default=200000, ge=1, le=100000000, description="Input plus output tokens over all model calls of a task; the task fails past it."
    )
    max_delegation_depth: int = Field(
        default=3,
        ge=0,
        le=32,
        description="How deep tasks may delegate (create_task, request_capability, agents): past it the delegating call "
        "returns an error to the model, so agents delegating in a circle stop.",
    )
    tool_timeout_seconds: int = Field(
        default=120, ge=1, le=86400, description="Longest one tool call may take; past it the model gets a timeout error."
    )

    @model_validator(mode="after")
    def _check(self) -> ToolsSpec:
        if set(self.allow) & set(self.deny):
            raise ValueError("a tool cannot be both allowed and denied")
        unique([s.name for s in self.mcp_servers], "mcpServers")
        unique([a.name for a in self.agents], "agents")
        return self


# Five cron fields (minute hour day-of-month month day-of-week): numbers, ranges, steps, lists, names (JAN, MON), L and #.
CRON_SCHEDULE = r"^\s*\S+(\s+\S+){4}\s*$"
TRIGGER_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


def check_schedule(schedule: str, time_zone: str) -> None:
    """Local mode's (and the runtime's) check of a cron trigger: the API server checks only the shape."""
    import zoneinfo
    from datetime import datetime

    from cronsim import CronSim, CronSimError

    try:
        zone = zoneinfo.ZoneInfo(time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timeZone {time_zone!r} is not an IANA time zone (e.g. Europe/Paris, UTC)") from None
    try:
        CronSim(schedule, datetime.now(zone))
    except CronSimError as exc:
        raise ValueError(f"schedule {schedule!r} is not a cron schedule: {exc}") from None


class CronTrigger(Model):
    name: str = Field(pattern=TRIGGER_NAME, max_length=63, description="Name of the trigger (a DNS label); part of its tasks' ids.")
    schedule: str = Field(
        pattern=CRON_SCHEDULE,
        max_length=256,
        description="Cron schedule, five fields: minute hour day-of-month month day-of-week, e.g. '*/15 * * * *'.",
    )
    time_zone: str = Field(
        default="UTC", pattern=r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$", max_length=64, description="IANA time zone of the schedule."
    )
    capability: str = Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=128, description="Capability whose queue each tick's task goes to.")
    input: Any = Field(default=None, json_schema_extra=PRESERVE, description="The task input of every tick (any JSON value).")

    @model_validator(mode="after")
    def _check(self) -> CronTrigger:
        check_schedule(self.schedule, self.time_zone)
        return self


class WebhookTrigger(Model):
    name: str = Field(pattern=TRIGGER_NAME, max_length=63, description="Name of the trigger: it is served on POST /hooks/<name>.")
    capability: str = Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=128, description="Capability whose queue each call's task goes to.")
    secret_key_ref: SecretKeyRef = Field(
        description="Secret key holding the HMAC-SHA256 key: a call must carry X-Signature-256: sha256=<hex HMAC of the body>."
    )


class TriggersSpec(Model):
    """Sources that create tasks without a caller: schedules and signed webhooks."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.cron) || !has(self.webhooks) || self.cron.all(c, !self.webhooks.exists(w, w.name == c.name))",
                    "a cron trigger and a webhook cannot share a name",
                ),
            ]
        }
    )

    cron: list[CronTrigger] = keyed_list("Tasks on a schedule: one task per tick whatever the replica count.", 32)
    webhooks: list[WebhookTrigger] = keyed_list("Tasks from signed HTTP calls: the body becomes the task input; 202 with the task id.", 32)

    @model_validator(mode="after")
    def _check(self) -> TriggersSpec:
        unique([t.name for t in self.cron], "cron trigger")
        unique([t.name for t in self.webhooks], "webhook")
        if shared := {t.name for t in self.cron} & {t.name for t in self.webhooks}:
            raise ValueError(f"a cron trigger and a webhook cannot share a name: {', '.join(sorted(shared))}")
        return self


class AgentSpec(Model):
    """What an agent is (role, capabilities, model) and how its pods run."""

    swarm: str = Field(
        default=DEFAULT_SWARM,
        pattern=DNS_LABEL,
        max_length=63,
        description="Swarm this agent belongs to; its NATS settings come from that Swarm, or the operator's default NATS URL.",
    )
    replicas: int = Field(default=1, ge=0, le=1000, description="Number of pods (managed by the operator when autoscaling).")
    image: str | None = Field(default=None, description="Runtime image; defaults to the operator's runtime image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy of the runtime container."
    )
    resources: dict[str, Any] | None = Field(
        default=None, json_schema_extra=PRESERVE, description="Container resources (core ResourceRequirements)."
    )
    env: list[dict[str, Any]] = Field(
        default_factory=list, json_schema_extra={"items": PRESERVE}, description="Extra environment (core EnvVar)."
    )
    env_from: list[dict[str, Any]] = Field(
        default_factory=list, json_schema_extra={"items": PRESERVE}, description="Extra environment sources (core EnvFromSource)."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must match.")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, json_schema_extra={"items": PRESERVE}, description="Pod tolerations (core Toleration)."
    )
    affinity: dict[str, Any] | None = Field(default=None, json_schema_extra=PRESERVE, description="Pod affinity (core Affinity).")
    service_account_name: str | None = Field(default=None, description="ServiceAccount the pods run as.")
    pod_annotations: dict[str, str] = Field(default_factory=dict, description="Annotations added to the pods.")
    pod_labels: dict[str, str] = Field(default_factory=dict, description="Labels added to the pods.")
    role: str = Field(default="worker", description="What this agent announces itself as, e.g. researcher.")
    capabilities: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]] = Field(
        default_factory=list,
        description="Capabilities it announces; it consumes the task queue and answers requests of each.",
    )
    model: ModelSpec = Field(default_factory=ModelSpec, description="The model that answers tasks.")
    concurrency: int = Field(default=4, ge=1, le=1000, description="Tasks in flight per replica.")
    task_timeout_seconds: int = Field(default=300, ge=1, le=86400, description="Longest one task attempt may run.")
    heartbeat_seconds: int = Field(
        default=10, ge=1, le=300, description="Presence heartbeat interval; an agent silent for 3 heartbeats drops out."
    )
    mcp: McpSpec = Field(default_factory=McpSpec, description="The agent's MCP endpoint.")
    tools: ToolsSpec = Field(default_factory=ToolsSpec, description="What the agent's model may call (docs/tools.md).")
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec, description="Backlog-driven scaling.")
    triggers: TriggersSpec = Field(default_factory=TriggersSpec, description="Cron and webhook sources of tasks (docs/triggers.md).")


class Condition(Model):
    """A standard metav1.Condition."""

    type: str = Field(description="Ready, SecretsReady, NatsReady, IngressReady or Scaling.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="Why, in CamelCase (e.g. SecretNotFound).")
    message: str = Field(default="", description="What happened and what to do, for humans.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="Generation of the spec this condition is about.")


# Conditions are a map keyed by type, so server-side apply merges them per type.
CONDITIONS_LIST: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    IDLE = "Idle"  # an Agent at zero replicas on purpose (scaled to zero by its autoscaler, or spec.replicas 0)


class AgentStatus(Model):
    model_config = ConfigDict(extra="ignore")

    phase: Phase | None = Field(
        default=None, description="Pending, Running, Degraded, Failed, or Idle (no pod on purpose: scaled to zero)."
    )
    replicas: int | None = Field(default=None, description="Pods that exist.")
    ready_replicas: int | None = Field(default=None, description="Pods that are ready.")
    ready: str | None = Field(default=None, description="Ready pods of those wanted, as kubectl prints a Deployment's: 2/3.")
    selector: str | None = Field(default=None, description="Label selector of the pods (for the scale subresource).")
    observed_generation: int | None = Field(default=None, description="Generation of the spec last reconciled.")
    endpoint: str | None = Field(default=None, description="URL of the MCP endpoint.")
    backlog: int | None = Field(default=None, description="Tasks pending or unacknowledged for this agent's capabilities.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, SecretsReady, NatsReady, IngressReady, Scaling.",
        json_schema_extra=CONDITIONS_LIST,
    )


class ObjectMeta(Model):
    """The parts of metadata kubeswarm reads; the rest is kept as is."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    generation: int | None = None


# An Agent's name also names its Service, which must be a DNS-1035 label.
AGENT_NAME = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
AGENT_NAME_RULE = cel(
    f"self.metadata.name.matches('{AGENT_NAME}')",
    "metadata.name must start with a letter and hold only lowercase letters, digits and '-' (it names the agent's Service)",
)


class Agent(Model):
    model_config = ConfigDict(extra="ignore")

    api_version: Literal["kubeswarm.io/v1alpha1"] = API_VERSION
    kind: Literal["Agent"] = "Agent"
    metadata: ObjectMeta
    spec: AgentSpec = Field(default_factory=AgentSpec)
    status: AgentStatus | None = None

    @model_validator(mode="after")
    def _check(self) -> Agent:
        if not re.match(AGENT_NAME, self.metadata.name):
            raise ValueError(AGENT_NAME_RULE["message"])
        return self


class NatsClusterRef(Model):
    name: str = Field(min_length=1, description="Service name of an in-cluster NATS (e.g. the chart's nats).")
    namespace: str | None = Field(default=None, description="Its namespace; defaults to the Swarm's.")
    port: int = Field(default=4222, ge=1, le=65535, description="Client port.")


# user:password@ or token@ in a NATS URL would be copied wherever the URL goes (ConfigMaps, status, Events, logs).
URL_CREDENTIALS = "://[^/,]*@"
URL_CREDENTIALS_RULE = cel(
    f"!has(self.url) || !self.url.matches('{URL_CREDENTIALS}')",
    "url must not carry credentials (user:password@ or token@): put them in credentialsSecretRef",
    ".url",
)


def check_url_credentials(url: str | None) -> None:
    if url and re.search(URL_CREDENTIALS, url):
        raise ValueError(URL_CREDENTIALS_RULE["message"])


class NatsSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("!(has(self.url) && has(self.clusterRef))", "set at most one of url and clusterRef"),
                URL_CREDENTIALS_RULE,
            ]
        }
    )

    url: str | None = Field(default=None, pattern=r"^(nats|tls)://", description="NATS URL(s), comma-separated.")
    cluster_ref: NatsClusterRef | None = Field(default=None, description="An in-cluster NATS Service.")
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding NATS credentials (a .creds file) for the swarm's agents."
    )

    @model_validator(mode="after")
    def _check(self) -> NatsSpec:
        if self.url and self.cluster_ref:
            raise ValueError("set at most one of url and clusterRef")
        check_url_credentials(self.url)
        return self


class StreamsSpec(Model):
    replicas: int | None = Field(
        default=None,
        ge=1,
        le=5,
        description="JetStream replicas of every stream and bucket; unset: 3 on a NATS cluster of 3+ servers, else 1, never lowered.",
    )
    max_age_seconds: int = Field(
        default=7 * 24 * 3600, ge=0, description="How long tasks, task state, discoveries and dead letters are kept (0: forever)."
    )
    max_bytes: int | None = Field(
        default=None,
        ge=-1,
        description="Byte cap of every stream and bucket (-1: none); unset: discoveries 64 MiB, MCP events 32 MiB, MCP sessions 8 MiB.",
    )
    discoveries_retention: Literal["limits", "interest"] = Field(
        default="limits", description="limits keeps discoveries until max age; interest drops them once all consumers have them."
    )
    max_deliver: int = Field(default=5, ge=1, le=100, description="Deliveries of a task before it is dead-lettered.")


class GatewaySpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("!self.enabled || has(self.host)", "host is required when the gateway is enabled", ".host"),
                HTTP_ROUTE_GATEWAY_RULE,
            ]
        }
    )

    enabled: bool = Field(default=False, description="One external entry for the swarm: /agents/<agent>/mcp per agent.")
    kind: Literal["Ingress", "HTTPRoute"] = Field(default="Ingress", description="Ingress or Gateway API HTTPRoute.")
    class_name: str | None = Field(default=None, description="IngressClass name, or the Gateway name for HTTPRoute.")
    host: str | None = Field(default=None, description="External host name.")
    tls: IngressTls | None = Field(default=None, description="Terminate TLS with this Secret.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations.")
    allow_anonymous: bool = Field(
        default=False,
        description="Route members whose spec.mcp.auth.mode is none too (anyone on the internet may call them); "
        "otherwise the gateway routes only members with auth.",
    )

    @model_validator(mode="after")
    def _check(self) -> GatewaySpec:
        if self.enabled and not self.host:
            raise ValueError("host is required when the gateway is enabled")
        check_route_gateway(self.enabled, self.kind, self.class_name)
        return self


# A member's name is its Agent's name, so the Agent's rule, checked where the member is written.
MEMBER_NAME_RULE = cel(
    f"self.name.matches('{AGENT_NAME}')",
    "name must start with a letter and hold only lowercase letters, digits and '-' (it names the member Agent and its Service)",
    ".name",
)
UNIQUE_MEMBERS_RULE = cel(
    "!has(self.agents) || self.agents.all(a, self.agents.exists_one(b, b.name == a.name))", "member names must be unique", ".agents"
)
MAX_MEMBERS = 100


class SwarmMember(Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [MEMBER_NAME_RULE]})

    name: str = Field(min_length=1, max_length=63, description="Name of the member Agent.")
    replicas: int | None = Field(default=None, ge=0, le=1000, description="Replicas; overrides the template's.")
    template: AgentSpec = Field(
        default_factory=AgentSpec,
        description=(
            "The member's Agent spec (fields as in Agent.spec), merged over spec.defaults. "
            "Checked as an Agent spec of its own: fields it leaves out count as the Agent's defaults."
        ),
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:  # a field check: the error's path is the field's, as the CEL rule's fieldPath
        if not re.match(AGENT_NAME, name):
            raise ValueError(MEMBER_NAME_RULE["message"])
        return name


class SwarmSpec(Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [UNIQUE_MEMBERS_RULE]})

    nats: NatsSpec = Field(default_factory=NatsSpec, description="The NATS the swarm talks over.")
    subject_prefix: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="Prefix of every subject; default ks.<namespace>.<swarm>. Must be ks.<namespace> or begin with ks.<namespace>.: "
        "the operator provisions and removes streams only under its own namespace's prefix.",
    )
    agents: list[SwarmMember] = Field(
        default_factory=list,
        max_length=MAX_MEMBERS,
        description="Agents the swarm owns.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    streams: StreamsSpec = Field(default_factory=StreamsSpec, description="JetStream settings of the swarm's streams.")
    gateway: GatewaySpec = Field(default_factory=GatewaySpec, description="One ingress for all member agents.")
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Agent spec fields merged into every member Agent. Checked for their names and types at apply; "
            "the rules between fields apply to each member's merged spec."
        ),
    )

    @field_validator("defaults")
    @classmethod
    def _check_defaults(cls, defaults: dict[str, Any]) -> dict[str, Any]:
        """As the CRD checks spec.defaults: an Agent spec's fields and types, not its rules between fields (value errors)."""
        try:
            AgentSpec.model_validate(defaults)
        except ValidationError as error:
            shape = [e for e in error.errors(include_url=False) if e["type"] != "value_error"]
            if shape:
                raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in shape)) from None
        return defaults

    @field_validator("agents")
    @classmethod
    def _check_agents(cls, agents: list[SwarmMember]) -> list[SwarmMember]:
        names = [member.name for member in agents]
        if len(set(names)) != len(names):
            raise ValueError(UNIQUE_MEMBERS_RULE["message"])
        return agents

    def member_spec(self, member: SwarmMember) -> AgentSpec:
        """The Agent spec of a member: defaults, then the fields its template sets, then replicas."""
        merged = deep_merge(self.defaults, member.template.model_dump(mode="json", by_alias=True, exclude_unset=True))
        if member.replicas is not None:
            merged["replicas"] = member.replicas
        return AgentSpec.model_validate(merged)


class SwarmStatus(Model):
    model_config = ConfigDict(extra="ignore")

    phase: Phase | None = Field(default=None, description="Pending, Running, Degraded or Failed.")
    agents: int | None = Field(default=None, description="Member agents.")
    ready_agents: int | None = Field(default=None, description="Member agents that are Ready.")
    ready: str | None = Field(default=None, description="Ready member agents of all of them, as kubectl prints a Deployment's: 2/3.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, NatsReady, ...", json_schema_extra=CONDITIONS_LIST)
    streams: dict[str, int] = Field(default_factory=dict, description="Message count of each stream.")
    dead_letters: int | None = Field(
        default=None, description="Dead letters waiting in the swarm's dead-letter stream (`kubeswarm dlq list` shows them)."
    )
    observed_generation: int | None = Field(default=None, description="Generation of the spec last reconciled.")
    endpoint: str | None = Field(
        default=None, description="External URL of the gateway, once it exists; each agent is at <endpoint>/agents/<agent>/mcp."
    )


class Swarm(Model):
    model_config = ConfigDict(extra="ignore")

    api_version: Literal["kubeswarm.io/v1alpha1"] = API_VERSION
    kind: Literal["Swarm"] = "Swarm"
    metadata: ObjectMeta
    spec: SwarmSpec = Field(default_factory=SwarmSpec)
    status: SwarmStatus | None = None

    @property
    def subject_prefix(self) -> str:
        return self.spec.subject_prefix or default_subject_prefix(self.metadata.namespace, self.metadata.name)

    def member_agent_spec(self, member: SwarmMember) -> AgentSpec:
        """A member's Agent spec as the operator applies it (and local mode runs it): ``member_spec`` naming this swarm."""
        return self.spec.member_spec(member).model_copy(update={"swarm": self.metadata.name})


def default_subject_prefix(namespace: str, swarm: str) -> str:
    return f"{namespace_subject_prefix(namespace)}.{swarm}"


def namespace_subject_prefix(namespace: str) -> str:
    """Every subject prefix a namespace's Swarms may use is this or begins with it and a dot.

    Namespace names hold no dots or underscores, so no two namespaces share a prefix, nor the
    stream and bucket names made from it (``SwarmNames.token``).
    """
    return f"ks.{namespace}"


def prefix_owned(namespace: str, prefix: str) -> bool:
    """May a Swarm of ``namespace`` use ``prefix``?  (Not another namespace's subjects, streams and buckets.)"""
    own = namespace_subject_prefix(namespace)
    return prefix == own or prefix.startswith(own + ".")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Override wins; nested mappings merge key by key, lists are replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
