"""The objects an Agent owns, as pure functions of the Agent (no cluster needed).

Each ``build_*`` returns one manifest, ready for server-side apply; what the
live cluster holds (existing Secret data, referenced Secrets' digests) comes
in as plain arguments, so everything here is unit-testable.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

from kubeswarm_runtime.render import CREDENTIALS_SECRET_SUFFIX, JWT_SECRET_KEY, tool_header_secrets, webhook_key_secrets
from kubeswarm_runtime.resources import Agent, AuthMode, Provider, SecretKeyRef

from ..kube.kinds import CONFIG_MAP, DEPLOYMENT, INGRESS, NETWORK_POLICY, PDB, SECRET, SERVICE, Kind, Manifest
from ..kube.owned import AGENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, SWARM_LABEL, controller_reference, digest, owned

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
APP_NAME = "kubeswarm-agent"
CONFIG_HASH_ANNOTATION = "kubeswarm.io/config-hash"

# The agent's NATS identity in its credentials Secret, mounted as a file (never env); rotated without a rollout.
NATS_CREDS_KEY = "nats.creds"
NATS_CREDS_DIR = "/var/run/kubeswarm/nats"
NATS_IDENTITY_ANNOTATION = "kubeswarm.io/nats-identity"  # account and prefix the creds were issued for
NATS_RENEW_AFTER_ANNOTATION = "kubeswarm.io/nats-renew-after"  # epoch seconds: issue new creds from then on
AWS_SYNCED_KEY = "api-key"  # the key of the Secret an AWS Secrets Manager value is synced into
METRICS_PORT = 9090
RUNTIME_COMMAND = ["python", "-m", "kubeswarm_runtime"]
RUNTIME_USER = 10001
DEFAULT_RESOURCES: Manifest = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


def config_map_name(agent: Agent) -> str:
    return f"{agent.metadata.name}-runtime"


def secret_name(agent: Agent) -> str:
    return agent.metadata.name + CREDENTIALS_SECRET_SUFFIX


def child_name(agent: Agent, kind: Kind) -> str:
    if kind is CONFIG_MAP:
        return config_map_name(agent)
    if kind is SECRET:
        return secret_name(agent)
    return agent.metadata.name


def selector_labels(agent: Agent) -> dict[str, str]:
    """Pod selector of the Deployment, Service, PDB and NetworkPolicy (immutable: only stable labels)."""
    return {NAME_LABEL: APP_NAME, AGENT_LABEL: agent.metadata.name}


def selector_string(agent: Agent) -> str:
    return ",".join(f"{key}={value}" for key, value in selector_labels(agent).items())


def child_labels(agent: Agent) -> dict[str, str]:
    return {
        **selector_labels(agent),
        INSTANCE_LABEL: agent.metadata.name,
        MANAGED_BY_LABEL: MANAGED_BY,
        SWARM_LABEL: agent.spec.swarm,
    }


def owner_reference(agent: Agent) -> Manifest:
    return controller_reference("Agent", agent.metadata.name, agent.metadata.uid)


def manifest(agent: Agent, kind: Kind, body: Manifest, *, annotations: Mapping[str, str] | None = None) -> Manifest:
    """A child with our labels, owner reference and the hash of its own content."""
    return owned(
        kind,
        child_name(agent, kind),
        agent.metadata.namespace,
        labels=child_labels(agent),
        owner=owner_reference(agent),
        body=body,
        annotations=annotations,
    )


def build_config_map(agent: Agent, runtime_env: Mapping[str, str]) -> Manifest:
    """The runtime's configuration as environment variables (no secret values: those come from Secrets)."""
    return manifest(agent, CONFIG_MAP, {"data": dict(sorted(runtime_env.items()))})


