"""Operator settings: environment (prefix ``KUBESWARM_``), overridable by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from kubeswarm_runtime import __version__
from kubeswarm_runtime.resources import check_url_credentials
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBESWARM_", frozen=True)

    runtime_image: str = Field(default=f"kubeswarm/runtime:{__version__}", description="Image of agents that set no spec.image.")
    nats_url: str = Field(
        default="nats://nats.kubeswarm-system.svc:4222",
        description="NATS URL of agents whose Swarm object does not exist (chart value nats.url).",
    )
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Namespaces to watch, comma-separated; empty means the whole cluster."
    )
    field_manager: str = Field(default="kubeswarm-operator", description="Server-side apply field manager of every child.")
    resync_seconds: float = Field(default=60.0, gt=0, description="Period of the level check of each Agent.")
    worker_limit: int = Field(default=32, ge=1, description="Objects handled concurrently.")
    watch_server_timeout: int = Field(default=300, gt=0, description="Server-side timeout of one watch request.")
    watch_client_timeout: float = Field(default=330.0, gt=0, description="Client-side timeout of one watch request.")
    metrics_port: int = Field(default=9091, ge=0, le=65535, description="Port of the operator's /metrics (0: off).")
    health_port: int = Field(default=8081, ge=0, le=65535, description="Port of the /healthz liveness endpoint (0: off).")
    ingress_namespace: str = Field(
        default="ingress-nginx", description="Namespace of the ingress controller allowed to reach MCP endpoints."
    )
    dns_selector: str = Field(
        default="k8s-app=kube-dns",
        description="Labels (k=v,...) of the cluster DNS pods, the only DNS the agents' NetworkPolicy lets them ask; "
        "empty: port 53 anywhere (e.g. NodeLocal DNSCache).",
    )
    # -- Swarms, autoscaling, AWS (the operator's own NATS identity is used where a Swarm names no credentials)
    nats_creds_file: Path | None = Field(default=None, description="NATS .creds file of the operator's own connections.")
    nats_user: str | None = Field(default=None, description="NATS user of the operator's own connections.")
    nats_password: SecretStr | None = Field(default=None, description="NATS password of the operator's own connections.")
    # -- NATS identities (docs/security.md): set by the chart, whose NATS servers mount the auth Secret
    nats_auth_secret: str = Field(
        default="",
        description="Secret holding the NATS master key and the servers' auth files; empty: no NATS identities are issued.",
    )
    nats_auth_namespace: str = Field(default="", description="Namespace of the auth Secret (the operator's own).")
    nats_operator_url: str = Field(
        default="",
        description="How the operator reaches its own NATS where that differs from nats_url (it runs outside the cluster).",
    )
    nats_resolver_dir: str = Field(default="/data/jwt", description="Where the NATS servers keep the account JWTs pushed to them.")
    nats_routes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="host:port of every NATS server's route port, comma-separated (routes.conf)."
    )
    nats_connect_timeout_seconds: float = Field(default=3.0, gt=0, description="How long one NATS connection attempt may take.")
    swarm_resync_seconds: float = Field(default=30.0, gt=0, description="Period of each Swarm's level check (stream counts, gateway).")
    swarm_delete_timeout_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How long a Swarm's finalizer retries an unreachable NATS before leaving its streams.",
    )
    autoscale_interval_seconds: float = Field(default=2.0, gt=0, description="How often the backlog of autoscaled Agents is read.")
    aws_endpoint_url: str | None = Field(default=None, description="Secrets Manager endpoint override (tests, VPC endpoints).")
    agent_env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment of every agent pod, as JSON (chart value runtime.env), e.g. OTEL_* for traces; an Agent's spec.env wins.",
    )
    aws_secret_prefix: str = Field(
        default="kubeswarm/{namespace}/",
        description="An Agent's awsSecretsManager.secretId must name a secret beginning with this ({namespace}: the "
        "Agent's), so no namespace reads another's through the operator's AWS identity; empty: any secret.",
    )
    aws_refresh_seconds: float = Field(default=300.0, gt=0, description="How often AWS secrets are re-read to pick up rotation.")

    @field_validator("nats_url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        # The default URL reaches every swarm-less Agent's ConfigMap: credentials go in nats_user/password or a creds file.
        check_url_credentials(value)
        return value

    @field_validator("agent_env")
    @classmethod
    def _not_the_runtime_config(cls, value: dict[str, str]) -> dict[str, str]:
        # The runtime's own configuration is the operator's to render from each Agent.
        if taken := sorted(name for name in value if name.upper().startswith("KUBESWARM_")):
            raise ValueError(f"KUBESWARM_* names are the runtime's configuration, set from each Agent: {', '.join(taken)}")
        return value

    @property
    def dns_labels(self) -> dict[str, str]:
        pairs = (part.split("=", 1) for part in self.dns_selector.split(",") if "=" in part)
        return {key.strip(): value.strip() for key, value in pairs}

    @field_validator("namespaces", "nats_routes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
