"""The operator's in-memory view of the cluster: what every reconcile reads instead of asking the API server."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .kinds import Key, Kind, Manifest

View = Mapping[Any, Collection[Any]]  # a kopf index (or a dict of lists in tests)


def one(view: View, key: object) -> Any:
    values = view.get(key)
    return next(iter(values), None) if values else None


@dataclass(frozen=True)
class World:
    """kopf's indexes and the operator's own watches of the children, all keyed by (namespace, name) unless noted."""

    agents: View  # Agent bodies
    swarms: View  # Swarm bodies
    children: Mapping[Kind, Mapping[Key, Manifest]]  # live children (Secrets and ConfigMaps: digests only, see wiring)
    scaled: View  # (namespace, kind, name) of HPA targets -> HPA name
    refs: View = field(default_factory=dict)  # (kind, namespace, name) of a Secret or ConfigMap -> Agents reading it