def build_secret(agent: Agent, annotations: Mapping[str, str] | None = None) -> Manifest:
    """The per-agent credentials Secret without its data.

    The data (the JWT signing key; the NATS creds, with ``annotations`` saying for what and until when) is
    written by the reconciler when missing or due, never re-applied, so reconciles cannot rotate it by accident.
    """
    return manifest(agent, SECRET, {"type": "Opaque"}, annotations=annotations)


def build_service(agent: Agent) -> Manifest:
    ports = [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}]
    if agent.spec.mcp.enabled:
        ports.insert(0, {"name": "mcp", "port": agent.spec.mcp.port, "targetPort": "mcp", "protocol": "TCP"})
    return manifest(agent, SERVICE, {"spec": {"type": "ClusterIP", "selector": selector_labels(agent), "ports": ports}})


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable read from a Secret key."""

    env: str
    secret: str
    key: str


AWS_SYNCED_SUFFIX = "-aws-api-key"


def aws_synced_secret_name(agent: Agent) -> str:
    return agent.metadata.name + AWS_SYNCED_SUFFIX


def api_key_ref(agent: Agent) -> SecretKeyRef | None:
    """Where the pods read the model API key: the user's Secret, or the one the operator syncs from AWS Secrets Manager."""
    model = agent.spec.model
    if model.aws_secrets_manager is not None:
        return SecretKeyRef(name=aws_synced_secret_name(agent), key=AWS_SYNCED_KEY)
    return model.api_key_secret_ref


def secret_env(agent: Agent, *, api_key_env: str, jwt_key_env: str) -> list[SecretEnv]:
    """Environment the runtime reads from Secrets (the API key, the JWT signing key, MCP servers' headers)."""
    out = []
    ref = api_key_ref(agent)
    if ref is not None:
        out.append(SecretEnv(api_key_env, ref.name, ref.key))
    if agent.spec.mcp.auth.mode is AuthMode.JWT:
        out.append(SecretEnv(jwt_key_env, secret_name(agent), JWT_SECRET_KEY))
    out += [SecretEnv(env, header.name, header.key) for env, header in tool_header_secrets(agent.spec.tools)]
    out += [SecretEnv(env, key.name, key.key) for env, key in webhook_key_secrets(agent)]
    return out


def referenced_objects(agent: Agent) -> set[tuple[str, str]]:
    """(kind, name) of every Secret and ConfigMap the pods read: a change to any of them rolls the pods."""
    refs = {("ConfigMap", config_map_name(agent)), ("Secret", secret_name(agent))}
    api_key = api_key_ref(agent)
    if api_key is not None:
        refs.add(("Secret", api_key.name))
    refs |= {("Secret", header.name) for _env, header in tool_header_secrets(agent.spec.tools)}
    refs |= {("Secret", key.name) for _env, key in webhook_key_secrets(agent)}
    for var in agent.spec.env:
        source = var.get("valueFrom") or {}
        for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            if isinstance(source.get(field), dict) and source[field].get("name"):
                refs.add((kind, source[field]["name"]))
    for env_from in agent.spec.env_from:
        for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
            if isinstance(env_from.get(field), dict) and env_from[field].get("name"):
                refs.add((kind, env_from[field]["name"]))
    return refs


def config_hash(digests: Mapping[tuple[str, str], object]) -> str:
    """Hash of the referenced objects' content digests (None for a missing object)."""
    return digest(sorted([f"{kind}/{name}", value] for (kind, name), value in digests.items()))


