"""Converge one Agent: desired children vs the watched live state, write only what differs, report status.

Level-based: create, update, resume, child events and the periodic resync all
call the same ``reconcile``.  Live state comes from the operator's watches
(a :class:`World` of in-memory views), so a reconcile that finds everything
in place makes no API request at all.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kubeswarm_runtime.natsauth import USER_LIFETIME_SECONDS
from kubeswarm_runtime.render import (
    JWT_SECRET_KEY,
    MCP_JWT_KEY_ENV,
    MODEL_API_KEY_ENV,
    NATS_CREDS_FILE_ENV,
    agent_subject_prefix,
    new_jwt_key,
    render_runtime_env,
)
from kubeswarm_runtime.resources import Agent, AgentStatus, SecretKeyRef, Swarm

from .. import metrics
from ..jetstream.connections import NatsUnavailable, swarm_nats_url
from ..jetstream.identity import NatsIdentities
from ..kube.client import ApiError, Kube, namespace_terminating
from ..kube.conditions import Event, now, status_patch
from ..kube.drift import contains
from ..kube.kinds import AGENT, CHILD_KINDS, CONFIG_MAP, DEPLOYMENT, INGRESS, SECRET, Key, Kind, Manifest, reference
from ..kube.owned import SPEC_HASH_ANNOTATION, controlled_by, data_digests, digest
from ..kube.workqueue import WorkQueue
from ..kube.world import World, latest, one
from ..settings import OperatorSettings
from .children import (
    NATS_CREDS_KEY,
    NATS_IDENTITY_ANNOTATION,
    NATS_RENEW_AFTER_ANNOTATION,
    ChildInputs,
    api_key_ref,
    build_children,
    child_name,
    config_hash,
    referenced_objects,
    secret_name,
)
from .findings import AgentFindings
from .status import Observed, compute_status, deployment_observed, transitions

log = logging.getLogger(__name__)
Remembered = TypeVar("Remembered")
Value = TypeVar("Value")

# After a write, the watch needs a moment to show it; within this window a view
# that differs is read again from the API server before it is taken for drift.
SETTLE_SECONDS = 15.0
PODS_READ = (CONFIG_MAP, SECRET)
SECRET_DATA = frozenset({"data"})
# A child's event brings its Agent's reconcile this soon (a burst of them collapses into one run); a Deployment's
# status steps, this soon (see wiring).
CHILD_EVENT_SECONDS = 0.2
STATUS_SETTLE_SECONDS = 1.0
# A new Agent's first status waits for its new Deployment's first report, at most this long: written before it, it
# would say "no pod yet" only to be written again a moment later (a status patch is the API server's costliest write
# per Agent).
FIRST_STATUS_WAIT_SECONDS = 10.0
# Events are posted beside the reconciles, this many at once, and past this many waiting, dropped (and counted):
# a burst of thousands of Agents must not take the API connections the reconciles need, nor memory without bound.
EVENT_POSTS_AT_ONCE = 8
EVENT_BACKLOG = 1000
# A failed push of a swarm's account is retried this soon (the pods keep retrying their connection meanwhile).
ACCOUNT_RETRY_SECONDS = 10.0


async def no_secret_watches(namespace: str, names: Iterable[str]) -> None:
    """Without the operator's wiring (tests), the World is given whole."""


def unexpired(recent: dict[Remembered, tuple[Value, float]], key: Remembered) -> Value | None:
    """What ``recent`` remembers of ``key`` until its deadline (monotonic); past it, forgotten: at thousands of Agents
    the map holds only what was written in the last moments."""
    entry = recent.get(key)
    if entry is None:
        return None
    if time.monotonic() < entry[1]:
        return entry[0]
    del recent[key]
    return None


class NameConflict(Exception):
    """An object of the child's kind and name exists and the Agent does not control it: it is left alone."""

    def __init__(self, kind: Kind, name: str) -> None:
        super().__init__(f'{kind.kind} "{name}" exists and is not owned by this Agent: rename the Agent or remove that object')


@dataclass(frozen=True)
class NatsIdentity:
    """The agent's NATS creds as the credentials Secret should hold them: annotations, and new creds when due."""

    annotations: dict[str, str]
    new_creds: str | None


