"""The kinds the operator reads and writes, and the plain shapes every layer passes around.

The bottom of the operator: no imports of its own, so the API client, the
pure builders and the controllers all name kinds the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeswarm_runtime.resources import API_VERSION

Manifest = dict[str, Any]  # a Kubernetes object as JSON
Key = tuple[str, str]  # (namespace, name) of a namespaced object


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    api_version: str
    kind: str
    plural: str
    optional: bool = False  # served only where its CRDs are installed (a 404 on apply means the kind is missing)

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


CONFIG_MAP = Kind("v1", "ConfigMap", "configmaps")
SECRET = Kind("v1", "Secret", "secrets")
SERVICE = Kind("v1", "Service", "services")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
PDB = Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
NETWORK_POLICY = Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
INGRESS = Kind("networking.k8s.io/v1", "Ingress", "ingresses")
HTTP_ROUTE = Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", optional=True)
AGENT = Kind(API_VERSION, "Agent", "agents")
SWARM = Kind(API_VERSION, "Swarm", "swarms")

# An Agent's children, in apply order: what pods read exists before the Deployment that starts them.
CHILD_KINDS = (CONFIG_MAP, SECRET, SERVICE, NETWORK_POLICY, PDB, DEPLOYMENT, INGRESS)
KINDS_BY_NAME = {kind.kind: kind for kind in (*CHILD_KINDS, HTTP_ROUTE, AGENT, SWARM)}


def key_of(obj: Manifest) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


def reference(kind: Kind, namespace: str, name: str, uid: str | None) -> Manifest:
    """An object reference, as an Event's ``regarding``."""
    return {"apiVersion": kind.api_version, "kind": kind.kind, "name": name, "namespace": namespace, "uid": uid}
