"""Agent (+ Swarm) resources → the runtime's environment: the one render used by the operator and local mode.

No secret values are rendered. Secrets reach the process as environment
variables named below (the operator sets them from secretKeyRef; local mode
from the user's environment).
"""

from __future__ import annotations

import json
import secrets

from .config import ENV_NESTED_DELIMITER, ENV_PREFIX
from .resources import A2aAgentSpec, Agent, McpServerSpec, ObjectMeta, SecretKeyRef, Swarm, SwarmMember, ToolsSpec, default_subject_prefix

MODEL_API_KEY_ENV = "KUBESWARM_MODEL__API_KEY"
MCP_JWT_KEY_ENV = "KUBESWARM_MCP__JWT_KEY"
NATS_CREDS_FILE_ENV = "KUBESWARM_NATS__CREDS_FILE"  # a path: mount the credentials Secret as a file
NATS_USER_ENV = "KUBESWARM_NATS__USER"
NATS_PASSWORD_ENV = "KUBESWARM_NATS__PASSWORD"  # noqa: S105 - an env var name, not a value
NATS_TOKEN_ENV = "KUBESWARM_NATS__TOKEN"  # noqa: S105 - an env var name, not a value
MCP_HEADER_ENV_PREFIX = "KUBESWARM_TOOL_HEADER_"  # + <server index>_<header index>: a header value from a Secret
A2A_HEADER_ENV_PREFIX = "KUBESWARM_A2A_HEADER_"  # + <A2A agent index>_<header index>: the same for spec.tools.a2a
WEBHOOK_KEY_ENV_PREFIX = "KUBESWARM_WEBHOOK_KEY_"  # + <webhook index>: a webhook's HMAC key from a Secret
REPLICA_ID_ENV = "KUBESWARM_REPLICA_ID"  # defaults to the hostname (the pod name)
SECRET_ENV_NAMES = (MODEL_API_KEY_ENV, MCP_JWT_KEY_ENV, NATS_PASSWORD_ENV, NATS_TOKEN_ENV)
# The Secret the operator makes per Agent (``<agent>-credentials``) and its key holding the JWT signing key.
CREDENTIALS_SECRET_SUFFIX = "-credentials"  # noqa: S105 - a name suffix, not a value
JWT_SECRET_KEY = "jwt-key"  # noqa: S105 - the name of a key, not a secret


def new_jwt_key() -> str:
    """An agent's HS256 signing key (mcp.auth jwt) as text: URL-safe base64 of 48 random bytes.

    Text, not raw bytes: an environment variable must hold it (raw bytes may contain a NUL), and a
    token signed with the same text (``kubeswarm token``) must verify.
    """
    return secrets.token_urlsafe(48)


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
        ("model", "system_prompt"): spec.model.system_prompt,
        ("mcp", "enabled"): spec.mcp.enabled,
        ("mcp", "port"): spec.mcp.port,
        ("mcp", "auth"): spec.mcp.auth.mode.value,
        ("mcp", "issuer"): spec.mcp.auth.issuer,
        ("mcp", "audience"): spec.mcp.auth.audience,
        ("mcp", "required_scopes"): json.dumps(spec.mcp.auth.required_scopes) if spec.mcp.auth.required_scopes else None,
        ("mcp", "allowed_hosts"): json.dumps(allowed_hosts(agent, swarm, namespace)),
        ("mcp", "timeout_seconds"): spec.mcp.timeout_seconds,
        ("mcp", "processes"): spec.mcp.processes if spec.mcp.processes > 1 else None,  # 1 is the runtime's default
        **tools_values(spec.tools),
        **triggers_values(agent),
    }
    if swarm is not None:
        streams = swarm.spec.streams
        values |= {
            ("streams", "replicas"): streams.replicas,
            ("streams", "max_age_seconds"): streams.max_age_seconds,
            ("streams", "max_deliver"): streams.max_deliver,
        }
    return {_env(*path): _text(value) for path, value in values.items() if value is not None and value != ""}


def header_env(prefix: str, server: int, header: int) -> str:
    return f"{prefix}{server}_{header}"