def http_probe(path: str, period: int, failures: int) -> Manifest:
    return {"httpGet": {"path": path, "port": "mcp"}, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": failures}


def build_deployment(
    agent: Agent,
    *,
    image: str,
    config_hash: str,
    api_key_env: str,
    jwt_key_env: str,
    nats_creds_env: str | None = None,
    nats_creds_ref: SecretKeyRef | None = None,
    with_replicas: bool = True,
) -> Manifest:
    """The runtime pods: restricted pod security, probes on the runtime's endpoints, a config hash to roll them.

    ``nats_creds_env``: the variable naming the creds file (None: no NATS creds), mounted from ``nats_creds_ref``:
    the Swarm's credentialsSecretRef, or (default) the agent's identity in its credentials Secret.
    ``with_replicas=False`` leaves replicas to whoever else scales the Deployment (an HPA).
    """
    spec = agent.spec
    env = [
        {"name": s.env, "valueFrom": {"secretKeyRef": {"name": s.secret, "key": s.key}}}
        for s in secret_env(agent, api_key_env=api_key_env, jwt_key_env=jwt_key_env)
    ]
    container: Manifest = {
        "name": "runtime",
        "image": spec.image or image,
        "command": RUNTIME_COMMAND,
        "ports": [
            {"name": "mcp", "containerPort": spec.mcp.port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "envFrom": [{"configMapRef": {"name": config_map_name(agent)}}, *spec.env_from],
        "env": [*env, *spec.env],
        "resources": spec.resources if spec.resources is not None else DEFAULT_RESOURCES,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # Every second for up to a minute: a pod is Ready about a second sooner than with a 2 s period
        # (bench/bench_real_pod.py), and startup is the only time this probe runs.
        "startupProbe": http_probe("/healthz", 1, 60),
        "livenessProbe": http_probe("/healthz", 10, 3),
        "readinessProbe": http_probe("/readyz", 5, 2),
        # The root filesystem is read-only; Python and libraries still want a scratch directory (an emptyDir).
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108,
    }
    volumes: list[Manifest] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    if nats_creds_env is not None:
        container["env"].insert(0, {"name": nats_creds_env, "value": f"{NATS_CREDS_DIR}/{NATS_CREDS_KEY}"})
        container["volumeMounts"].append({"name": "nats-creds", "mountPath": NATS_CREDS_DIR, "readOnly": True})
        # Not a subPath mount: the kubelet then swaps in a rotated file, which the runtime reconnects with.
        ref = nats_creds_ref or SecretKeyRef(name=secret_name(agent), key=NATS_CREDS_KEY)
        items = [{"key": ref.key, "path": NATS_CREDS_KEY}]
        volumes.append({"name": "nats-creds", "secret": {"secretName": ref.name, "items": items, "defaultMode": 0o440}})
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_USER,
            "runAsGroup": RUNTIME_USER,
            "fsGroup": RUNTIME_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    optional = {
        "serviceAccountName": spec.service_account_name,
        "nodeSelector": spec.node_selector,
        "tolerations": spec.tolerations,
        "affinity": spec.affinity,
    }
    pod_spec.update({key: value for key, value in optional.items() if value})
    pod_annotations = {
        **spec.pod_annotations,
        CONFIG_HASH_ANNOTATION: config_hash,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
    }
    deployment_spec: Manifest = {
        "selector": {"matchLabels": selector_labels(agent)},
        "revisionHistoryLimit": 3,
        "template": {
            # Our labels last: a podLabels entry must not break the selector.
            "metadata": {"labels": {**spec.pod_labels, **child_labels(agent)}, "annotations": pod_annotations},
            "spec": pod_spec,
        },
    }
    if with_replicas:
        deployment_spec = {"replicas": spec.replicas, **deployment_spec}
    return manifest(agent, DEPLOYMENT, {"spec": deployment_spec})


def build_pdb(agent: Agent) -> Manifest | None:
    """Keep all but one pod through voluntary disruptions; only meaningful with several replicas."""
    if agent.spec.replicas <= 1:
        return None
    return manifest(agent, PDB, {"spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(agent)}}})


NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DNS_SELECTOR = MappingProxyType({"k8s-app": "kube-dns"})  # the label CoreDNS and kube-dns pods carry in kubeadm, EKS, GKE, AKS and kind


def url_ports(urls: Iterable[str], default: int) -> list[int]:
    return sorted({urlsplit(url.strip()).port or default for url in urls if url.strip()})


def url_peers(url: str, namespace: str) -> list[Manifest] | None:
    """Where a URL's host is, as NetworkPolicy peers: an address as an ipBlock, an in-cluster Service name
    (``svc``, ``[pod.]svc.ns.svc[.<domain>]``) as its namespace; None for a name outside the cluster, which a
    NetworkPolicy cannot express (its port is then open to any destination)."""
    host = (urlsplit(url.strip()).hostname or "").rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [{"ipBlock": {"cidr": f"{address}/{address.max_prefixlen}"}}]
    labels = host.split(".")
    if len(labels) == 1 and labels[0]:
        in_namespace = namespace
    elif "svc" in labels[2:]:  # <service>.<ns>.svc or <pod>.<service>.<ns>.svc, then the cluster domain
        in_namespace = labels[labels.index("svc", 2) - 1]
    else:
        return None
    return [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: in_namespace}}}]


def _ports(numbers: Iterable[int | str], protocol: str = "TCP") -> list[Manifest]:
    return [{"port": number, "protocol": protocol} for number in numbers]


def egress_rules(urls: Iterable[tuple[str, int]], namespace: str) -> list[Manifest]:
    """One rule per destination (URL, default port): to its peers where they can be named, else to its port anywhere."""
    by_peers: dict[str, tuple[list[Manifest] | None, set[int]]] = {}
    for url, default_port in urls:
        if not url.strip():
            continue
        peers = url_peers(url, namespace)
        key = digest(peers)
        by_peers.setdefault(key, (peers, set()))[1].update(url_ports([url], default_port))
    rules = []
    for peers, numbers in by_peers.values():
        rule: Manifest = {"ports": _ports(sorted(numbers))}
        if peers is not None:
            rule["to"] = peers
        rules.append(rule)
    return sorted(rules, key=digest)


def build_network_policy(
    agent: Agent, *, nats_url: str, ingress_namespace: str, dns_selector: Mapping[str, str] = DNS_SELECTOR
) -> Manifest:
    """Default deny; allow DNS (to the DNS pods), NATS (to its namespace or address), the model API and remote MCP
    tool servers (to their address or in-cluster namespace; a name outside the cluster only by port), the ingress
    controller and spec.mcp.allowFrom to MCP, and metrics scrapes."""
    spec = agent.spec
    namespace = agent.metadata.namespace
    ports = _ports
    dns: Manifest = {"ports": ports([53], "UDP") + ports([53])}
    if dns_selector:
        dns["to"] = [{"namespaceSelector": {}, "podSelector": {"matchLabels": dict(dns_selector)}}]
    egress = [dns, *egress_rules(((url, 4222) for url in nats_url.split(",")), namespace)]
    endpoints = [spec.model.endpoint or "", *(server.url for server in spec.tools.mcp_servers)]
    if spec.mcp.auth.mode is AuthMode.OIDC:
        endpoints.append(spec.mcp.auth.issuer or "")
    outside = egress_rules(((url, 443 if url.startswith("https") else 80) for url in endpoints), namespace)
    public_api = spec.model.provider in (Provider.ANTHROPIC, Provider.BEDROCK, Provider.OPENAI) and not spec.model.endpoint
    anywhere_443 = {"ports": ports([443])}
    if public_api and anywhere_443 not in outside:
        outside.append(anywhere_443)  # the provider's public API, by name: only its port can be expressed
    egress += outside
    ingress = [{"ports": ports(["metrics"]), "from": [{"namespaceSelector": {}}]}]
    if spec.mcp.enabled:
        controller = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: ingress_namespace}}}
        peers = [peer.model_dump(mode="json", by_alias=True, exclude_defaults=True) for peer in spec.mcp.allow_from]
        ingress.insert(0, {"ports": ports(["mcp"]), "from": [controller, *peers]})
    return manifest(
        agent,
        NETWORK_POLICY,
        {
            "spec": {
                "podSelector": {"matchLabels": selector_labels(agent)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress,
                "egress": egress,
            }
        },
    )


OAUTH_METADATA_PATH = "/.well-known/oauth-protected-resource"


def sse_annotations(timeout_seconds: int) -> dict[str, str]:
    """ingress-nginx settings that keep SSE and streamed MCP responses flowing."""
    prefix = "nginx.ingress.kubernetes.io"
    return {
        f"{prefix}/proxy-buffering": "off",
        f"{prefix}/proxy-request-buffering": "off",
        f"{prefix}/proxy-read-timeout": str(timeout_seconds),
        f"{prefix}/proxy-send-timeout": str(timeout_seconds),
    }


def build_ingress(agent: Agent) -> Manifest | None:
    ingress = agent.spec.mcp.ingress
    if not (agent.spec.mcp.enabled and ingress.enabled and ingress.kind == "Ingress"):
        return None
    backend = {"service": {"name": agent.metadata.name, "port": {"name": "mcp"}}}
    # MCP clients find the authorization server through the RFC 9728 metadata of the same host.
    paths = [{"path": p, "pathType": "Prefix", "backend": backend} for p in (ingress.path, OAUTH_METADATA_PATH)]
    spec: Manifest = {"rules": [{"host": ingress.host, "http": {"paths": paths}}]}
    if ingress.class_name:
        spec = {"ingressClassName": ingress.class_name, **spec}
    if ingress.tls:
        spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls.secret_name}]
    annotations = {**sse_annotations(agent.spec.mcp.timeout_seconds), **ingress.annotations}
    return manifest(agent, INGRESS, {"spec": spec}, annotations=annotations)


