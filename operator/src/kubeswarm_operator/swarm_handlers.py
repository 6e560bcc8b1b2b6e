"""kopf wiring of Swarms and the per-Agent loops (autoscaling, AWS secrets, HTTPRoutes).

Thin like :mod:`handlers`: validate the body, hand it to the controller.
Shares that module's indexes (the World) and its Agent reconciler, which
writes what the loops find (:class:`AgentSignals`) into Agent statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubeswarm_runtime.resources import Agent, Swarm

from .agent_loops import AgentLoops
from .handlers import AGENTS, SWARMS, world
from .kube import ApiError, Kube, namespace_terminating
from .nats_access import NatsPool, NatsUnavailable
from .reconciler import AgentReconciler, World, one
from .settings import OperatorSettings
from .swarm_controller import SwarmController

log = logging.getLogger(__name__)

# Retries of an unreachable NATS: 2, 4, 8 ... seconds, at most a minute apart.
BACKOFF_MAX_SECONDS = 60.0
# Deleting a Swarm waits this many attempts (about 10 minutes) for its NATS before leaving the streams behind.
DELETE_RETRIES = 14


def backoff(retry: int) -> float:
    return min(BACKOFF_MAX_SECONDS, 2.0 ** (retry + 1))


class SwarmQueue:
    """Reconcile a Swarm soon from its latest watched body; bursts (e.g. many member events) collapse into one run."""

    def __init__(self, controller: SwarmController) -> None:
        self.controller = controller
        self.world: World | None = None
        self._queued: dict[tuple[str, str], asyncio.Task[None]] = {}

    def enqueue(self, namespace: str, name: str, delay: float = 0.5) -> None:
        key = (namespace, name)
        if key not in self._queued:
            self._queued[key] = asyncio.get_running_loop().create_task(self._run(key, delay))

    async def _run(self, key: tuple[str, str], delay: float) -> None:
        await asyncio.sleep(delay)
        del self._queued[key]
        if self.world is None:
            return
        body = one(self.world.swarms, key)
        if body is None:
            return
        try:
            await self.controller.reconcile(Swarm.model_validate(body), self.world)
        except NatsUnavailable as error:
            log.info("Swarm %s/%s: %s (the change handler retries)", *key, error)
        except ApiError as error:
            if not namespace_terminating(error):
                log.exception("reconciling Swarm %s/%s failed", *key)
        except Exception:
            log.exception("reconciling Swarm %s/%s failed", *key)

    async def resync_forever(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            if self.world is not None:
                for namespace, name in list(self.world.swarms.keys()):
                    self.enqueue(namespace, name, delay=0)

    async def close(self) -> None:
        for task in self._queued.values():
            task.cancel()
        await asyncio.gather(*self._queued.values(), return_exceptions=True)


def attach(memo: kopf.Memo, kwargs: Mapping[str, Any]) -> World:
    """Give the loops the operator's live view (kopf hands its indexes to handlers only)."""
    view = memo.swarm_queue.world = memo.agent_loops.world = world(memo.reconciler, kwargs)
    return view


@kopf.on.resume(*SWARMS, id="reconcile-swarm")
@kopf.on.create(*SWARMS, id="reconcile-swarm")
@kopf.on.update(*SWARMS, id="reconcile-swarm")
async def reconcile_swarm(body: kopf.Body, retry: int, memo: kopf.Memo, **kwargs: Any) -> None:
    try:
        swarm = Swarm.model_validate(body)
    except ValueError as error:
        raise kopf.PermanentError(f"invalid Swarm: {error}") from error
    view = attach(memo, kwargs)
    try:
        await memo.swarm_controller.reconcile(swarm, view)
    except NatsUnavailable as error:
        # Reported in NatsReady already; retried with backoff by kopf, never a crash.
        raise kopf.TemporaryError(str(error), delay=backoff(retry)) from error


@kopf.on.delete(*SWARMS, id="remove-streams", retries=DELETE_RETRIES)
async def remove_streams(body: kopf.Body, retry: int, memo: kopf.Memo, namespace: str | None, name: str, **_: Any) -> None:
    swarm = Swarm.model_validate(body)
    try:
        removed = await memo.swarm_controller.remove_streams(swarm)
    except NatsUnavailable as error:
        if retry + 1 >= DELETE_RETRIES:
            log.error("Swarm %s/%s deleted; its streams stay in NATS (unreachable: %s)", namespace, name, error)
            return
        raise kopf.TemporaryError(f"cannot remove the swarm's streams yet: {error}", delay=backoff(retry)) from error
    log.info("Swarm %s/%s deleted; removed %s", namespace, name, ", ".join(removed) or "no streams")
    memo.swarm_controller.forget(namespace or "", name)


@kopf.on.event(*AGENTS, id="swarm-membership")
async def member_event(type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """An Agent changed: its swarm's status and consumers may change, and its own secret and route may need work."""
    if type is None:
        return
    attach(memo, kwargs)
    ns = namespace or ""
    memo.swarm_queue.enqueue(ns, body.get("spec", {}).get("swarm", "default"))
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "Swarm":
            memo.swarm_queue.enqueue(ns, ref.get("name", ""))
    if type == "DELETED":
        memo.agent_loops.forget(ns, name)
        return
    if not memo.agent_loops.concerned((ns, name), body.get("spec", {})):
        return
    try:
        agent = Agent.model_validate(body)
    except ValueError:
        return
    try:
        await memo.agent_loops.changed(agent)
    except Exception as error:  # the timers retry; an Agent event is no reason to fail
        log.warning("Agent %s/%s: %s", ns, name, error)


@kopf.on.startup()
async def start_swarms(memo: kopf.Memo, **_: Any) -> None:
    ours: OperatorSettings = memo.settings
    reconciler: AgentReconciler = memo.reconciler
    pool = NatsPool(ours.nats_connect_timeout_seconds)
    memo.nats_pool = pool
    memo.swarm_controller = SwarmController(Kube(ours.field_manager), ours, pool)
    memo.swarm_queue = SwarmQueue(memo.swarm_controller)
    memo.agent_loops = AgentLoops(memo.swarm_controller.kube, memo.swarm_controller, reconciler.signals, reconciler.enqueue)
    memo.swarm_tasks = [
        asyncio.create_task(memo.swarm_queue.resync_forever(ours.swarm_resync_seconds)),
        asyncio.create_task(memo.agent_loops.autoscale_forever()),
        asyncio.create_task(memo.agent_loops.refresh_secrets_forever()),
        asyncio.create_task(memo.agent_loops.routes_forever(ours.swarm_resync_seconds)),
    ]


@kopf.on.cleanup()
async def stop_swarms(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.swarm_tasks:
        task.cancel()
    for task in memo.swarm_tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await memo.swarm_queue.close()
    await memo.nats_pool.close()
    await memo.swarm_controller.kube.close()
