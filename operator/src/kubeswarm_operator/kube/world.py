"""The operator's in-memory view of the cluster: what every reconcile reads instead of asking the API server."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from .kinds import Key, Kind, Manifest

log = logging.getLogger(__name__)

View = Mapping[Any, Collection[Any]]  # a kopf index (or a dict of lists in tests)
Resource = TypeVar("Resource", bound=BaseModel)


def one(view: View, key: object) -> Any:
    values = view.get(key)
    return next(iter(values), None) if values else None


def latest(view: View, key: Key, model: type[Resource]) -> Resource | None:
    """The latest watched body of ``key`` as ``model``: what a queued run works from; None if it is gone or invalid."""
    body = one(view, key)
    if body is None:
        return None
    try:
        return model.model_validate(body)
    except ValueError as error:
        # The API server validated the same rules; only an older object could fail here. Retrying cannot help.
        log.error("invalid %s %s/%s: %s", model.__name__, *key, error)
        return None


@dataclass(frozen=True)
class World:
    """kopf's indexes and the operator's own watches of the children, all keyed by (namespace, name) unless noted."""

    agents: View  # Agent bodies
    swarms: View  # Swarm bodies
    children: Mapping[Kind, Mapping[Key, Manifest]]  # live children (Secrets and ConfigMaps: digests only, see wiring)
    scaled: View  # (namespace, kind, name) of HPA targets -> HPA name
    refs: View = field(default_factory=dict)  # (kind, namespace, name) of a Secret or ConfigMap -> Agents reading it
