"""kopf wiring: watches (as indexes), thin handlers, operator settings.

Handlers only hand the reconciler what changed; it validates the body
into the Agent model and works from its own queue.  Indexes are the
operator's in-memory view of the cluster; kopf
fills them from the initial listing before any handler runs, so a restarted
operator sees what exists and does not recreate it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubeswarm_runtime.resources import GROUP, VERSION, Agent

from . import metrics
from .children import (
    AGENT_LABEL,
    CHILD_KINDS,
    CONFIG_MAP,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MANAGED_SELECTOR,
    SECRET,
    Kind,
    data_digests,
    referenced_objects,
)
from .kube import Kube
from .reconciler import AgentReconciler, World
from .settings import OperatorSettings

log = logging.getLogger(__name__)

AGENTS = (GROUP, VERSION, "agents")
SWARMS = (GROUP, VERSION, "swarms")
HPAS = ("autoscaling", "v2", "horizontalpodautoscalers")
# Secrets and ConfigMaps are watched whole (the pods read user-owned ones too); the rest only where we are the manager.
SHARED_KINDS = (SECRET, CONFIG_MAP)
OWNED_ONLY = {MANAGED_BY_LABEL: MANAGED_BY}


# Every watched resource is namespaced; kopf types namespace as optional for cluster-scoped ones.
Key = tuple[str | None, str]


def resource(kind: Kind) -> tuple[str, str, str]:
    group, _, version = kind.api_version.rpartition("/")
    return group, version, kind.plural


def index_id(kind: Kind) -> str:
    return f"live_{kind.plural}"


# -- the view of the cluster


# Annotations that can be large and that no comparison needs (the reconciler never sets them).
UNCOMPARED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", f"{GROUP}/last-handled-configuration")


def prune(body: Mapping[str, Any]) -> dict[str, Any]:
    """An object as the reconciler reads it: without managedFields and bulky annotations.

    Only the top level and metadata are copied: kopf hands every watch event
    a freshly parsed body and never reuses it, so sharing spec and status is safe.
    """
    meta = {key: value for key, value in body.get("metadata", {}).items() if key != "managedFields"}
    if "annotations" in meta:
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k not in UNCOMPARED_ANNOTATIONS}
    return {**body, "metadata": meta}


def typed(body: Mapping[str, Any], resource: kopf.Resource) -> dict[str, Any]:
    """The body with apiVersion and kind, which items of a list response lack."""
    api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
    return {**body, "apiVersion": api_version, "kind": resource.kind}


def shared_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret or ConfigMap: digests of its data; ours also keep metadata (and ConfigMap data) for comparison."""
    meta = body.get("metadata", {})
    view: dict[str, Any] = {"digests": data_digests({**body.get("data", {}), **body.get("binaryData", {})})}
    if meta.get("labels", {}).get(MANAGED_BY_LABEL) == MANAGED_BY:
        view.update(apiVersion=body["apiVersion"], kind=body["kind"], metadata=prune({"metadata": meta})["metadata"])
        if body["kind"] == "ConfigMap":
            view["data"] = dict(body.get("data", {}))
        if "type" in body:
            view["type"] = body["type"]
    return view


async def owned_index(body: kopf.Body, resource: kopf.Resource, namespace: str | None, name: str, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): prune(typed(body, resource))}


async def shared_index(body: kopf.Body, resource: kopf.Resource, namespace: str | None, name: str, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): shared_view(typed(body, resource))}


for _kind in CHILD_KINDS:
    if _kind in SHARED_KINDS:
        kopf.index(*resource(_kind), id=index_id(_kind))(shared_index)
    else:
        kopf.index(*resource(_kind), id=index_id(_kind), labels=OWNED_ONLY)(owned_index)


@kopf.index(*AGENTS)
async def agent_bodies(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): prune(body)}


@kopf.index(*AGENTS)
async def agent_refs(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[tuple[str, str | None, str], str]:
    """(kind, namespace, name) of each Secret and ConfigMap -> the Agents whose pods read it."""
    try:
        agent = Agent.model_validate(body)
    except ValueError:
        return {}
    return {(kind, namespace, ref): name for kind, ref in referenced_objects(agent)}


@kopf.index(*SWARMS)
async def swarm_bodies(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): prune(body)}


