"""Converge one Swarm: member Agents, JetStream streams and consumers, gateway, aggregated status.

Level-based like the Agent reconcile: create, update, resume, member events
and the periodic resync all run the same ``reconcile``, which compares
with what exists and writes only what differs.  An unreachable NATS is
reported (``NatsReady=False``) and raised as :class:`NatsUnavailable` after
everything else is converged, so the handler retries with backoff.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
from kubeswarm_runtime.names import SwarmNames
from kubeswarm_runtime.resources import API_VERSION, Agent, Condition, Swarm
from nats.js.errors import Error as JetStreamError

from . import jetstream, objects
from .children import INGRESS, Kind
from .drift import contains
from .ingress import HTTP_ROUTE, Exposure, gateway_url, ingress_ready
from .kube import Kube
from .nats_access import NatsPool, NatsTarget, NatsUnavailable, swarm_nats_url
from .reconciler import World, one
from .settings import OperatorSettings
from .signals import Key
from .status import condition, status_patch
from .swarm import (
    AGENT,
    SWARM,
    SwarmObserved,
    build_gateway,
    build_members,
    capabilities,
    compute_swarm_status,
    controlled_by,
    joined,
    stale_members,
)

log = logging.getLogger(__name__)

GATEWAY_KINDS = (INGRESS, HTTP_ROUTE)


def nats_target(swarm: Swarm | None, settings: OperatorSettings, creds: str | None) -> NatsTarget:
    """The swarm's NATS, as the operator connects to it: the Swarm's credentials, else the operator's own."""
    return NatsTarget(
        url=swarm_nats_url(swarm, settings.nats_url),
        creds=creds,
        creds_file=None if creds else settings.nats_creds_file,
        user=None if creds else settings.nats_user,
        password=None if creds or settings.nats_password is None else settings.nats_password.get_secret_value(),
    )


def valid_agents(bodies: Mapping[Any, Any]) -> list[Agent]:
    agents = []
    for values in bodies.values():
        for body in values:
            try:
                agents.append(Agent.model_validate(body))
            except ValueError:
                continue  # an invalid Agent is reported on itself, not counted here
    return agents


def deleting(swarm: Swarm) -> bool:
    return bool((swarm.metadata.model_extra or {}).get("deletionTimestamp"))


@dataclass(frozen=True)
class NatsOutcome:
    condition: Condition
    streams: Mapping[str, int] | None
    actions: Sequence[str]
    error: NatsUnavailable | None


@dataclass(frozen=True)
class GatewayOutcome:
    condition: Condition | None  # IngressReady; None when the gateway is off
    endpoint: str | None
    actions: list[str]


