"""Objects the operator owns: their labels, controller reference and content hash (pure).

Every child of an Agent, every object of a Swarm and the Secret synced from
AWS are built by :func:`owned`, so the operator's watches select them the
same way and garbage collection follows the same owner.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kubeswarm_runtime.resources import API_VERSION

from .kinds import Kind, Manifest

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubeswarm-operator"
# What every owned object carries, so the operator's watches can select exactly its own objects.
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
AGENT_LABEL = "kubeswarm.io/agent"
SWARM_LABEL = "kubeswarm.io/swarm"
SPEC_HASH_ANNOTATION = "kubeswarm.io/spec-hash"


def digest(value: object) -> str:
    """A stable short hash of JSON-able data."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def data_digests(data: Mapping[str, str]) -> dict[str, str]:
    """Per-key content hashes of a Secret's or ConfigMap's data: enough to notice a change, no value kept."""
    return {key: hashlib.sha256(value.encode()).hexdigest()[:16] for key, value in data.items()}


def controller_reference(kind: str, name: str, uid: str | None) -> Manifest:
    """An ownerReference to a kubeswarm object (Agent or Swarm) that controls the object."""
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid, "controller": True, "blockOwnerDeletion": True}


def controlled_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    """Does ``obj`` (a live object or its watched view) name the kubeswarm object ``uid`` as its controller?"""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def owned(
    kind: Kind,
    name: str,
    namespace: str,
    *,
    labels: Mapping[str, str],
    owner: Manifest,
    body: Manifest,
    annotations: Mapping[str, str] | None = None,
    hashed: bool = True,
) -> Manifest:
    """An owned object: our labels, the controller reference and (``hashed``) the hash of its own content.

    The hash annotation lets a reconcile see that a field was *removed* from
    what it wants (a subset comparison with the live object cannot).  Objects
    carrying secret values are not hashed.
    """
    meta: Manifest = {"name": name, "namespace": namespace, "labels": dict(labels), "ownerReferences": [owner]}
    if annotations:
        meta["annotations"] = dict(annotations)
    content = {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta, **body}
    if hashed:
        meta["annotations"] = {**meta.get("annotations", {}), SPEC_HASH_ANNOTATION: digest(content)}
    return content
