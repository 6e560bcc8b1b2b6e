"""The runtime's configuration: the contract between the operator (or local mode) and an agent process.

One pydantic-settings model read from ``KUBESWARM_*`` environment variables
(nested fields with ``__``, e.g. ``KUBESWARM_MODEL__PROVIDER``) and, below
them in priority, an optional YAML file named by ``KUBESWARM_CONFIG_FILE``.
The operator renders it with :func:`kubeswarm_runtime.render.render_runtime_env`.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from . import __version__
from .resources import AuthMode, Provider, check_schedule, default_subject_prefix

ENV_PREFIX = "KUBESWARM_"
ENV_NESTED_DELIMITER = "__"
CONFIG_FILE_ENV = "KUBESWARM_CONFIG_FILE"
NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
MIB = 1 << 20


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NatsConfig(Section):
    url: str = Field(default="nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated.")
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    creds_file: Path | None = Field(
        default=None, description="A NATS .creds file (JWT + nkey seed); re-read on every reconnect, so a rotated file is used."
    )
    creds_check_seconds: float = Field(default=10.0, gt=0, description="How often the creds file is checked for a rotation.")
    inbox_prefix: str = Field(default="_INBOX", pattern=r"^[A-Za-z0-9_$-]+$", description="Subject prefix of reply inboxes.")
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # A dead server is noticed after ping_interval * (max_outstanding_pings + 1): 15 s with these defaults.
    ping_interval_seconds: float = Field(default=5.0, gt=0)
    max_outstanding_pings: int = Field(default=2, ge=1)
    reconnect_base_seconds: float = Field(default=0.25, gt=0)
    reconnect_max_seconds: float = Field(default=5.0, gt=0)

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]


class ModelConfig(Section):
    provider: Provider = Provider.ECHO  # the same vocabulary as an Agent's spec.model.provider
    name: str = ""
    max_tokens: int = Field(default=1024, ge=1)
    api_key: SecretStr | None = None
    endpoint: str | None = Field(default=None, description="http: the URL tasks are POSTed to; anthropic/bedrock/openai: API base URL.")
    region: str | None = None
    system_prompt: str | None = None
    max_retries: int = Field(default=4, ge=0)
    retry_base_seconds: float = Field(default=0.5, gt=0)
    request_timeout_seconds: float = Field(default=120.0, gt=0)


class McpServerConfig(Section):
    name: str = Field(pattern=NAME_PATTERN)
    url: str
    transport: Literal["streamable-http", "sse"] = "streamable-http"
    timeout_seconds: float = Field(default=30, gt=0)
    headers: dict[str, str] = Field(default_factory=dict, description="Literal header values.")
    header_env: dict[str, str] = Field(
        default_factory=dict, description="Header name → environment variable holding its value (a Secret's, in a pod)."
    )


class A2aAgentConfig(Section):
    name: str = Field(pattern=NAME_PATTERN)
    url: str
    description: str = ""
    timeout_seconds: float = Field(default=120, gt=0)
    headers: dict[str, str] = Field(default_factory=dict, description="Literal header values.")
    header_env: dict[str, str] = Field(
        default_factory=dict, description="Header name → environment variable holding its value (a Secret's, in a pod)."
    )


class AgentToolConfig(Section):
    name: str = Field(pattern=NAME_PATTERN)
    capability: str | None = Field(default=None, pattern=NAME_PATTERN)
    description: str = ""


class ToolsConfig(Section):
    """The tool loop (docs/tools.md): what the model may call and the limits of one task (``spec.tools``)."""

    swarm: bool = True
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    mcp_servers: list[McpServerConfig] = Field(default_factory=list)
    agents: list[AgentToolConfig] = Field(default_factory=list)
    a2a: list[A2aAgentConfig] = Field(default_factory=list)
    max_turns: int = Field(default=10, ge=1)
    max_tool_calls: int = Field(default=50, ge=0)
    max_tokens_per_task: int = Field(default=200000, ge=1)
    max_delegation_depth: int = Field(default=3, ge=0)
    tool_timeout_seconds: float = Field(default=120, gt=0)
    # Tool inputs and outputs are kept in the task's steps up to this many characters each.
    step_text_chars: int = Field(default=500, ge=16)


class McpConfig(Section):
    enabled: bool = True
    port: int = Field(default=8080, ge=1, le=65535)
    auth: AuthMode = AuthMode.NONE  # the same vocabulary as an Agent's spec.mcp.auth.mode
    issuer: str | None = None
    audience: str | None = None
    jwt_key: SecretStr | None = None
    timeout_seconds: float = Field(default=3600, gt=0, description="Longest life of one SSE/WebSocket connection (clients reconnect).")
    required_scopes: list[str] = Field(default_factory=list, description="oidc/jwt: scopes every token must carry (else 403).")
    allowed_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed besides the server's own host; others get 403."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host header names this endpoint answers to, against DNS rebinding (others get 421); IP addresses and "
            "localhost always pass. Empty: any host (the operator sets the Service and ingress names)."
        ),
    )
    session_ttl_seconds: float = Field(default=3600, gt=0, description="An MCP session unused this long expires (404).")
    rate_limit_per_second: float = Field(default=100, ge=0, description="Per-caller token bucket refill rate; 0 disables.")
    rate_limit_burst: int = Field(default=200, ge=1)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    request_read_timeout_seconds: float = Field(default=30, gt=0, description="Slow clients: longest wait for a request body.")
    write_timeout_seconds: float = Field(default=30, gt=0, description="Slow clients: longest wait for a stream write to drain.")
    max_streams: int = Field(default=2048, ge=1, description="Concurrent SSE and WebSocket connections; 503 past it.")
    max_in_flight: int = Field(
        default=256, ge=1, description="HTTP requests doing work (every method but GET/HEAD/OPTIONS) served at once; 429 past it."
    )
    max_in_flight_bytes: int = Field(
        default=32 * MIB,
        ge=1024,
        description="Their bodies' bytes at once (Content-Length, else max_request_bytes); 429 past it.",
    )
    keepalive_seconds: float = Field(default=15, gt=0, description="Comment/ping interval on idle streams.")
    ws_max_in_flight: int = Field(
        default=32, ge=1, description="Requests one WebSocket, or one session on one replica, may have running at once."
    )
    tools_page_size: int = Field(default=50, ge=1)
    processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Processes serving this port (SO_REUSEPORT): the first also runs the replica's tasks, presence and metrics "
            "port; the others only answer HTTP requests, each over its own NATS connection."
        ),
    )

    @model_validator(mode="after")
    def _check_admission(self) -> McpConfig:
        if self.max_in_flight_bytes < self.max_request_bytes:
            raise ValueError("mcp.max_in_flight_bytes must be at least mcp.max_request_bytes (else a request that large is never admitted)")
        return self


class StreamsConfig(Section):
    """Settings used when the runtime creates streams itself; a Swarm's existing streams win."""

    replicas: int | None = Field(default=None, ge=1, le=5, description="Unset: 3 on a NATS cluster of 3 or more servers, else 1.")
    max_age_seconds: float = Field(default=7 * 24 * 3600, ge=0, description="Tasks, discoveries, dead letters and task state.")
    tasks_max_messages: int = Field(default=1_000_000, ge=-1, description="Tasks queued at most; a full queue refuses new ones.")
    dead_letters_max_messages: int = Field(default=100_000, ge=-1, description="Dead letters kept at most (oldest dropped).")
    discoveries_max_bytes: int = Field(default=64 * MIB, ge=-1, description="Discoveries kept at most (oldest dropped).")
    mcp_events_max_bytes: int = Field(default=32 * MIB, ge=-1, description="MCP stream events kept for resumption (oldest dropped).")
    mcp_sessions_max_bytes: int = Field(default=8 * MIB, ge=-1, description="MCP sessions at most; a full bucket refuses new ones.")
    max_deliver: int = Field(default=5, ge=1)
    ack_wait_seconds: float = Field(default=30.0, gt=0)
    retry_backoff_seconds: float = Field(default=1.0, ge=0, description="First nak delay; doubles per attempt.")
    retry_backoff_max_seconds: float = Field(default=60.0, ge=0)
    duplicate_window_seconds: float = Field(default=120.0, gt=0)


