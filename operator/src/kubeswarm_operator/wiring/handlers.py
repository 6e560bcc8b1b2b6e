"""kopf wiring: the indexes, thin event handlers, kopf's settings and the operator's start and stop.

Handlers translate kopf's arguments into calls on the one :class:`Operator`
built at startup (``memo.operator``) and kopf's exceptions; they keep no
state.  Agents, Swarms and HPAs are kopf indexes, the Agents' children the
operator's own watches: together its in-memory view of the cluster, both
filled from a full listing before any handler runs, so a restarted operator
sees what exists and does not recreate it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import kopf
from kubeswarm_runtime.resources import GROUP, VERSION, Agent, Swarm

from ..agent.children import referenced_objects
from ..kube.kinds import Key
from ..kube.watch import prune
from ..settings import OperatorSettings
from .operator import Operator

AGENTS = (GROUP, VERSION, "agents")
SWARMS = (GROUP, VERSION, "swarms")
HPAS = ("autoscaling", "v2", "horizontalpodautoscalers")


def the_operator(memo: kopf.Memo) -> Operator:
    operator: Operator = memo.operator
    return operator


# -- indexes (every watched resource is namespaced; kopf types namespace as optional for cluster-scoped ones)


@kopf.index(*AGENTS)
async def agent_bodies(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace or "", name): prune(body)}


@kopf.index(*AGENTS)
async def agent_refs(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[tuple[str, str, str], str]:
    """(kind, namespace, name) of each Secret and ConfigMap -> the Agents whose pods read it."""
    try:
        agent = Agent.model_validate(body)
    except ValueError:
        return {}
    return {(kind, namespace or "", ref): name for kind, ref in referenced_objects(agent)}


@kopf.index(*SWARMS)
async def swarm_bodies(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace or "", name): prune(body)}


@kopf.index(*HPAS)
async def hpa_targets(spec: kopf.Spec, namespace: str | None, name: str, **_: Any) -> dict[tuple[str, str, str], str]:
    target = spec.get("scaleTargetRef", {})
    return {(namespace or "", target.get("kind", ""), target.get("name", "")): name}


# -- events


@kopf.on.event(*AGENTS)
async def agent_event(type: str | None, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Agents are reconciled from the operator's own queue.

    Not kopf's create/update/resume handlers: those write their bookkeeping
    (last-handled configuration, progress) into the Agent, a PATCH per change
    that also wakes every Agent watch once more.
    """
    await the_operator(memo).agent_event(type, body, namespace or "", name)


@kopf.on.event(*SWARMS)
async def swarm_event(type: str | None, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Swarms are reconciled from the operator's work queue too; kopf only runs their finalizer (``remove_streams``)."""
    the_operator(memo).swarm_event(type, body, namespace or "", name)


@kopf.on.event(*HPAS)
async def hpa_event(type: str | None, spec: kopf.Spec, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if type is not None:
        the_operator(memo).hpa_event(namespace or "", spec.get("scaleTargetRef", {}).get("name", ""))


@kopf.on.delete(*SWARMS, id="remove-streams")
async def remove_streams(body: kopf.Body, retry: int, runtime: dt.timedelta, memo: kopf.Memo, **_: Any) -> None:
    # Bounded by the operator's swarm_delete_timeout_seconds, not by kopf's retry count.
    retry_in = await the_operator(memo).remove_swarm_streams(Swarm.model_validate(body), retry, runtime.total_seconds())
    if retry_in is not None:
        raise kopf.TemporaryError("the swarm's streams are not removed yet (see the Swarm's Events)", delay=retry_in)


# -- lifecycle


class SwarmDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled configuration, built for Swarms only: the one kind with a change handler (its finalizer).

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
    # kopf's workers unbounded (its default): one only stores an event's body in the indexes and queues a key in
    # ours (which ``worker_limit`` bounds). Bounded, a worker held its slot some 0.6 s (batch window, idling) and
    # kopf took at most ~50 objects a second: 5,000 Agents applied at once waited in its backlog as whole watch
    # events (some 20 KiB each, managedFields and all), the operator's peak memory.
    settings.queueing.worker_limit = None
    # A worker lingers this long after an object's last event (kopf's default 5 s), holding that event's body.
    settings.queueing.idle_timeout = 0.5
    settings.posting.enabled = False  # we post our own Events, not kopf's log lines
    settings.peering.standalone = True


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **indexes: Any) -> None:
    """Build the one Operator from the settings ``__main__`` put in the memo and kopf's indexes (named after their functions)."""
    ours: OperatorSettings = memo.settings
    configure(settings, ours)
    operator = Operator(
        ours,
        agents=indexes["agent_bodies"],
        swarms=indexes["swarm_bodies"],
        scaled=indexes["hpa_targets"],
        refs=indexes["agent_refs"],
    )
    memo.operator = operator
    await operator.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await the_operator(memo).close()
