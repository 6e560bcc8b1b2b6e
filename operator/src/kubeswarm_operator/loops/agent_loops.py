"""Per-Agent work besides its children: backlog autoscaling, the AWS secret sync, its HTTPRoute.

Each runs on a timer over every watched Agent (and, for the secret and the
route, right after an Agent changes).  Findings go to :class:`AgentFindings`
and the Agent's reconcile writes them into its status; writes here are only
the objects themselves (replicas through the scale subresource, the synced
Secret, the HTTPRoute), each made only when it differs from what exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import nats.errors
from kubeswarm_runtime.connection import NatsConnection
from kubeswarm_runtime.names import PRIORITIES, SwarmNames
from kubeswarm_runtime.resources import Agent, Swarm, default_subject_prefix, prefix_owned
from kubeswarm_runtime.stores import task_backlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import Error as JetStreamError

from ..agent.autoscaling import decide, external_autoscaler
from ..agent.aws_secrets import (
    AwsSecretError,
    build_synced_secret,
    check_allowed,
    failure_condition,
    read_secret,
    synced_condition,
    synced_data,
)
from ..agent.children import AWS_SYNCED_SUFFIX, aws_synced_secret_name, manifest
from ..agent.findings import AgentFindings
from ..agent.ingress import Exposure, agent_route_body, ingress_ready
from ..jetstream.connections import NatsUnavailable
from ..kube.client import KindNotInstalled, Kube
from ..kube.conditions import condition
from ..kube.drift import contains
from ..kube.kinds import AGENT, HTTP_ROUTE, SECRET, Key, reference
from ..kube.owned import controlled_by, data_digests
from ..kube.world import World, one
from ..swarm.controller import SwarmController, valid_agents

log = logging.getLogger(__name__)


def autoscaled(spec: Mapping[str, Any]) -> bool:
    return bool((spec.get("autoscaling") or {}).get("enabled"))


def aws_backed(spec: Mapping[str, Any]) -> bool:
    return bool((spec.get("model") or {}).get("awsSecretsManager"))


def routed(spec: Mapping[str, Any]) -> bool:
    return ((spec.get("mcp") or {}).get("ingress") or {}).get("kind") == "HTTPRoute"


@dataclass
class WorkWatch:
    """The subscriptions that wake one Agent at zero."""

    conn: NatsConnection
    subjects: tuple[str, ...]
    subscriptions: list[Subscription]

    async def stop(self) -> None:
        for subscription in self.subscriptions:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()


def regarding(agent: Agent) -> dict[str, Any]:
    return reference(AGENT, agent.metadata.namespace, agent.metadata.name, agent.metadata.uid)


class AgentLoops:
    def __init__(
        self,
        kube: Kube,
        world: World,
        swarms: SwarmController,
        findings: AgentFindings,
        reconcile_soon: Callable[[str, str], None],
    ) -> None:
        self.kube = kube
        self.swarms = swarms
        self.settings = swarms.settings
        self.findings = findings
        self.reconcile_soon = reconcile_soon
        self.world = world
        self._low_since: dict[Key, float] = {}
        self._scaled_to: dict[Key, int] = {}
        self._synced: dict[Key, str] = {}  # the AWS reference last synced (secret id, region, key)
        self._routed: set[Key] = set()  # Agents that have (or had) an HTTPRoute
        self._autoscaled: set[Key] = set()  # Agents that autoscale (or did, until their condition is cleared)
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        # Agents that may sit at zero replicas: their task subjects, followed so a published task wakes them at once.
        self._wakers: dict[Key, WorkWatch] = {}
        self._waking: set[Key] = set()
        self._background: set[asyncio.Future[None]] = set()

    def _signal(self, agent: Agent, changed: bool) -> None:
        if changed:
            self.reconcile_soon(agent.metadata.namespace, agent.metadata.name)

    # -- loops

    async def autoscale_forever(self) -> None:
        while True:
            started = time.monotonic()
            await self._each(self.autoscale, lambda key, spec: key in self._autoscaled or autoscaled(spec))
            await asyncio.sleep(max(0.0, self.settings.autoscale_interval_seconds - (time.monotonic() - started)))

    async def refresh_secrets_forever(self) -> None:
        """Re-read every AWS secret now and then: rotation in AWS reaches the Secret (and rolls the pods)."""
        while True:
            await asyncio.sleep(self.settings.aws_refresh_seconds)
            await self._each(self.sync_secret, lambda key, spec: key in self._synced or aws_backed(spec))

    async def _each(self, step: Callable[[Agent], Awaitable[None]], concerns: Callable[[Key, Mapping[str, Any]], bool]) -> None:
        """Run ``step`` on every Agent it concerns (judged from the raw spec: most Agents are not parsed at all)."""
        bodies = {key: values for key, values in self.world.agents.items() if any(concerns(key, body.get("spec") or {}) for body in values)}
        agents = valid_agents(bodies)
        results = await asyncio.gather(*(self._locked(agent, step) for agent in agents), return_exceptions=True)
        for agent, result in zip(agents, results, strict=True):
            if isinstance(result, Exception):
                log.warning("%s of Agent %s/%s failed: %s", step.__name__, agent.metadata.namespace, agent.metadata.name, result)

    async def _locked(self, agent: Agent, step: Callable[[Agent], Awaitable[None]]) -> None:
        # One run of a step per Agent at a time (the timer and an Agent event may meet).
        async with self._locks.setdefault((agent.metadata.namespace, agent.metadata.name, step.__name__), asyncio.Lock()):
            await step(agent)

    def concerned(self, key: Key, spec: Mapping[str, Any]) -> bool:
        """Does an Agent's change concern these loops at once (its route, its AWS secret)?  Most do not."""
        if key in self._routed or key in self._synced or routed(spec) or aws_backed(spec):
            return True
        # A synced Secret left from an AWS reference removed while the operator was down.
        synced = (key[0], key[1] + AWS_SYNCED_SUFFIX)
        return bool(self.world.children[SECRET].get(synced))

    async def changed(self, agent: Agent) -> None:
        """An Agent was created or changed: its secret (if its AWS reference is new) and route now, not at the next tick."""
        await self._locked(agent, self.sync_route)
        ref = agent.spec.model.aws_secrets_manager
        if ref is None or self._synced.get(self._key(agent)) != ref.model_dump_json():
            await self._locked(agent, self.sync_secret)

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        for state in (self._low_since, self._scaled_to, self._synced):
            state.pop(key, None)
        if (watch := self._wakers.pop(key, None)) is not None:
            self._in_background(watch.stop())
        self._routed.discard(key)
        self._autoscaled.discard(key)
        self.findings.forget(key)

    @staticmethod
    def _key(agent: Agent) -> Key:
        return (agent.metadata.namespace, agent.metadata.name)

    def _swarm(self, agent: Agent) -> Swarm | None:
        body = one(self.world.swarms, (agent.metadata.namespace, agent.spec.swarm))
        return Swarm.model_validate(body) if body else None

    # -- autoscaling

    async def autoscale(self, agent: Agent, at_least: int = 0) -> None:
        """Set the Agent's replicas from its backlog (``at_least``: a task just seen published, maybe not yet counted)."""
        key = self._key(agent)
        spec = agent.spec.autoscaling
        if not spec.enabled or spec.min_replicas > 0:
            await self._stop_watching(key)
        if not spec.enabled:
            self._autoscaled.discard(key)
            self._low_since.pop(key, None)
            changed = self.findings.clear_condition(key, "Scaling") | self.findings.set_backlog(key, None)
            self._signal(agent, changed)
            return
        self._autoscaled.add(key)
        hpa = self._hpa(agent)
        if hpa is not None:
            self._low_since.pop(key, None)
            self._signal(agent, self.findings.set_condition(key, external_autoscaler(hpa)))
            return
        swarm = self._swarm(agent)
        prefix = swarm.subject_prefix if swarm else default_subject_prefix(agent.metadata.namespace, agent.spec.swarm)
        if not prefix_owned(agent.metadata.namespace, prefix):
            unknown = condition("Scaling", False, "PrefixNotOwned", f"the swarm's prefix {prefix!r} is not this namespace's")
            self._signal(agent, self.findings.set_condition(key, unknown))
            return
        try:
            conn = await self.swarms.pool.get(await self.swarms.target(swarm, agent.metadata.namespace, agent.spec.swarm))
            if spec.min_replicas == 0:
                await self._watch_for_work(agent, conn, SwarmNames(prefix))
            backlog = max(at_least, await task_backlog(conn, SwarmNames(prefix), agent.spec.capabilities))
        except (NatsUnavailable, TimeoutError, nats.errors.Error, JetStreamError) as error:
            unknown = condition("Scaling", False, "BacklogUnknown", f"cannot read the backlog, replicas left as they are: {error}")
            self._signal(agent, self.findings.set_condition(key, unknown))
            return
        current = self._current_replicas(agent)
        decision = decide(spec, current, backlog, self._low_since.get(key), time.monotonic())
        if decision.low_since is None:
            self._low_since.pop(key, None)
        else:
            self._low_since[key] = decision.low_since
        if decision.changes(current):
            await self.kube.scale(AGENT, agent.metadata.namespace, agent.metadata.name, decision.replicas)
            self._scaled_to[key] = decision.replicas
            reason = "ScaledUp" if decision.replicas > current else "ScaledDown"
            message = f"{current} -> {decision.replicas} replicas: {decision.message}"
            await self.kube.post_event(regarding(agent), "Normal", reason, message, action="Scale")
        changed = self.findings.set_condition(key, decision.as_condition()) | self.findings.set_backlog(key, backlog)
        self._signal(agent, changed)

    async def _watch_for_work(self, agent: Agent, conn: NatsConnection, names: SwarmNames) -> None:
        """Follow the task subjects of an Agent that may sit at zero: its first task wakes it as it is published, not at
        the next tick of the loop (core subscriptions see each JetStream publish; nothing is consumed)."""
        key = self._key(agent)
        subjects = tuple(names.task(capability, priority) for capability in agent.spec.capabilities for priority in PRIORITIES)
        watch = self._wakers.get(key)
        if watch is not None and watch.subjects == subjects and watch.conn is conn:
            return
        await self._stop_watching(key)

        async def published(_msg: Msg) -> None:
            if key not in self._waking:
                self._waking.add(key)
                self._in_background(self._wake(key)).add_done_callback(lambda _done: self._waking.discard(key))

        self._wakers[key] = WorkWatch(conn, subjects, [await conn.nc.subscribe(subject, cb=published) for subject in subjects])

    async def _wake(self, key: Key) -> None:
        """A task was published for an Agent that may be at zero: decide now (with that task counted)."""
        agents = valid_agents({key: self.world.agents.get(key, [])})
        if not agents or self._current_replicas(agents[0]) > 0:
            return
        agent = agents[0]
        async with self._locks.setdefault((*key, self.autoscale.__name__), asyncio.Lock()):
            try:
                await self.autoscale(agent, at_least=1)
            except Exception as error:  # the loop's next tick tries again
                log.warning("waking Agent %s/%s failed: %s", *key, error)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        future = asyncio.ensure_future(work)
        self._background.add(future)
        future.add_done_callback(self._background.discard)
        return future

    async def _stop_watching(self, key: Key) -> None:
        if (watch := self._wakers.pop(key, None)) is not None:
            await watch.stop()

    def _hpa(self, agent: Agent) -> str | None:
        """The HPA scaling this Agent (through its scale subresource, or its Deployment directly), if any."""
        namespace, name = agent.metadata.namespace, agent.metadata.name
        for kind in ("Agent", "Deployment"):
            hpa = one(self.world.scaled, (namespace, kind, name))
            if hpa:
                return str(hpa)
        return None

    def _current_replicas(self, agent: Agent) -> int:
        """spec.replicas, or what we wrote moments ago if the watched body has not caught up (so it is not written twice)."""
        key = self._key(agent)
        written = self._scaled_to.get(key)
        if written is None or written == agent.spec.replicas:
            self._scaled_to.pop(key, None)
            return agent.spec.replicas
        return written

    # -- AWS Secrets Manager

    async def sync_secret(self, agent: Agent) -> None:
        key = self._key(agent)
        ref = agent.spec.model.aws_secrets_manager
        live = self.world.children[SECRET].get((agent.metadata.namespace, aws_synced_secret_name(agent)))
        ours = live is not None and controlled_by(live, agent.metadata.uid)
        if ref is None:
            self._synced.pop(key, None)
            if ours:
                await self.kube.delete(SECRET, agent.metadata.namespace, aws_synced_secret_name(agent))
            self._signal(agent, self.findings.clear_condition(key, "SecretsReady"))
            return
        if live is not None and not ours:
            message = f'Secret "{aws_synced_secret_name(agent)}" exists and is not owned by this Agent: the AWS key is not synced'
            self._signal(agent, self.findings.set_condition(key, condition("SecretsReady", False, "NameConflict", message)))
            return
        try:
            check_allowed(ref, self.settings.aws_secret_prefix, agent.metadata.namespace)
            value = await read_secret(ref, self.settings.aws_endpoint_url)
        except AwsSecretError as error:
            self._signal(agent, self.findings.set_condition(key, failure_condition(error)))
            return
        # Compared by digest: the watch keeps no values, and neither do we.
        if live is None or live.get("digests") != data_digests(synced_data(value)):
            await self.kube.apply(build_synced_secret(agent, value))
        self._synced[key] = ref.model_dump_json()
        self._signal(agent, self.findings.set_condition(key, synced_condition(agent)))

    # -- HTTPRoute

    async def sync_route(self, agent: Agent) -> None:
        key = self._key(agent)
        body = agent_route_body(agent)
        namespace, name = agent.metadata.namespace, agent.metadata.name
        if body is None and key not in self._routed and agent.spec.mcp.ingress.kind != "HTTPRoute":
            return  # never had a route: nothing to look up
        live = await self.kube.get(HTTP_ROUTE, namespace, name)
        if body is None:
            if live is not None and controlled_by(live, agent.metadata.uid):
                await self.kube.delete(HTTP_ROUTE, namespace, name)
            self._routed.discard(key)
            # An Ingress (if any) is the Agent reconcile's to report.
            self._signal(agent, self.findings.clear_condition(key, "IngressReady"))
            return
        self._routed.add(key)
        if live is not None and not controlled_by(live, agent.metadata.uid):
            conflict = condition("IngressReady", False, "NameConflict", f'HTTPRoute "{name}" exists and is not owned by this Agent')
            self._signal(agent, self.findings.set_condition(key, conflict))
            return
        want = manifest(agent, HTTP_ROUTE, body)
        try:
            if live is None or not contains(live, want):
                live = await self.kube.apply(want)
            exposure = Exposure(HTTP_ROUTE, name, live)
        except KindNotInstalled as error:
            exposure = Exposure(HTTP_ROUTE, name, None, str(error))
        self._signal(agent, self.findings.set_condition(key, ingress_ready([exposure])))

    async def routes_forever(self, period: float) -> None:
        """Route status (Gateway acceptance) changes without an Agent event: look again now and then."""
        while True:
            await asyncio.sleep(period)
            await self._each(self.sync_route, lambda key, spec: key in self._routed or routed(spec))