def nats_identity(identities: NatsIdentities, agent: Agent, prefix: str, live_secret: Manifest | None, now: float) -> NatsIdentity:
    """Keep the creds the Secret holds while they are for this account and prefix and not due; else issue new ones."""
    namespace, swarm = agent.metadata.namespace, agent.spec.swarm
    issued_for = f"{identities.account(namespace, swarm).public_key}/{prefix}"
    annotations = (live_secret or {}).get("metadata", {}).get("annotations", {})
    renew_after = annotations.get(NATS_RENEW_AFTER_ANNOTATION, "")
    held = NATS_CREDS_KEY in (live_secret or {}).get("digests", {})
    if held and annotations.get(NATS_IDENTITY_ANNOTATION) == issued_for and renew_after.isdigit() and int(renew_after) > now:
        return NatsIdentity({NATS_IDENTITY_ANNOTATION: issued_for, NATS_RENEW_AFTER_ANNOTATION: renew_after}, None)
    creds = identities.agent_creds(namespace, swarm, agent.metadata.name, prefix)
    renew = str(int(now + USER_LIFETIME_SECONDS / 2))
    return NatsIdentity({NATS_IDENTITY_ANNOTATION: issued_for, NATS_RENEW_AFTER_ANNOTATION: renew}, creds)


@dataclass(frozen=True)
class Refs:
    """What the pods read from Secrets and ConfigMaps: content digests, and what is missing."""

    digests: dict[tuple[str, str], object]
    missing: list[str]