@kopf.index(*HPAS)
async def hpa_targets(spec: kopf.Spec, namespace: str | None, name: str, **_: Any) -> dict[tuple[str, str, str], str]:
    target = spec.get("scaleTargetRef", {})
    return {(namespace or "", target.get("kind", ""), target.get("name", "")): name}


def world(kwargs: Mapping[str, Any]) -> World:
    return World(
        agents=kwargs["agent_bodies"],
        swarms=kwargs["swarm_bodies"],
        children={kind: kwargs[index_id(kind)] for kind in CHILD_KINDS},
        scaled=kwargs["hpa_targets"],
    )


def reconciler(memo: kopf.Memo, kwargs: Mapping[str, Any]) -> AgentReconciler:
    rec: AgentReconciler = memo.reconciler
    rec.world = world(kwargs)
    return rec


# -- handlers


@kopf.on.event(*AGENTS)
async def agent_event(type: str | None, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """A new or changed Agent is reconciled from the operator's own queue.

    Not kopf's create/update/resume handlers: those write their bookkeeping
    (last-handled configuration, progress) into the Agent, a PATCH per change
    that also wakes every Agent watch once more.  The watched generation
    tells a spec change from the Agent's own status writes.
    """
    rec = reconciler(memo, kwargs)
    if type == "DELETED":
        rec.forget(namespace or "", name)
        return
    meta = body.get("metadata", {})
    rec.observe(namespace or "", name, meta.get("uid"), meta.get("generation"))


async def child_event(type: str, labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A child changed or vanished: look at its Agent (the reconcile writes only if it drifted)."""
    if type is not None and AGENT_LABEL in labels:
        reconciler(memo, kwargs).enqueue(namespace or "", labels[AGENT_LABEL])


async def shared_event(type: str, resource: kopf.Resource, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """A Secret or ConfigMap changed: the Agents whose pods read it roll (their config hash changes)."""
    if type is None:
        return
    rec = reconciler(memo, kwargs)
    for agent in kwargs["agent_refs"].get((resource.kind, namespace, name), ()):
        rec.enqueue(namespace or "", agent)


for _kind in CHILD_KINDS:
    if _kind in SHARED_KINDS:
        kopf.on.event(*resource(_kind), id=f"{_kind.plural}_event")(shared_event)
    else:
        kopf.on.event(*resource(_kind), id=f"{_kind.plural}_event", labels=OWNED_ONLY)(child_event)


@kopf.on.event(*SWARMS)
async def swarm_event(type: str, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """A Swarm's NATS settings reach its Agents through their ConfigMaps."""
    if type is None:
        return
    rec = reconciler(memo, kwargs)
    for (agent_ns, agent_name), bodies in kwargs["agent_bodies"].items():
        if agent_ns == namespace and any(b.get("spec", {}).get("swarm", "default") == name for b in bodies):
            rec.enqueue(agent_ns, agent_name)


@kopf.on.event(*HPAS)
async def hpa_event(type: str, spec: kopf.Spec, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """An HPA on an Agent's Deployment takes its replicas over (and gives them back when deleted)."""
    if type is not None:
        reconciler(memo, kwargs).enqueue(namespace or "", spec.get("scaleTargetRef", {}).get("name", ""))


# -- lifecycle


def configure(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    # Without these a watch that silently stalls (a dropped connection, a stuck proxy) stalls the operator.
    settings.watching.server_timeout = ours.watch_server_timeout
    settings.watching.client_timeout = ours.watch_client_timeout
    settings.watching.connect_timeout = 30
    settings.queueing.worker_limit = ours.worker_limit
    # A worker holds its slot until idle this long: kopf's 5 s default caps throughput near worker_limit / 5 objects per second.
    settings.queueing.idle_timeout = 0.5
    settings.posting.enabled = False  # we post our own Events, not kopf's log lines
    settings.peering.standalone = True
    for kind in CHILD_KINDS:
        if kind not in SHARED_KINDS:
            group, _, version = kind.api_version.rpartition("/")
            settings.watching.label_selectors[group, version, kind.plural] = MANAGED_SELECTOR


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: OperatorSettings = memo.settings
    configure(settings, ours)
    metrics.serve(ours.metrics_port)
    memo.reconciler = AgentReconciler(Kube(ours.field_manager), ours)
    memo.resync = asyncio.create_task(memo.reconciler.resync_forever())


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.resync.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await memo.resync
    await memo.reconciler.close()
    await memo.reconciler.kube.close()
