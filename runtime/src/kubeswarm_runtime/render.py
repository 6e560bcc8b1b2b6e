"""Agent (+ Swarm) resources → the runtime's environment: the one render used by the operator and local mode.

No secret values are rendered. Secrets reach the process as environment
variables named below (the operator sets them from secretKeyRef; local mode
from the user's environment).
"""

from __future__ import annotations

from .config import ENV_NESTED_DELIMITER, ENV_PREFIX
from .resources import Agent, ObjectMeta, Swarm, SwarmMember, default_subject_prefix

MODEL_API_KEY_ENV = "KUBESWARM_MODEL__API_KEY"
MCP_JWT_KEY_ENV = "KUBESWARM_MCP__JWT_KEY"
NATS_CREDS_FILE_ENV = "KUBESWARM_NATS__CREDS_FILE"  # a path: mount the credentials Secret as a file
NATS_USER_ENV = "KUBESWARM_NATS__USER"
NATS_PASSWORD_ENV = "KUBESWARM_NATS__PASSWORD"  # noqa: S105 - an env var name, not a value
NATS_TOKEN_ENV = "KUBESWARM_NATS__TOKEN"  # noqa: S105 - an env var name, not a value
REPLICA_ID_ENV = "KUBESWARM_REPLICA_ID"  # defaults to the hostname (the pod name)
SECRET_ENV_NAMES = (MODEL_API_KEY_ENV, MCP_JWT_KEY_ENV, NATS_PASSWORD_ENV, NATS_TOKEN_ENV)


def _env(*path: str) -> str:
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(p.upper() for p in path)


def agent_subject_prefix(agent: Agent, swarm: Swarm | None, namespace: str) -> str:
    """The subject prefix ``agent`` uses: its Swarm's, else the default of its swarm's name."""
    return swarm.subject_prefix if swarm is not None else default_subject_prefix(namespace, agent.spec.swarm)


def render_runtime_env(agent: Agent, swarm: Swarm | None, *, namespace: str, nats_url: str) -> dict[str, str]:
    """The KUBESWARM_* variables that configure ``agent``'s runtime (secret-free)."""
    spec = agent.spec
    prefix = agent_subject_prefix(agent, swarm, namespace)
    values: dict[tuple[str, ...], object] = {
        ("agent",): agent.metadata.name,
        ("namespace",): namespace,
        ("swarm",): spec.swarm,
        ("subject_prefix",): prefix,
        ("role",): spec.role,
        ("capabilities",): ",".join(spec.capabilities),
        ("concurrency",): spec.concurrency,
        ("task_timeout_seconds",): spec.task_timeout_seconds,
        ("heartbeat_seconds",): spec.heartbeat_seconds,
        ("nats", "url"): nats_url,
        ("model", "provider"): spec.model.provider.value,
        ("model", "name"): spec.model.name,
        ("model", "max_tokens"): spec.model.max_tokens,
        ("model", "endpoint"): spec.model.endpoint,
        ("model", "region"): spec.model.region,
        ("mcp", "enabled"): spec.mcp.enabled,
        ("mcp", "port"): spec.mcp.port,
        ("mcp", "auth"): spec.mcp.auth.mode.value,
        ("mcp", "issuer"): spec.mcp.auth.issuer,
        ("mcp", "audience"): spec.mcp.auth.audience,
        ("mcp", "timeout_seconds"): spec.mcp.timeout_seconds,
    }
    if swarm is not None:
        streams = swarm.spec.streams
        values |= {
            ("streams", "replicas"): streams.replicas,
            ("streams", "max_age_seconds"): streams.max_age_seconds,
            ("streams", "max_deliver"): streams.max_deliver,
        }
    return {_env(*path): _text(value) for path, value in values.items() if value is not None and value != ""}


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def member_agent(swarm: Swarm, member: SwarmMember) -> Agent:
    """One member Agent a Swarm owns, as the operator creates it; a template that is no valid Agent spec raises ValidationError."""
    return Agent(metadata=ObjectMeta(name=member.name, namespace=swarm.metadata.namespace), spec=swarm.member_agent_spec(member))
