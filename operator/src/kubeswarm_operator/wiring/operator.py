"""The composition root: one typed object, built once at startup, that owns every client, watch, controller and loop.

kopf's handlers (:mod:`.handlers`) hold no state of their own: they hand
each event to the :class:`Operator` and read nothing else.  kopf keeps its
indexes (Agents, Swarms, HPAs) in the same objects for the operator's life
and hands them to the startup handler, so the operator's view of the cluster
(:class:`World`) is assembled once, here, from those indexes and the
children's own watches.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kubeswarm_runtime.natsauth import NatsAuthority
from kubeswarm_runtime.render import CREDENTIALS_SECRET_SUFFIX
from kubeswarm_runtime.resources import Agent, Swarm

from .. import metrics
from ..agent.children import AWS_SYNCED_SUFFIX
from ..agent.reconciler import CHILD_EVENT_SECONDS, STATUS_SETTLE_SECONDS, AgentReconciler
from ..agent.status import deployment_settling
from ..jetstream.connections import NatsPool
from ..jetstream.identity import NatsIdentities
from ..kube.client import Kube
from ..kube.kinds import CHILD_KINDS, CONFIG_MAP, DEPLOYMENT, SECRET, Key, Kind, Manifest
from ..kube.owned import AGENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MANAGED_SELECTOR
from ..kube.watch import ChildWatch, Notify, PackedViews, digests_view, strip
from ..kube.world import View, World
from ..loops.agent_loops import AgentLoops
from ..settings import OperatorSettings
from ..swarm.controller import SwarmController

log = logging.getLogger(__name__)

# Kinds the pods read user-owned objects of too: kept as content digests, and their readers told of a change.
SHARED_KINDS = (SECRET, CONFIG_MAP)
# ConfigMaps are watched whole; Secrets only where we are the manager, plus each one an Agent references
# (a watch of that one name), so the operator holds no view of any other Secret.
WHOLE_KINDS = (CONFIG_MAP,)
MANAGED_SECRET_SUFFIXES = (CREDENTIALS_SECRET_SUFFIX, AWS_SYNCED_SUFFIX)
SECRET_LISTING_WAIT_SECONDS = 10.0


class Operator:
    def __init__(self, settings: OperatorSettings, *, agents: View, swarms: View, scaled: View, refs: View) -> None:
        self.settings = settings
        self.kube = Kube(settings.field_manager)
        # Watches hold their connections for minutes: a pool of their own, without a limit.
        self.watch_kube = Kube(settings.field_manager, connections=0)
        self.children: dict[Kind, PackedViews] = {kind: PackedViews() for kind in CHILD_KINDS}
        self.world = World(agents=agents, swarms=swarms, children=self.children, scaled=scaled, refs=refs)
        self.agents = AgentReconciler(self.kube, settings, self.world)
        self.nats = NatsPool(settings.nats_connect_timeout_seconds)
        self.swarms = SwarmController(self.kube, settings, self.nats, self.world)
        self.loops = AgentLoops(self.kube, self.world, self.swarms, self.agents.findings, self.agents.enqueue)
        namespaces: list[str | None] = list(settings.namespaces) or [None]
        self.watches = [
            ChildWatch(
                self.watch_kube,
                kind,
                namespace,
                label_selector=None if kind in WHOLE_KINDS else MANAGED_SELECTOR,
                view=digests_view if kind in SHARED_KINDS else strip,
                items=self.children[kind],
                notify=self._child_changed(kind),
                server_timeout=settings.watch_server_timeout,
                client_timeout=settings.watch_client_timeout,
            )
            for kind in CHILD_KINDS
            for namespace in namespaces
        ]
        self._background: list[asyncio.Task[None]] = []
        # Referenced Secrets, each watched by name: its watch and whether its first listing is done.
        self._secret_watches: dict[Key, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self.agents.watch_secrets = self.watch_secrets

    async def start(self) -> None:
        """List every child kind (before kopf starts the Agent handlers: a restarted operator recreates nothing), then run."""
        metrics.serve(self.settings.metrics_port)
        if self.settings.nats_auth_secret:
            identities = NatsIdentities(
                await self._nats_authority(),
                self.settings.nats_url,
                self.nats,
                self.settings.swarm_resync_seconds,
                connect_url=self.settings.nats_operator_url,
            )
            self.agents.identities = self.swarms.identities = identities
        await asyncio.gather(*(watch.list_until_done() for watch in self.watches))
        loops = [
            *(watch.watch_forever() for watch in self.watches),
            self.agents.resync_forever(),
            self.swarms.resync_forever(),
            self.loops.autoscale_forever(),
            self.loops.refresh_secrets_forever(),
            self.loops.routes_forever(self.settings.swarm_resync_seconds),
            self.drop_secret_watches_forever(),
        ]
        self._background = [asyncio.create_task(loop) for loop in loops]

    async def _nats_authority(self) -> NatsAuthority:
        """The master of the NATS identities, from the auth Secret the NATS servers mount; created with a new master
        if missing (the servers wait for it), its server files brought up to date otherwise."""
        settings = self.settings
        namespace, name = settings.nats_auth_namespace, settings.nats_auth_secret
        while True:
            live = await self.kube.get(SECRET, namespace, name)
            data = {key: base64.b64decode(value).decode() for key, value in ((live or {}).get("data") or {}).items()}
            authority = NatsAuthority.from_files(data) if data.get("master") else NatsAuthority.generate()
            files = authority.server_files(resolver_dir=settings.nats_resolver_dir, routes=settings.nats_routes)
            encoded = {key: base64.b64encode(value.encode()).decode() for key, value in files.items()}
            if live is None:
                secret = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
                    "type": "Opaque",
                    "data": encoded,
                }
                if not await self.kube.create(secret):
                    continue  # another replica created it meanwhile: use its master
                log.info("created the NATS auth Secret %s/%s", namespace, name)
            elif data != files:
                await self.kube.merge_patch(SECRET, namespace, name, {"data": encoded})
                log.info("updated the NATS auth Secret %s/%s", namespace, name)
            return authority

    async def close(self) -> None:
        secret_watches = [task for task, _ in self._secret_watches.values()]
        for task in [*self._background, *secret_watches]:
            task.cancel()
        await asyncio.gather(*secret_watches, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.agents.close()
        await self.swarms.queue.close()
        await self.nats.close()
        await self.kube.close()
        await self.watch_kube.close()

    # -- events

    async def agent_event(self, type_: str | None, body: Mapping[str, Any], namespace: str, name: str) -> None:
        """An Agent was listed, changed or deleted: its reconcile, its swarm's, and the loops that concern it.

        Its own reconcile is queued only when it is new or its spec changed
        (the watched generation tells a spec change from its own status writes).
        """
        meta = body.get("metadata", {})
        spec = body.get("spec", {})
        if type_ == "DELETED":
            self.agents.forget(namespace, name)
        else:
            self.agents.observe(namespace, name, meta.get("uid"), meta.get("generation"))
        if type_ is None:
            return  # the initial listing: every Swarm is reconciled on its own resume
        self.swarms.enqueue(namespace, spec.get("swarm", "default"))
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "Swarm":
                self.swarms.enqueue(namespace, ref.get("name", ""))
        if type_ == "DELETED":
            self.loops.forget(namespace, name)
            return
        if not self.loops.concerned((namespace, name), spec):
            return
        try:
            agent = Agent.model_validate(body)
        except ValueError:
            return
        try:
            await self.loops.changed(agent)
        except Exception as error:  # the timers retry; an Agent event is no reason to fail
            log.warning("Agent %s/%s: %s", namespace, name, error)

    def swarm_event(self, type_: str | None, body: Mapping[str, Any], namespace: str, name: str) -> None:
        """A Swarm was listed, changed or deleted: its reconcile, and its Agents' (its NATS settings reach their ConfigMaps)."""
        if type_ == "DELETED":
            self.swarms.forget(namespace, name)
        else:
            meta = body.get("metadata", {})
            self.swarms.observe(namespace, name, meta.get("uid"), meta.get("generation"))
        if type_ is None:
            return  # the initial listing: every Agent is queued by its own
        for (agent_ns, agent_name), bodies in self.world.agents.items():
            if agent_ns == namespace and any(b.get("spec", {}).get("swarm", "default") == name for b in bodies):
                self.agents.enqueue(agent_ns, agent_name)

    def hpa_event(self, namespace: str, target: str) -> None:
        """An HPA on an Agent's Deployment takes its replicas over (and gives them back when deleted)."""
        self.agents.enqueue(namespace, target)

    async def remove_swarm_streams(self, swarm: Swarm, attempt: int, waited_seconds: float) -> float | None:
        """The Swarm's finalizer: None once done (streams removed or left behind), else seconds until the next try."""
        retry_in = await self.swarms.remove_streams(swarm, attempt, waited_seconds)
        if retry_in is None:
            self.swarms.forget(swarm.metadata.namespace, swarm.metadata.name)
        return retry_in

    # -- the children's watches

    def _managed_secret(self, namespace: str, name: str) -> bool:
        """One of an Agent's own Secrets (its credentials, its AWS-synced key): the managed watch has it."""
        return any(
            name.endswith(suffix) and bool(self.world.agents.get((namespace, name.removesuffix(suffix))))
            for suffix in MANAGED_SECRET_SUFFIXES
        )

    async def watch_secrets(self, namespace: str, names: Iterable[str]) -> None:
        """Watch these referenced Secrets (those not ours) and wait, boundedly, for their first listing: a reconcile
        must not take a Secret the operator has not looked at yet for a missing one (its pods would roll twice)."""
        listings = []
        for name in names:
            if self._managed_secret(namespace, name):
                continue
            key = (namespace, name)
            if key not in self._secret_watches:
                self._secret_watches[key] = self._start_secret_watch(key)
            listings.append(self._secret_watches[key][1].wait())
        if listings:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*listings), SECRET_LISTING_WAIT_SECONDS)

    def _start_secret_watch(self, key: Key) -> tuple[asyncio.Task[None], asyncio.Event]:
        namespace, name = key
        watch = ChildWatch(
            self.watch_kube,
            SECRET,
            namespace,
            label_selector=None,
            field_selector=f"metadata.name={name}",
            report_first_listing=True,  # a reader that did not wait for it hears that it is there
            view=digests_view,
            items=self.children[SECRET],
            notify=self._child_changed(SECRET),
            server_timeout=self.settings.watch_server_timeout,
            client_timeout=self.settings.watch_client_timeout,
        )
        listed = asyncio.Event()

        async def run() -> None:
            await watch.list_until_done()
            listed.set()
            await watch.watch_forever()

        return asyncio.get_running_loop().create_task(run()), listed

    async def drop_secret_watches_forever(self) -> None:
        """Stop watching Secrets no Agent (nor Swarm, for its NATS credentials) references any more; forget their digests."""
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            referenced = {(ns, name) for (kind, ns, name), readers in self.world.refs.items() if kind == "Secret" and readers}
            for (ns, _), bodies in self.world.swarms.items():
                for body in bodies:
                    creds = ((body.get("spec") or {}).get("nats") or {}).get("credentialsSecretRef") or {}
                    if creds.get("name"):
                        referenced.add((ns, creds["name"]))
            for key in self._secret_watches.keys() - referenced:
                task, _ = self._secret_watches.pop(key)
                task.cancel()
                if not self._managed_secret(*key):
                    self.children[SECRET].pop(key, None)

    def _child_changed(self, kind: Kind) -> Notify:
        """Who is told when a child changes or vanishes: its Agent (the reconcile writes only if it drifted).

        A Secret or ConfigMap, ours or not, concerns the Agents whose pods read it: their config hash changes.
        """
        if kind in SHARED_KINDS:

            def readers_of(key: Key, view: Manifest) -> None:
                for agent in self.world.refs.get((kind.kind, *key), ()):
                    self.agents.enqueue(key[0], agent)

            return readers_of

        items = self.children[kind]

        def owner_of(key: Key, view: Manifest) -> None:
            agent = view.get("metadata", {}).get("labels", {}).get(AGENT_LABEL)
            if agent:
                # A Deployment's status moves in steps while its pods come up (several a second, thousands at once in a
                # rollout): its Agent's status follows those steps once a second, not at each. The last step (all pods
                # ready), a spec the controller has not observed yet (a hand edit, say) or a deletion: at once.
                settling = kind is DEPLOYMENT and key in items and deployment_settling(view)
                self.agents.enqueue(key[0], agent, delay=STATUS_SETTLE_SECONDS if settling else CHILD_EVENT_SECONDS)

        return owner_of