class AgentReconciler:
    def __init__(self, kube: Kube, settings: OperatorSettings, world: World) -> None:
        self.kube = kube
        self.settings = settings
        self.world = world
        self._locks: dict[Key, asyncio.Lock] = {}
        self.queue = WorkQueue("Agent", self._run, settings.worker_limit)
        self._recent: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._recent_status: dict[Key, tuple[AgentStatus, float]] = {}
        self._first_status_due: dict[Key, float] = {}  # new Agents whose first status waits (monotonic deadline)
        self._phases: dict[Key, str] = {}
        self._phase_counts: dict[str, int] = {}  # Agents by phase, kept as phases change (not recounted: O(1) per change)
        self._replica_labels: dict[Key, tuple[str, str, str]] = {}  # (namespace, agent, swarm) of its replica series
        self._posting: set[asyncio.Task[None]] = set()
        self._events: set[asyncio.Task[None]] = set()  # the Events among them
        self._event_slots = asyncio.Semaphore(EVENT_POSTS_AT_ONCE)
        # What the operator's loops (autoscaler, AWS secret sync, HTTPRoutes) found; merged into the status.
        self.findings = AgentFindings()
        # Makes sure the Secrets an Agent references are watched (the operator watches no others); see wiring.
        self.watch_secrets: Callable[[str, Iterable[str]], Awaitable[None]] = no_secret_watches
        # Set at startup where the operator issues NATS identities (its own NATS).
        self.identities: NatsIdentities | None = None

    # -- entry points

    async def reconcile(self, agent: Agent) -> None:
        """Bring one Agent's children and status to the desired state (raises on API errors, for retries)."""
        async with self.queue.slots:
            await self._reconcile(agent)

    async def _reconcile(self, agent: Agent) -> None:
        """``reconcile`` in a slot the caller holds."""
        key = (agent.metadata.namespace, agent.metadata.name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        started = time.perf_counter()
        async with lock:
            try:
                wrote = await self._converge(agent, self.world)
            except ApiError as error:
                if namespace_terminating(error):
                    log.debug("namespace of Agent %s/%s is being deleted; leaving it be", *key)
                    return
                metrics.RECONCILES.labels("Agent", "error").inc()
                raise
            except Exception:
                metrics.RECONCILES.labels("Agent", "error").inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.labels("Agent").observe(time.perf_counter() - started)
        metrics.RECONCILES.labels("Agent", "applied" if wrote else "unchanged").inc()

    def enqueue(self, namespace: str, name: str, delay: float = CHILD_EVENT_SECONDS) -> None:
        """Reconcile soon, from the latest watched body; bursts of child events collapse into one run.

        A run queued for later (a settle recheck) is brought forward by a sooner request:
        a child's event must not wait behind it.
        """
        self.queue.enqueue((namespace, name), delay)

    def observe(self, namespace: str, name: str, uid: object, generation: object) -> None:
        """An Agent's watch event: reconcile now if it is new or its spec changed.

        Its own status writes (and metadata edits) leave the generation as it
        was: nothing to do for them, the children depend on the spec alone.
        """
        self.queue.observe((namespace, name), (uid, generation))

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self.queue.forget(key)
        self._locks.pop(key, None)
        self._recent_status.pop(key, None)
        self._first_status_due.pop(key, None)
        self._count_phase(key, None)
        self._drop_replica_series(key)

    async def resync_forever(self) -> None:
        """The periodic level check: every Agent, spread over the resync period."""
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            keys = list(self.world.agents.keys())
            gap = self.settings.resync_seconds / max(len(keys), 1) / 2
            for namespace, name in keys:
                self.enqueue(namespace, name, delay=0)
                await asyncio.sleep(gap)

    async def flush_events(self) -> None:
        """Wait for the Events being posted in the background."""
        await asyncio.gather(*self._posting, return_exceptions=True)

    async def close(self) -> None:
        await self.queue.close()
        await self.flush_events()

    # -- internals

    async def _run(self, key: Key) -> None:
        agent = latest(self.world.agents, key, Agent)
        if agent is not None:
            await self._reconcile(agent)  # raises for the queue's retry

    async def _converge(self, agent: Agent, world: World) -> bool:
        namespace = agent.metadata.namespace
        swarm_body = one(world.swarms, (namespace, agent.spec.swarm))
        swarm = Swarm.model_validate(swarm_body) if swarm_body else None
        nats_url = swarm_nats_url(swarm, self.settings.nats_url)
        # The chart's environment for every agent first (an Agent's spec.env, set on the container, still wins over both).
        runtime_env = {**self.settings.agent_env, **render_runtime_env(agent, swarm, namespace=namespace, nats_url=nats_url)}

        live_secret = world.children[SECRET].get((namespace, secret_name(agent)))
        # Base64 as in a Secret's data, so its digests match what the watch reports once it exists.
        new_data: dict[str, str] = {}
        if not (live_secret and JWT_SECRET_KEY in live_secret.get("digests", {})):
            new_data[JWT_SECRET_KEY] = base64.b64encode(new_jwt_key().encode()).decode()
        identity = None
        # The Swarm's own credentials where it names them (their NATS, their users); else an identity on ours.
        swarm_creds = swarm.spec.nats.credentials_secret_ref if swarm is not None else None
        if swarm_creds is None and self.identities is not None and self.identities.manages(nats_url):
            identity = nats_identity(self.identities, agent, agent_subject_prefix(agent, swarm, namespace), live_secret, time.time())
            if identity.new_creds is not None:
                new_data[NATS_CREDS_KEY] = base64.b64encode(identity.new_creds.encode()).decode()
            # In the background: the Agent's children do not wait for NATS (an unreachable one takes seconds to give up on).
            self._background(self._ensure_account(agent))
        new_secret_data = new_data or None
        secret_refs = [name for kind, name in referenced_objects(agent) if kind == "Secret"]
        await self.watch_secrets(namespace, [*secret_refs, *([swarm_creds.name] if swarm_creds else [])])
        refs = self._refs(agent, world, runtime_env, new_secret_data, swarm_creds)
        inputs = ChildInputs(
            image=self.settings.runtime_image,
            runtime_env=runtime_env,
            nats_url=nats_url,
            ingress_namespace=self.settings.ingress_namespace,
            config_hash=config_hash(refs.digests),
            api_key_env=MODEL_API_KEY_ENV,
            jwt_key_env=MCP_JWT_KEY_ENV,
            scaled_externally=bool(world.scaled.get((namespace, "Deployment", agent.metadata.name))),
            nats_creds_env=NATS_CREDS_FILE_ENV if identity is not None or swarm_creds is not None else None,
            nats_creds_ref=swarm_creds,
            secret_annotations=identity.annotations if identity is not None else None,
            dns_selector=self.settings.dns_labels,
        )
        desired = build_children(agent, inputs)

        conflicts: list[str] = []

        async def converge_one(kind: Kind) -> str | None:
            live = world.children[kind].get((namespace, child_name(agent, kind)))
            try:
                return await self._converge_child(agent, kind, desired[kind], live, new_secret_data)
            except NameConflict as conflict:
                conflicts.append(str(conflict))
                return None

        async def converge(kinds: Iterable[Kind]) -> list[str | None]:
            return await asyncio.gather(*(converge_one(kind) for kind in kinds))

        # What the pods read first, then the rest in parallel (a Service's IP allocation is slow; pods need not wait for it).
        done = await converge(PODS_READ)
        done += await converge(kind for kind in CHILD_KINDS if kind not in PODS_READ)
        actions = [action for action in done if action]

        deployment = world.children[DEPLOYMENT].get((namespace, agent.metadata.name))
        if deployment is None and f"created {DEPLOYMENT.kind} {agent.metadata.name}" in actions:
            # Created just now, not in the watch yet: it has no pod yet (not "missing"), so the status written now
            # still holds when its watch event comes, and need not be written again for it.
            deployment = desired[DEPLOYMENT]
        observed = Observed(
            deployment=deployment,
            nats_url=nats_url,
            missing_refs=refs.missing,
            # An HTTPRoute's readiness comes from the route loop (findings).
            ingress_wanted=agent.spec.mcp.enabled and agent.spec.mcp.ingress.enabled and agent.spec.mcp.ingress.kind == "Ingress",
            ingress=world.children[INGRESS].get((namespace, agent.metadata.name)),
            conflicts=sorted(conflicts),
        )
        wrote_status = await self._report(agent, observed, actions)
        return bool(actions) or wrote_status

    async def _ensure_account(self, agent: Agent) -> None:
        """The agent's swarm account on the servers before its pods connect; a failure is retried soon, not raised:
        the rest of the Agent does not wait for NATS."""
        assert self.identities is not None
        namespace, swarm = agent.metadata.namespace, agent.spec.swarm
        try:
            await self.identities.ensure_account(self.identities.account(namespace, swarm))
        except NatsUnavailable as error:
            log.warning("Agent %s/%s: %s; retrying", namespace, agent.metadata.name, error)
            self.enqueue(namespace, agent.metadata.name, delay=ACCOUNT_RETRY_SECONDS)

    def _refs(
        self,
        agent: Agent,
        world: World,
        runtime_env: Mapping[str, str],
        new_secret: Mapping[str, str] | None,
        swarm_creds: SecretKeyRef | None = None,
    ) -> Refs:
        """Digests of everything the pods read (with the Swarm's NATS creds): ours from what we are about to write,
        others' from the watch.

        The NATS creds the operator issues are left out: a rotation reaches the pods as a file the kubelet swaps
        in, not as a rollout.
        """
        live_secret = world.children[SECRET].get((agent.metadata.namespace, secret_name(agent)))
        secret = {**((live_secret or {}).get("digests") or {}), **data_digests(new_secret or {})}
        secret.pop(NATS_CREDS_KEY, None)
        own = {
            ("ConfigMap", child_name(agent, CONFIG_MAP)): digest(dict(runtime_env)),
            ("Secret", secret_name(agent)): secret or None,
        }
        digests: dict[tuple[str, str], object] = {}
        missing = []
        for ref in sorted(referenced_objects(agent) | ({("Secret", swarm_creds.name)} if swarm_creds else set())):
            kind, name = ref
            if own.get(ref) is not None:
                digests[ref] = own[ref]
                continue
            live = world.children[SECRET if kind == "Secret" else CONFIG_MAP].get((agent.metadata.namespace, name))
            digests[ref] = live.get("digests") if live else None
            if live is None:
                missing.append(f'{kind.lower()} "{name}" not found')
        for key_ref in (api_key_ref(agent), swarm_creds):
            if key_ref is not None:
                keys = digests.get(("Secret", key_ref.name))
                if isinstance(keys, dict) and key_ref.key not in keys:
                    missing.append(f'secret "{key_ref.name}" has no key "{key_ref.key}"')
        return Refs(digests, missing)

    async def _converge_child(
        self, agent: Agent, kind: Kind, want: Manifest | None, live: Manifest | None, new_secret: Mapping[str, str] | None
    ) -> str | None:
        """Write one child if it differs; returns what was done, for the Agent's events.

        Raises NameConflict, writing nothing, where an object the Agent does not control holds the name.
        """
        namespace, name = agent.metadata.namespace, child_name(agent, kind)
        if live is not None and not controlled_by(live, agent.metadata.uid):
            if want is None:
                return None  # someone else's object, which we do not want anyway
            raise NameConflict(kind, name)
        if want is None:
            if live is None:
                return None
            await self.kube.delete(kind, namespace, name)
            return f"deleted {kind.kind} {name}"
        if live is not None and contains(live, want) and not (kind is SECRET and new_secret):
            return None
        wanted_hash = want["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        recent_key = (kind.kind, namespace, name)
        # Written exactly so moments ago: the watch may lag behind it (no reason to write it again), or someone
        # edited it since (a reason to, now). One fresh read tells which.
        settling = unexpired(self._recent, recent_key) == wanted_hash
        # Our watches see only our own objects (and other Secrets and ConfigMaps as digests): a plain apply would
        # take over one of someone else's, so create only; where the name is taken, the fresh read tells whose.
        if live is None and not settling and await self._create(kind, want, new_secret):
            self._recent[recent_key] = (wanted_hash, time.monotonic() + SETTLE_SECONDS)
            return f"created {kind.kind} {name}"
        if live is None or settling:
            fresh = await self.kube.get(kind, namespace, name)
            if fresh is not None and not controlled_by(fresh, agent.metadata.uid):
                raise NameConflict(kind, name)
            if fresh is not None and contains(fresh, want):
                return None  # a Secret's keys included: never overwritten from a view that lags
            live = fresh
        if kind is SECRET and new_secret is not None:
            with_data = {**want, "data": dict(new_secret)}
            if live is None:
                await self.kube.create(with_data)  # a 409 means it exists after all: never overwrite a key
            else:
                annotations = want["metadata"].get("annotations", {})
                await self.kube.merge_patch(kind, namespace, name, {"metadata": {"annotations": annotations}, "data": dict(new_secret)})
        else:
            await self._apply(kind, want, live)
        self._recent[recent_key] = (wanted_hash, time.monotonic() + SETTLE_SECONDS)
        if live is None:
            return f"created {kind.kind} {name}"
        if live.get("metadata", {}).get("annotations", {}).get(SPEC_HASH_ANNOTATION) == wanted_hash:
            return f"reverted a change made outside the Agent to {kind.kind} {name}"
        return f"updated {kind.kind} {name}"

    async def _create(self, kind: Kind, want: Manifest, new_secret: Mapping[str, str] | None) -> bool:
        """Create the child; False, writing nothing, where an object of its name exists."""
        return await self.kube.create({**want, "data": dict(new_secret)} if kind is SECRET and new_secret is not None else want)

    async def _apply(self, kind: Kind, want: Manifest, live: Manifest | None) -> None:
        # A Secret's keys are written by create and merge patch, never applied: an apply must not take them over.
        not_applied = SECRET_DATA if kind is SECRET else frozenset()
        try:
            await self.kube.apply(want, not_applied=not_applied)
        except ApiError as error:
            if error.status != 422 or live is None:
                raise
            # A hand edit can leave a list entry that merges with ours into an invalid object (two Service
            # ports named mcp). A merge patch replaces lists whole: take the content back, then own it again.
            content = {key: value for key, value in want.items() if key not in ("apiVersion", "kind", "metadata")}
            await self.kube.merge_patch(kind, want["metadata"]["namespace"], want["metadata"]["name"], content)
            await self.kube.apply(want, not_applied=not_applied)

    async def _report(self, agent: Agent, observed: Observed, actions: list[str]) -> bool:
        """Write the status if it changed, with Events for what was done and what changed."""
        stamped_at = now()
        key = (agent.metadata.namespace, agent.metadata.name)
        # The status we wrote moments ago may not have reached the watched body yet: compare with
        # (and carry transition times over from) that one, so it is neither written nor announced twice.
        recent = unexpired(self._recent_status, key)
        old = recent if recent is not None else agent.status
        seen = agent.model_copy(update={"status": old})
        new = self.findings.merge(key, compute_status(seen, observed, stamped_at), old, stamped_at)
        self._count_phase(key, str(new.phase))
        self._count_replicas(agent, observed, new)
        events = self._action_events(agent, actions)
        if old is None and self._first_status_waits(key, observed):
            for event in events:
                self._post(agent, event)
            return False
        changed = old is None or status_patch(old) != status_patch(new)
        if changed:
            await self.kube.patch_status(AGENT, *key, status_patch(new))
            self._recent_status[key] = (new, time.monotonic() + SETTLE_SECONDS)
            changes = transitions(old, new)
            if not any(event.reason == "NameConflict" for event in changes):
                changes += [Event("Warning", "NameConflict", conflict) for conflict in observed.conflicts]
            events += changes
        for event in events:
            self._post(agent, event)
        return changed

    def _first_status_waits(self, key: Key, observed: Observed) -> bool:
        """Whether a new Agent's first status waits for its Deployment's first report (until a deadline, when it is
        written whatever it says; the Deployment's status event, or the deadline's own run, brings the Agent back)."""
        deployment = observed.deployment
        if deployment is None or deployment_observed(deployment) or observed.conflicts:
            self._first_status_due.pop(key, None)
            return False
        now_ = time.monotonic()
        due = self._first_status_due.setdefault(key, now_ + FIRST_STATUS_WAIT_SECONDS)
        if now_ >= due:
            del self._first_status_due[key]
            return False
        self.enqueue(*key, delay=due - now_)
        return True

    def _post(self, agent: Agent, event: Event) -> None:
        """Post ``event`` on the Agent in the background: an Event is not worth holding a reconcile slot for."""
        if len(self._events) >= EVENT_BACKLOG:
            metrics.EVENTS_DROPPED.inc()
            return
        regarding = reference(AGENT, agent.metadata.namespace, agent.metadata.name, agent.metadata.uid)
        task = self._background(self._post_event(regarding, event))
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _post_event(self, regarding: Manifest, event: Event) -> None:
        async with self._event_slots:
            await self.kube.post_event(regarding, event.type, event.reason, event.message, action="Reconcile")

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` beside the reconcile; flush_events and close wait for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)
        return task

    @staticmethod
    def _action_events(agent: Agent, actions: list[str]) -> list[Event]:
        if not actions:
            return []
        first_time = agent.status is None or agent.status.observed_generation is None
        if first_time:
            return [Event("Normal", "Created", "; ".join(actions))]
        restored = [a for a in actions if a.startswith(("created", "reverted"))]
        updated = [a for a in actions if not a.startswith(("created", "reverted"))]
        events = []
        if restored:
            events.append(Event("Warning", "Restored", "; ".join(restored)))
        if updated:
            events.append(Event("Normal", "Updated", "; ".join(updated)))
        return events

    def _count_replicas(self, agent: Agent, observed: Observed, status: AgentStatus) -> None:
        key = (agent.metadata.namespace, agent.metadata.name)
        labels = (*key, agent.spec.swarm)
        if self._replica_labels.get(key) != labels:
            self._drop_replica_series(key)  # the Agent moved to another swarm
            self._replica_labels[key] = labels
        deployment_spec = (observed.deployment or {}).get("spec", {})
        desired = int(deployment_spec.get("replicas", agent.spec.replicas))
        metrics.AGENT_REPLICAS.labels(*labels, "desired").set(desired)
        metrics.AGENT_REPLICAS.labels(*labels, "ready").set(status.ready_replicas or 0)

    def _drop_replica_series(self, key: Key) -> None:
        labels = self._replica_labels.pop(key, None)
        if labels is not None:
            for state in ("desired", "ready"):
                with contextlib.suppress(KeyError):
                    metrics.AGENT_REPLICAS.remove(*labels, state)

    def _count_phase(self, key: Key, phase: str | None) -> None:
        """The Agent ``key`` is in ``phase`` now (None: gone): the Agents-by-phase gauges follow."""
        old = self._phases.pop(key, None)
        if phase is not None:
            self._phases[key] = phase
        if old == phase:
            return
        counts = self._phase_counts
        if old is not None:
            counts[old] -= 1
        if phase is not None:
            counts[phase] = counts.get(phase, 0) + 1
        for shown in ("Pending", "Running", "Degraded", "Failed"):
            metrics.AGENTS.labels(shown).set(counts.get(shown, 0))