def tool_header_secrets(tools: ToolsSpec) -> list[tuple[str, SecretKeyRef]]:
    """(env var, Secret key) of each header of a remote tool server (MCP servers, A2A agents) read from a Secret: the
    operator sets them with secretKeyRef."""
    remotes = [(MCP_HEADER_ENV_PREFIX, i, server.headers) for i, server in enumerate(tools.mcp_servers)]
    remotes += [(A2A_HEADER_ENV_PREFIX, i, agent.headers) for i, agent in enumerate(tools.a2a)]
    return [
        (header_env(prefix, i, j), header.value_from.secret_key_ref)
        for prefix, i, headers in remotes
        for j, header in enumerate(headers)
        if header.value_from is not None
    ]


def webhook_key_env(index: int) -> str:
    return f"{WEBHOOK_KEY_ENV_PREFIX}{index}"


def webhook_key_secrets(agent: Agent) -> list[tuple[str, SecretKeyRef]]:
    """(env var, Secret key) of each webhook's HMAC key: the operator sets them with secretKeyRef."""
    return [(webhook_key_env(i), hook.secret_key_ref) for i, hook in enumerate(agent.spec.triggers.webhooks)]


def triggers_values(agent: Agent) -> dict[tuple[str, ...], object]:
    """``spec.triggers`` as the runtime reads it (lists as JSON); nothing for an agent without triggers."""
    triggers = agent.spec.triggers
    values: dict[tuple[str, ...], object] = {}
    if triggers.cron:
        values["triggers", "cron"] = json.dumps([t.model_dump(exclude_none=True) for t in triggers.cron])
    if triggers.webhooks:
        hooks = [{"name": h.name, "capability": h.capability, "key_env": webhook_key_env(i)} for i, h in enumerate(triggers.webhooks)]
        values["triggers", "webhooks"] = json.dumps(hooks)
    return values


def _remote(prefix: str, index: int, server: McpServerSpec | A2aAgentSpec) -> dict[str, object]:
    """A remote tool server's settings: its fields, literal headers, and the env vars of its Secret headers."""
    return server.model_dump(exclude={"headers"}) | {
        "headers": {h.name: h.value for h in server.headers if h.value is not None},
        "header_env": {h.name: header_env(prefix, index, j) for j, h in enumerate(server.headers) if h.value_from is not None},
    }


def tools_values(tools: ToolsSpec) -> dict[tuple[str, ...], object]:
    """The fields of ``spec.tools`` set to other than their defaults (the runtime has the same defaults): an agent
    without tools keeps the configuration it had, so an upgrade does not roll its pods."""
    values: dict[tuple[str, ...], object] = {}
    for field in tools.model_dump(exclude_defaults=True):
        value = getattr(tools, field)
        if field == "mcp_servers":
            value = [_remote(MCP_HEADER_ENV_PREFIX, i, s) for i, s in enumerate(tools.mcp_servers)]
        elif field == "a2a":
            value = [_remote(A2A_HEADER_ENV_PREFIX, i, a) for i, a in enumerate(tools.a2a)]
        elif field == "agents":
            value = [a.model_dump(exclude_none=True) for a in tools.agents]
        # Lists travel as JSON (pydantic-settings decodes them).
        values["tools", field] = json.dumps(value) if isinstance(value, list) else value
    return values


def allowed_hosts(agent: Agent, swarm: Swarm | None, namespace: str) -> list[str]:
    """The Host names an agent's endpoint answers to: its Service's names, its ingress host, its swarm's gateway host."""
    name = agent.metadata.name
    hosts = [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
    hosts += [host for host in (agent.spec.mcp.ingress.host, swarm.spec.gateway.host if swarm else None) if host]
    return list(dict.fromkeys([*hosts, *agent.spec.mcp.allowed_hosts]))


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def member_agent(swarm: Swarm, member: SwarmMember) -> Agent:
    """One member Agent a Swarm owns, as the operator creates it; a template that is no valid Agent spec raises ValidationError."""
    return Agent(metadata=ObjectMeta(name=member.name, namespace=swarm.metadata.namespace), spec=swarm.member_agent_spec(member))