def endpoint(agent: Agent) -> str | None:
    """The MCP URL clients should use: the ingress when there is one, else the Service."""
    mcp = agent.spec.mcp
    if not mcp.enabled:
        return None
    if mcp.ingress.enabled and mcp.ingress.host:
        scheme = "https" if mcp.ingress.tls else "http"
        return f"{scheme}://{mcp.ingress.host}{mcp.ingress.path}"
    return f"http://{agent.metadata.name}.{agent.metadata.namespace}.svc:{mcp.port}/mcp"


@dataclass(frozen=True)
class ChildInputs:
    """What the children depend on besides the Agent: operator settings and what the cluster holds."""

    image: str
    runtime_env: Mapping[str, str]
    nats_url: str
    ingress_namespace: str
    config_hash: str
    api_key_env: str
    jwt_key_env: str
    scaled_externally: bool = False
    nats_creds_env: str | None = None  # the agent has NATS creds: its identity (the operator's own NATS) or its Swarm's
    nats_creds_ref: SecretKeyRef | None = None  # the Swarm's credentialsSecretRef; None: the agent's identity
    secret_annotations: Mapping[str, str] | None = None
    dns_selector: Mapping[str, str] = dataclasses.field(default_factory=lambda: DNS_SELECTOR)  # DNS pods' labels; empty: anywhere


def build_children(agent: Agent, inputs: ChildInputs) -> dict[Kind, Manifest | None]:
    """Every child kind -> its desired manifest, or None where the Agent wants none (to be deleted)."""
    return {
        CONFIG_MAP: build_config_map(agent, inputs.runtime_env),
        SECRET: build_secret(agent, inputs.secret_annotations),
        SERVICE: build_service(agent),
        NETWORK_POLICY: build_network_policy(
            agent, nats_url=inputs.nats_url, ingress_namespace=inputs.ingress_namespace, dns_selector=inputs.dns_selector
        ),
        PDB: build_pdb(agent),
        DEPLOYMENT: build_deployment(
            agent,
            image=inputs.image,
            config_hash=inputs.config_hash,
            api_key_env=inputs.api_key_env,
            jwt_key_env=inputs.jwt_key_env,
            nats_creds_env=inputs.nats_creds_env,
            nats_creds_ref=inputs.nats_creds_ref,
            with_replicas=not inputs.scaled_externally,
        ),
        INGRESS: build_ingress(agent),
    }
