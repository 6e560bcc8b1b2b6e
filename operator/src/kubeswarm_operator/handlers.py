"""kopf wiring: watches, thin handlers, operator settings.

Handlers only hand the reconciler what changed; it validates the body
into the Agent model and works from its own queue.  Agents, Swarms and HPAs
are kopf indexes, the Agents' children the operator's own watches
(:mod:`.watching`): together its in-memory view of the cluster.  Both are
filled from a full listing before any handler runs, so a restarted operator
sees what exists and does not recreate it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from kubeswarm_runtime.resources import GROUP, VERSION, Agent

from . import metrics, signals
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
from .kube import Kube, Manifest
from .reconciler import AgentReconciler, World
from .settings import OperatorSettings
from .watching import ChildWatch, Notify

log = logging.getLogger(__name__)

AGENTS = (GROUP, VERSION, "agents")
SWARMS = (GROUP, VERSION, "swarms")
HPAS = ("autoscaling", "v2", "horizontalpodautoscalers")
# Secrets and ConfigMaps are watched whole (the pods read user-owned ones too); the rest only where we are the manager.
SHARED_KINDS = (SECRET, CONFIG_MAP)


# Every watched resource is namespaced; kopf types namespace as optional for cluster-scoped ones.
Key = tuple[str | None, str]


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


def child_changed(rec: AgentReconciler, kind: Kind) -> Notify:
    """Who is told when a child changes or vanishes: its Agent (the reconcile writes only if it drifted).

    A Secret or ConfigMap, ours or not, concerns the Agents whose pods read it: their config hash changes.
    """
    if kind in SHARED_KINDS:
        def readers_of(key: signals.Key, view: Manifest) -> None:
            for agent in rec.world.refs.get((kind.kind, *key), ()) if rec.world else ():
                rec.enqueue(key[0], agent)

        return readers_of

    def owner_of(key: signals.Key, view: Manifest) -> None:
        agent = view.get("metadata", {}).get("labels", {}).get(AGENT_LABEL)
        if agent:
            rec.enqueue(key[0], agent)

    return owner_of


def child_watches(rec: AgentReconciler, kube: Kube, ours: OperatorSettings) -> list[ChildWatch]:
    """A watch per child kind and watched namespace, each kind's views in one mapping the reconciler reads."""
    watches = []
    namespaces: list[str | None] = list(ours.namespaces) or [None]
    for kind in CHILD_KINDS:
        items: dict[signals.Key, Manifest] = {}
        rec.children[kind] = items
        for namespace in namespaces:
            watches.append(
                ChildWatch(
                    kube,
                    kind,
                    namespace,
                    label_selector=None if kind in SHARED_KINDS else MANAGED_SELECTOR,
                    view=shared_view if kind in SHARED_KINDS else prune,
                    items=items,
                    notify=child_changed(rec, kind),
                    server_timeout=ours.watch_server_timeout,
                    client_timeout=ours.watch_client_timeout,
                )
            )
    return watches


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


def world(rec: AgentReconciler, kwargs: Mapping[str, Any]) -> World:
    """The view of the cluster: kopf's indexes (handed to handlers only) and the children the operator watches."""
    return World(
        agents=kwargs["agent_bodies"],
        swarms=kwargs["swarm_bodies"],
        children=rec.children,
        scaled=kwargs["hpa_targets"],
        refs=kwargs["agent_refs"],
    )


def reconciler(memo: kopf.Memo, kwargs: Mapping[str, Any]) -> AgentReconciler:
    rec: AgentReconciler = memo.reconciler
    rec.world = world(rec, kwargs)
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


class SwarmDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled configuration, built for Swarms only: the one kind with create/update handlers.

    kopf builds this essence (a deep copy of the body) on every watch event of
    every kind, though only change handlers read it; for the thousands of
    Deployment and Agent events of a rollout it was a tenth of the operator's CPU.
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        if body.get("kind") != "Swarm":
            return kopf.BodyEssence()
        return super().build(body=body, extra_fields=extra_fields)


def configure(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = SwarmDiffBase(prefix=GROUP, key="last-handled-configuration")
    # Without these a watch that silently stalls (a dropped connection, a stuck proxy) stalls the operator.
    settings.watching.server_timeout = ours.watch_server_timeout
    settings.watching.client_timeout = ours.watch_client_timeout
    settings.watching.connect_timeout = 30
    settings.queueing.worker_limit = ours.worker_limit
    # A worker holds its slot until idle this long: kopf's 5 s default caps throughput near worker_limit / 5 objects per second.
    settings.queueing.idle_timeout = 0.5
    settings.posting.enabled = False  # we post our own Events, not kopf's log lines
    settings.peering.standalone = True


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: OperatorSettings = memo.settings
    configure(settings, ours)
    metrics.serve(ours.metrics_port)
    rec = memo.reconciler = AgentReconciler(Kube(ours.field_manager), ours)
    # Watches hold their connections for minutes: a pool of their own, without a limit.
    memo.watch_kube = Kube(ours.field_manager, connections=0)
    watches = child_watches(rec, memo.watch_kube, ours)
    await asyncio.gather(*(watch.list_until_done() for watch in watches))  # before kopf starts the Agent handlers
    memo.background = [asyncio.create_task(watch.watch_forever()) for watch in watches]
    memo.background.append(asyncio.create_task(rec.resync_forever()))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.background:
        task.cancel()
    await asyncio.gather(*memo.background, return_exceptions=True)
    await memo.reconciler.close()
    await memo.reconciler.kube.close()
    await memo.watch_kube.close()