class CronTriggerConfig(Section):
    name: str = Field(pattern=NAME_PATTERN)
    schedule: str
    time_zone: str = "UTC"
    capability: str = Field(pattern=NAME_PATTERN)
    input: Any = None

    @model_validator(mode="after")
    def _check(self) -> CronTriggerConfig:
        check_schedule(self.schedule, self.time_zone)
        return self


class WebhookConfig(Section):
    name: str = Field(pattern=NAME_PATTERN)
    capability: str = Field(pattern=NAME_PATTERN)
    key_env: str = Field(description="The environment variable holding the HMAC key (set from the Secret).")


class TriggersConfig(Section):
    cron: list[CronTriggerConfig] = Field(default_factory=list)
    webhooks: list[WebhookConfig] = Field(default_factory=list)


class RuntimeConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        frozen=True,
        extra="ignore",
    )

    agent: str = Field(pattern=NAME_PATTERN, description="Name of the Agent this process serves.")
    namespace: str = "default"
    swarm: str = "default"
    subject_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", description="Default ks.<ns>.<swarm>.")
    replica_id: str = Field(default_factory=socket.gethostname)
    role: str = "worker"
    capabilities: Annotated[list[str], NoDecode] = Field(default_factory=list)
    version: str = __version__
    endpoint: str | None = Field(default=None, description="MCP URL this replica announces in the registry.")
    nats: NatsConfig = Field(default_factory=NatsConfig)
    concurrency: int = Field(default=4, ge=1)
    task_timeout_seconds: float = Field(default=300, gt=0)
    heartbeat_seconds: float = Field(default=10, gt=0)
    shutdown_grace_seconds: float = Field(default=25, ge=0, description="How long in-flight tasks may finish on SIGTERM.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    mcp: McpConfig = Field(default_factory=McpConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    triggers: TriggersConfig = Field(default_factory=TriggersConfig)
    metrics_port: int = Field(default=9090, ge=1, le=65535)
    listen_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - a pod serves its probes and endpoint on all its interfaces
        description="Address the MCP and metrics ports listen on (local mode: 127.0.0.1 unless `kubeswarm up --listen`).",
    )
    streams: StreamsConfig = Field(default_factory=StreamsConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_subject_prefix(cls, data: object) -> object:
        if isinstance(data, dict) and not data.get("subject_prefix"):
            data = {**data, "subject_prefix": default_subject_prefix(data.get("namespace", "default"), data.get("swarm", "default"))}
        return data

    @field_validator("capabilities", mode="before")
    @classmethod
    def _split_capabilities(cls, value: object) -> object:
        # Env carries "a,b" (what the operator renders) or a JSON list.
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [c.strip() for c in text.split(",") if c.strip()]
        return value

    @field_validator("capabilities")
    @classmethod
    def _check_capabilities(cls, value: list[str]) -> list[str]:
        for cap in value:
            if not cap.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"capability {cap!r} may only hold letters, digits, '-' and '_'")
        return value

    @field_validator("replica_id")
    @classmethod
    def _subject_safe_replica(cls, value: str) -> str:
        # A replica id is a subject token: FQDN hostnames carry dots.
        return value.replace(".", "-").replace(" ", "-").replace("*", "-").replace(">", "-")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


class ConfigError(Exception):
    """Invalid configuration; the message names each offending field and its env var."""


def env_name(location: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(part).upper() for part in location)


def load_config(**overrides: object) -> RuntimeConfig:
    """Read the configuration from the environment (and config file), or raise ConfigError."""
    config_file = os.environ.get(CONFIG_FILE_ENV)
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"{CONFIG_FILE_ENV}: config file {config_file} does not exist")
    try:
        return RuntimeConfig(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [
            f"  {env_name(err['loc']) if err['loc'] else '(config)'} ({'.'.join(map(str, err['loc']))}): {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError("invalid kubeswarm runtime configuration:\n" + "\n".join(lines)) from None
    except ValueError as exc:  # a malformed JSON value in an env var
        raise ConfigError(f"invalid kubeswarm runtime configuration: {exc}") from None
