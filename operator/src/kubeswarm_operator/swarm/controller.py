"""Converge one Swarm: member Agents, JetStream streams and consumers, gateway, aggregated status.

Level-based like the Agent reconcile: create, update, resume, member events
and the periodic resync all run the same ``reconcile``, which compares
with what exists and writes only what differs.  An unreachable NATS is
reported (``NatsReady=False``) and raised as :class:`NatsUnavailable` after
everything else is converged, so the handler retries with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
from kubeswarm_runtime.names import SwarmNames
from kubeswarm_runtime.resources import Agent, Condition, Swarm, namespace_subject_prefix, prefix_owned
from nats.js.errors import Error as JetStreamError

from ..agent.ingress import Exposure, ingress_ready
from ..jetstream import provisioning
from ..jetstream.connections import NatsPool, NatsTarget, NatsUnavailable, swarm_nats_url
from ..jetstream.identity import NatsIdentities
from ..kube.client import ApiError, KindNotInstalled, Kube, namespace_terminating
from ..kube.conditions import condition, condition_events, now, status_patch
from ..kube.drift import contains
from ..kube.kinds import AGENT, HTTP_ROUTE, INGRESS, SWARM, Key, Kind, reference
from ..kube.owned import controlled_by
from ..kube.workqueue import WorkQueue, backoff
from ..kube.world import World, latest, one
from ..settings import OperatorSettings
from .gateway import build_gateway, gateway_url
from .members import build_members, capabilities, joined, replicas_undone, stale_members
from .status import SwarmObserved, compute_swarm_status

log = logging.getLogger(__name__)

GATEWAY_KINDS = (INGRESS, HTTP_ROUTE)


def nats_target(swarm: Swarm | None, settings: OperatorSettings, creds: str | None) -> NatsTarget:
    """The swarm's NATS, as the operator connects to it: the Swarm's credentials, else the operator's own.

    The operator's own identity goes only to the operator's own NATS (``settings.nats_url``): a URL a
    Swarm names gets the credentials of the Swarm's namespace (its credentialsSecretRef) or none, so no
    Swarm author can have the operator hand its password to a server of their choosing.
    """
    url = swarm_nats_url(swarm, settings.nats_url)
    if creds is not None or url != settings.nats_url:
        return NatsTarget(url=url, creds=creds)
    password = settings.nats_password.get_secret_value() if settings.nats_password is not None else None
    return NatsTarget(url=url, creds_file=settings.nats_creds_file, user=settings.nats_user, password=password)


def prefix_not_owned(swarm: Swarm) -> str:
    own = namespace_subject_prefix(swarm.metadata.namespace)
    return (
        f"spec.subjectPrefix {swarm.subject_prefix!r} is outside this namespace's subjects: use {own!r} or a prefix "
        f"beginning with '{own}.'; no streams are provisioned (or ever removed) for it"
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
    def __init__(self, kube: Kube, settings: OperatorSettings, pool: NatsPool, world: World) -> None:
        self.kube = kube
        self.settings = settings
        self.pool = pool
        self.world = world
        self.member_manager = f"{settings.field_manager}-swarm"
        # Set at startup where the operator issues NATS identities (its own NATS).
        self.identities: NatsIdentities | None = None
        self._locks: dict[Key, asyncio.Lock] = {}
        self._written: dict[Key, Mapping[str, Any]] = {}
        # Its own changes, member events and the resync; a failure (an unreachable NATS among them) is retried while it exists.
        self.queue = WorkQueue("Swarm", self._run, settings.worker_limit, expected=(NatsUnavailable,))

    def observe(self, namespace: str, name: str, uid: object, generation: object) -> None:
        """A Swarm's watch event: reconcile now if it is new or its spec changed (not for its own status writes)."""
        self.queue.observe((namespace, name), (uid, generation))

    def enqueue(self, namespace: str, name: str, delay: float = 0.5) -> None:
        """Reconcile soon from the latest watched body; bursts (e.g. many member events) collapse into one run."""
        self.queue.enqueue((namespace, name), delay)

    async def resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.swarm_resync_seconds)
            for namespace, name in list(self.world.swarms.keys()):
                self.enqueue(namespace, name, delay=0)

    async def _run(self, key: Key) -> None:
        swarm = latest(self.world.swarms, key, Swarm)
        if swarm is None:
            return
        try:
            await self.reconcile(swarm)  # raises NatsUnavailable for the queue's retry
        except ApiError as error:
            if not namespace_terminating(error):
                raise

    async def target(self, swarm: Swarm | None, namespace: str = "", name: str = "default") -> NatsTarget:
        """How the operator connects to a swarm (``swarm``, or the one named ``namespace``/``name`` that has no object).

        On its own NATS: as its limited user in the swarm's account. Elsewhere: with the Swarm's credentials.
        """
        ref = swarm.spec.nats.credentials_secret_ref if swarm else None
        if swarm is not None:
            namespace, name = swarm.metadata.namespace, swarm.metadata.name
        if self.identities is not None and ref is None and self.identities.manages(swarm_nats_url(swarm, self.settings.nats_url)):
            return await self.identities.operator_target(namespace, name)
        creds = None
        if swarm is not None and ref is not None:
            creds = await self.kube.secret_value(swarm.metadata.namespace, ref.name, ref.key)
            if creds is None:
                raise NatsUnavailable(f'credentials secret "{ref.name}" (key "{ref.key}") not found')
        return nats_target(swarm, self.settings, creds)

    async def reconcile(self, swarm: Swarm) -> None:
        """Converge; raises NatsUnavailable (after writing the status) when NATS cannot be reached."""
        key = (swarm.metadata.namespace, swarm.metadata.name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if deleting(swarm):
                return  # the finalizer removes its streams; provisioning now would bring them back
            actions, members, invalid = await self._converge_members(swarm, self.world)
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

    async def remove_streams(self, swarm: Swarm, attempt: int, waited_seconds: float) -> float | None:
        """Delete the swarm's streams (its finalizer): seconds until the next try while NATS is unreachable, None once done.

        Each failed try posts a Warning Event; after ``swarm_delete_timeout_seconds`` of trying, the streams are
        left in NATS with a Warning Event naming them, and the Swarm may go.
        """
        key = (swarm.metadata.namespace, swarm.metadata.name)
        names = SwarmNames(swarm.subject_prefix)
        url = swarm_nats_url(swarm, self.settings.nats_url)
        regarding = reference(SWARM, *key, swarm.metadata.uid)
        if not prefix_owned(swarm.metadata.namespace, swarm.subject_prefix):
            log.info("Swarm %s/%s deleted; its prefix was not its namespace's: no streams removed", *key)
            return None
        sharing = self._sharing_prefix(swarm)
        if sharing:
            log.info("Swarm %s/%s deleted; its streams stay for Swarm %s, which uses the same prefix", *key, sharing)
            return None
        # After any reconcile under way, which may still be creating them.
        async with self._locks.setdefault(key, asyncio.Lock()):
            try:
                conn = await self.pool.get(await self.target(swarm))
                removed = await provisioning.remove(conn, names)
            except (NatsUnavailable, TimeoutError, nats.errors.Error, JetStreamError) as error:
                reason = str(error) or type(error).__name__
                timeout = self.settings.swarm_delete_timeout_seconds
                remaining = timeout - waited_seconds
                if remaining <= 0:
                    left = ", ".join(provisioning.swarm_streams(names))
                    message = (
                        f"gave up removing the swarm's streams after {waited_seconds:.0f}s ({reason}); left in NATS at {url}: "
                        f"{left}; remove each with `nats stream rm <name>` once it is reachable"
                    )
                    log.error("Swarm %s/%s deleted; %s", *key, message)
                    await self.kube.post_event(regarding, "Warning", "StreamsLeft", message, action="Delete")
                    return None
                delay = min(backoff(attempt + 1), remaining)
                message = (
                    f"cannot remove the swarm's streams from NATS at {url} ({reason}); try {attempt + 1}, next in {delay:.0f}s; "
                    f"they are left behind after {timeout:.0f}s"
                )
                await self.kube.post_event(regarding, "Warning", "StreamsNotRemoved", message, action="Delete")
                return delay
        log.info("Swarm %s/%s deleted; removed %s", *key, ", ".join(removed) or "no streams")
        return None

    def _sharing_prefix(self, swarm: Swarm) -> str | None:
        """Another Swarm of the namespace with the same subject prefix (whose streams these are too), if any."""
        for (namespace, name), bodies in self.world.swarms.items():
            if namespace != swarm.metadata.namespace or name == swarm.metadata.name:
                continue
            for body in bodies:
                try:
                    other = Swarm.model_validate(body)
                except ValueError:
                    continue
                if other.subject_prefix == swarm.subject_prefix and not deleting(other):
                    return str(name)
        return None

    def forget(self, namespace: str, name: str) -> None:
        self.queue.forget((namespace, name))
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
        invalid = dict(wanted.invalid)
        actions = []
        for name, manifest in wanted.manifests.items():
            live = one(world.agents, (namespace, name))
            if live is not None and not controlled_by(live, swarm.metadata.uid):
                # Someone's own Agent (or another Swarm's): never taken over.
                invalid[name] = f'Agent "{name}" exists and is not owned by this Swarm (NameConflict): rename the member or remove it'
                continue
            if live is not None and contains(live, manifest):
                continue
            undone = replicas_undone(swarm, live, manifest) if live is not None else None
            if live is not None and undone:
                regarding = reference(AGENT, namespace, name, live["metadata"].get("uid"))
                await self.kube.post_event(regarding, "Warning", "ReplicasSetBySwarm", undone, action="Scale")
            await self.kube.apply(manifest, field_manager=self.member_manager)
            actions.append(f"{'updated' if live else 'created'} Agent {name}")
        in_namespace = [b for (ns, _), bodies in world.agents.items() if ns == namespace for b in bodies]
        for name in stale_members(swarm, in_namespace):
            await self.kube.delete(AGENT, namespace, name)
            actions.append(f"deleted Agent {name} (no longer in spec.agents)")
        members = {a.metadata.name: a for a in joined(swarm, valid_agents(world.agents))}
        for name, manifest in wanted.manifests.items():
            if name not in invalid:
                members.setdefault(name, Agent.model_validate(manifest))
        return actions, sorted(members.values(), key=lambda a: a.metadata.name), invalid

    async def _converge_streams(self, swarm: Swarm, members: Sequence[Agent]) -> NatsOutcome:
        names = SwarmNames(swarm.subject_prefix)
        if not prefix_owned(swarm.metadata.namespace, swarm.subject_prefix):
            message = prefix_not_owned(swarm)
            return NatsOutcome(condition("NatsReady", False, "PrefixNotOwned", message), None, (), None)
        try:
            target = await self.target(swarm)
            conn = await self.pool.get(target)
            done = await provisioning.provision(conn, names, swarm.spec.streams, capabilities(members))
            counts = await provisioning.message_counts(conn, names)
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
                if current is None and await self.kube.get(kind, namespace, name) is not None:
                    # Not this Swarm's (it lists only its own): never taken over.
                    exposures.append(Exposure(kind, name, None, f'{kind.kind} "{name}" exists and is not owned by this Swarm'))
                    continue
                if current is None or not contains(current, manifest):
                    current = await self.kube.apply(manifest)
                    actions.append(f"applied {kind.kind} {name}")
            except KindNotInstalled as error:
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
            for item in await self.kube.list_selected(kind, swarm.metadata.namespace, selector):
                if controlled_by(item, swarm.metadata.uid):
                    found[(kind, item["metadata"]["name"])] = item
        return found

    async def _report(self, swarm: Swarm, members: Sequence[Agent], observed: SwarmObserved, actions: Sequence[str]) -> None:
        key = (swarm.metadata.namespace, swarm.metadata.name)
        new = compute_swarm_status(swarm, members, observed, now())
        patch = status_patch(new)
        regarding = reference(SWARM, *key, swarm.metadata.uid)
        if actions:
            await self.kube.post_event(regarding, "Normal", "Reconciled", "; ".join(actions), action="Reconcile")
        # The body may predate our last status write (the watch lags): do not write or announce it twice.
        if (swarm.status is not None and status_patch(swarm.status) == patch) or self._written.get(key) == patch:
            return
        await self.kube.patch_status(SWARM, *key, patch)
        self._written[key] = patch
        for event in condition_events(swarm.status.conditions if swarm.status else [], new.conditions):
            await self.kube.post_event(regarding, event.type, event.reason, event.message, action="Reconcile")
