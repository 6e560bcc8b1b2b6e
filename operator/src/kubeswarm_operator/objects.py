"""API calls on kinds other than an Agent's children (member Agents, Swarm status, HTTPRoutes, scale, Secrets read).

Thin wrappers over :class:`Kube`'s authenticated request path, so requests
are counted in the same metrics.
"""

from __future__ import annotations

import base64
from typing import Any

from .children import SECRET, Kind
from .kube import ApiError, Kube, kind_path

Manifest = dict[str, Any]


class KindNotInstalled(Exception):
    """The API server does not serve this kind (e.g. the Gateway API CRDs are not installed)."""


async def apply(kube: Kube, kind: Kind, obj: Manifest, field_manager: str | None = None) -> Manifest:
    """Server-side apply (forced: the operator owns what it sets) under ``field_manager`` (default: the operator's)."""
    meta = obj["metadata"]
    query = [("fieldManager", field_manager or kube.field_manager), ("force", "true")]
    try:
        return await kube._call(
            "PATCH", kind.kind, kind_path(kind, meta["namespace"], meta["name"]), body=obj, query=query,
            content_type="application/apply-patch+yaml",
        )
    except ApiError as error:
        # An apply creates what is missing, so a 404 means the kind itself is unknown.
        if error.status == 404:
            raise KindNotInstalled(f"the cluster does not serve {kind.kind} ({kind.api_version}); install its CRDs") from None
        raise


async def get(kube: Kube, kind: Kind, namespace: str, name: str) -> Manifest | None:
    """The object, or None if it (or its kind) does not exist."""
    try:
        return await kube._call("GET", kind.kind, kind_path(kind, namespace, name))
    except ApiError as error:
        if error.status == 404:
            return None
        raise


async def list_objects(kube: Kube, kind: Kind, namespace: str, label_selector: str) -> list[Manifest]:
    """Objects of a kind in a namespace matching the selector; none if the kind is not served."""
    try:
        found = await kube._call("GET", kind.kind, kind_path(kind, namespace), query=[("labelSelector", label_selector)])
    except ApiError as error:
        if error.status == 404:
            return []
        raise
    items: list[Manifest] = found.get("items", [])
    return items


async def merge_patch_status(kube: Kube, kind: Kind, namespace: str, name: str, status: Manifest) -> None:
    await kube._call(
        "PATCH", kind.kind, kind_path(kind, namespace, name) + "/status", body={"status": status},
        content_type="application/merge-patch+json", query=[("fieldManager", kube.field_manager)],
    )


async def scale(kube: Kube, kind: Kind, namespace: str, name: str, replicas: int) -> None:
    """Set replicas through the scale subresource, as an HPA does."""
    await kube._call(
        "PATCH", kind.kind, kind_path(kind, namespace, name) + "/scale", body={"spec": {"replicas": replicas}},
        content_type="application/merge-patch+json", query=[("fieldManager", kube.field_manager)],
    )


async def secret_value(kube: Kube, namespace: str, name: str, key: str) -> str | None:
    """One decoded value of a Secret, or None if the Secret or key is missing."""
    secret = await get(kube, SECRET, namespace, name)
    encoded = (secret or {}).get("data", {}).get(key)
    return base64.b64decode(encoded).decode() if encoded is not None else None