class SwarmController:
    def __init__(self, kube: Kube, settings: OperatorSettings, pool: NatsPool) -> None:
        self.kube = kube
        self.settings = settings
        self.pool = pool
        self.member_manager = f"{settings.field_manager}-swarm"
        self._locks: dict[Key, asyncio.Lock] = {}
        self._written: dict[Key, Mapping[str, Any]] = {}

    async def target(self, swarm: Swarm | None) -> NatsTarget:
        ref = swarm.spec.nats.credentials_secret_ref if swarm else None
        creds = None
        if swarm is not None and ref is not None:
            creds = await objects.secret_value(self.kube, swarm.metadata.namespace, ref.name, ref.key)
            if creds is None:
                raise NatsUnavailable(f'credentials secret "{ref.name}" (key "{ref.key}") not found')
        return nats_target(swarm, self.settings, creds)

    async def reconcile(self, swarm: Swarm, world: World) -> None:
        """Converge; raises NatsUnavailable (after writing the status) when NATS cannot be reached."""
        key = (swarm.metadata.namespace, swarm.metadata.name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if deleting(swarm):
                return  # the finalizer removes its streams; provisioning now would bring them back
            actions, members, invalid = await self._converge_members(swarm, world)
            # NATS last: an unreachable server (slow to give up on) must not hold up the rest.
            gateway = await self._converge_gateway(swarm, members)
            nats = await self._converge_streams(swarm, members)
            actions += [*nats.actions, *gateway.actions]
            observed = SwarmObserved(
                nats=nats.condition, streams=nats.streams, invalid=invalid, ingress=gateway.condition, endpoint=gateway.endpoint
            )
            await self._report(swarm, members, observed, actions)
        if nats.error is not None:
            raise nats.error

    async def remove_streams(self, swarm: Swarm) -> list[str]:
        # After any reconcile under way, which may still be creating them.
        async with self._locks.setdefault((swarm.metadata.namespace, swarm.metadata.name), asyncio.Lock()):
            conn = await self.pool.get(await self.target(swarm))
            return await jetstream.remove(conn, SwarmNames(swarm.subject_prefix))

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)
        self._written.pop((namespace, name), None)

    # -- internals

    async def _converge_members(self, swarm: Swarm, world: World) -> tuple[list[str], list[Agent], Mapping[str, str]]:
        """Apply the listed members, delete the unlisted ones.

        Returns what was done, every member (listed ones as applied, even before
        the watch shows them, and those that joined) and the invalid member specs.
        """
        namespace = swarm.metadata.namespace
        wanted = build_members(swarm)
        actions = []
        for name, manifest in wanted.manifests.items():
            live = one(world.agents, (namespace, name))
            if live is not None and contains(live, manifest):
                continue
            await objects.apply(self.kube, AGENT, manifest, field_manager=self.member_manager)
            actions.append(f"{'updated' if live else 'created'} Agent {name}")
        in_namespace = [b for (ns, _), bodies in world.agents.items() if ns == namespace for b in bodies]
        for name in stale_members(swarm, in_namespace):
            await self.kube.delete(AGENT, namespace, name)
            actions.append(f"deleted Agent {name} (no longer in spec.agents)")
        members = {a.metadata.name: a for a in joined(swarm, valid_agents(world.agents))}
        for name, manifest in wanted.manifests.items():
            members.setdefault(name, Agent.model_validate(manifest))
        return actions, sorted(members.values(), key=lambda a: a.metadata.name), wanted.invalid

    async def _converge_streams(self, swarm: Swarm, members: Sequence[Agent]) -> NatsOutcome:
        names = SwarmNames(swarm.subject_prefix)
        try:
            target = await self.target(swarm)
            conn = await self.pool.get(target)
            done = await jetstream.provision(conn, names, swarm.spec.streams, capabilities(members))
            counts = await jetstream.message_counts(conn, names)
        except NatsUnavailable as error:
            return NatsOutcome(condition("NatsReady", False, "Unreachable", str(error)), None, (), error)
        except (TimeoutError, nats.errors.Error, JetStreamError) as error:
            # JetStream answered with an error (or not in time): a configuration the server refuses, no JetStream, ...
            message = f"JetStream at {swarm_nats_url(swarm, self.settings.nats_url)}: {error or type(error).__name__}"
            return NatsOutcome(condition("NatsReady", False, "JetStreamError", message), None, (), NatsUnavailable(message))
        ready = condition("NatsReady", True, "StreamsProvisioned", f"{len(counts)} streams at {target.url}")
        return NatsOutcome(ready, counts, done.actions, None)

    async def _converge_gateway(self, swarm: Swarm, members: Sequence[Agent]) -> GatewayOutcome:
        namespace = swarm.metadata.namespace
        desired = build_gateway(swarm, members)
        live = await self._live_gateway(swarm)
        actions: list[str] = []
        exposures = []
        for (kind, name), manifest in desired.items():
            current = live.pop((kind, name), None)
            try:
                if current is None or not contains(current, manifest):
                    current = await objects.apply(self.kube, kind, manifest)
                    actions.append(f"applied {kind.kind} {name}")
            except objects.KindNotInstalled as error:
                exposures.append(Exposure(kind, name, None, str(error)))
                continue
            exposures.append(Exposure(kind, name, current))
        for kind, name in sorted(live, key=lambda k: (k[0].kind, k[1])):
            await self.kube.delete(kind, namespace, name)
            actions.append(f"deleted {kind.kind} {name}")
        if not swarm.spec.gateway.enabled:
            return GatewayOutcome(None, None, actions)
        ready = ingress_ready(exposures)
        endpoint = gateway_url(swarm.spec.gateway) if all(e.live is not None for e in exposures) and exposures else None
        return GatewayOutcome(ready, endpoint, actions)

    async def _live_gateway(self, swarm: Swarm) -> dict[tuple[Kind, str], Mapping[str, Any]]:
        """The gateway objects this Swarm controls, as they exist."""
        found: dict[tuple[Kind, str], Mapping[str, Any]] = {}
        selector = f"kubeswarm.io/swarm={swarm.metadata.name}"
        for kind in GATEWAY_KINDS:
            for item in await objects.list_objects(self.kube, kind, swarm.metadata.namespace, selector):
                if controlled_by(item, swarm):
                    found[(kind, item["metadata"]["name"])] = item
        return found

    async def _report(self, swarm: Swarm, members: Sequence[Agent], observed: SwarmObserved, actions: Sequence[str]) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        key = (swarm.metadata.namespace, swarm.metadata.name)
        new = compute_swarm_status(swarm, members, observed, now)
        patch = status_patch(new)
        regarding = {
            "apiVersion": API_VERSION, "kind": "Swarm", "name": swarm.metadata.name,
            "namespace": swarm.metadata.namespace, "uid": swarm.metadata.uid,
        }
        if actions:
            await self.kube.post_event(regarding, "Normal", "Reconciled", "; ".join(actions), action="Reconcile")
        # The body may predate our last status write (the watch lags): do not write or announce it twice.
        if (swarm.status is not None and status_patch(swarm.status) == patch) or self._written.get(key) == patch:
            return
        await objects.merge_patch_status(self.kube, SWARM, swarm.metadata.namespace, swarm.metadata.name, patch)
        self._written[key] = patch
        old_conditions = {c.type: c for c in (swarm.status.conditions if swarm.status else [])}
        for cond in new.conditions:
            before = old_conditions.get(cond.type)
            # Ready starts out False on every new Swarm: only a later change of it is news.
            first_problem = before is None and cond.status == "False" and cond.type != "Ready"
            if first_problem or (before is not None and before.status != cond.status):
                kind = "Normal" if cond.status == "True" else "Warning"
                await self.kube.post_event(regarding, kind, cond.reason, f"{cond.type}: {cond.message}", action="Reconcile")

