"""The reconciler against an in-memory World and a recording Kube: it writes only what differs."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import tracemalloc
from typing import Any

import pytest
from kubeswarm_operator.agent import children, reconciler
from kubeswarm_operator.agent.reconciler import AgentReconciler
from kubeswarm_operator.agent.status import Observed, compute_status, deployment_settling, transitions
from kubeswarm_operator.kube import kinds
from kubeswarm_operator.kube.kinds import CHILD_KINDS, Kind
from kubeswarm_operator.kube.owned import data_digests
from kubeswarm_operator.kube.watch import PackedViews, prune, strip
from kubeswarm_operator.kube.world import World
from kubeswarm_operator.settings import OperatorSettings
from kubeswarm_runtime.resources import Agent, AgentStatus, Condition
from prometheus_client import REGISTRY

pytestmark = pytest.mark.unit
Manifest = dict[str, Any]


class RecordingKube:
    """Stands in for the API: records writes and keeps what was written, as the watch would show it."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, str]] = []
        self.status: Manifest | None = None
        self.objects: dict[tuple[str, str], Manifest] = {}

    async def apply(self, obj: Manifest, not_applied: frozenset[str] = frozenset()) -> Manifest:
        self.writes.append(("apply", obj["kind"], obj["metadata"]["name"]))
        kept = {key: value for key, value in self.objects.get((obj["kind"], obj["metadata"]["name"]), {}).items() if key in not_applied}
        self.objects[obj["kind"], obj["metadata"]["name"]] = {**obj, **kept}
        return obj

    async def create(self, obj: Manifest) -> bool:
        if (obj["kind"], obj["metadata"]["name"]) in self.objects:
            return False  # the API server's 409: the name is taken
        self.writes.append(("create", obj["kind"], obj["metadata"]["name"]))
        self.objects[obj["kind"], obj["metadata"]["name"]] = obj
        return True

    async def get(self, kind: Kind, namespace: str, name: str) -> Manifest | None:
        return self.objects.get((kind.kind, name))

    async def merge_patch(self, kind: Kind, namespace: str, name: str, patch: Manifest) -> Manifest:
        self.writes.append(("merge", kind.kind, name))
        return patch

    async def delete(self, kind: Kind, namespace: str, name: str) -> None:
        self.writes.append(("delete", kind.kind, name))
        self.objects.pop((kind.kind, name), None)

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Manifest) -> None:
        self.writes.append(("status", kind.kind, name))
        self.status = status

    async def post_event(self, regarding: Manifest, type_: str, reason: str, message: str, action: str) -> None:
        self.writes.append(("event", reason, message))


@pytest.fixture(autouse=True)
def first_status_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new Agent's status is written by its first reconcile here (it waits for the Deployment's first report only in
    the test of that wait, below)."""
    monkeypatch.setattr(reconciler, "FIRST_STATUS_WAIT_SECONDS", 0.0)


def agent_body(status: Manifest | None = None, **spec: Any) -> Manifest:
    return {
        "apiVersion": "kubeswarm.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "scout", "namespace": "lab", "uid": "u-1", "generation": 1},
        "spec": spec,
        "status": status,
    }


def world_from(kube: RecordingKube, extra_secrets: dict[str, dict[str, str]] | None = None) -> World:
    """What the watches would show after the recorded writes (a ready Deployment, Secrets as digests)."""
    views: dict[Kind, dict[tuple[str, str], Manifest]] = {kind: {} for kind in CHILD_KINDS}
    for (kind_name, name), obj in kube.objects.items():
        kind = kinds.KINDS_BY_NAME[kind_name]
        live = dict(obj)
        if kind is kinds.SECRET:
            live["digests"] = data_digests(live.pop("data", {}))
        if kind is kinds.DEPLOYMENT:
            n = obj["spec"].get("replicas", 1)
            live["status"] = {"replicas": n, "readyReplicas": n, "updatedReplicas": n, "observedGeneration": 1}
            live["metadata"] = {**live["metadata"], "generation": 1}
        views[kind][("lab", name)] = live
    for name, data in (extra_secrets or {}).items():
        views[kinds.SECRET][("lab", name)] = {"digests": data_digests(data)}
    return World(agents={}, swarms={}, children=views, scaled={})


def make(kube: RecordingKube) -> AgentReconciler:
    world = World(agents={}, swarms={}, children={kind: {} for kind in CHILD_KINDS}, scaled={})
    return AgentReconciler(kube, OperatorSettings(runtime_image="runtime:1", nats_url="nats://nats:4222"), world)  # type: ignore[arg-type]


async def test_first_reconcile_creates_every_child_then_a_resync_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = RecordingKube()
    rec = make(kube)
    await rec.reconcile(Agent.model_validate(agent_body()))
    await rec.flush_events()
    kinds = [(verb, kind) for verb, kind, _ in kube.writes if verb in ("apply", "create")]
    # What the pods read first, then the rest.
    assert sorted(kinds[:2]) == [("create", "ConfigMap"), ("create", "Secret")]
    assert sorted(kinds[2:]) == [("create", "Deployment"), ("create", "NetworkPolicy"), ("create", "Service")]
    assert ("status", "Agent", "scout") in kube.writes
    assert any(w[0] == "event" and w[1] == "Created" for w in kube.writes)
    created_secret = kube.objects["Secret", "scout-credentials"]
    # The signing key is text an environment variable can hold and a token can be signed with.
    key = base64.b64decode(created_secret["data"]["jwt-key"]).decode("ascii")
    assert len(key) == 64 and key.isprintable()

    # The watch now shows what was written, and the Agent carries its status.
    rec.world = world_from(kube)
    status = kube.status
    kube.writes.clear()
    monkeypatch.setattr(reconciler, "SETTLE_SECONDS", 0.0)
    await rec.reconcile(Agent.model_validate(agent_body(status=status)))
    await rec.flush_events()
    status_after_ready = kube.status
    kube.writes.clear()
    await rec.reconcile(Agent.model_validate(agent_body(status=status_after_ready)))
    assert kube.writes == []


async def test_the_charts_agent_env_goes_into_every_agents_config_map_below_the_runtime_config() -> None:
    kube = RecordingKube()
    world = World(agents={}, swarms={}, children={kind: {} for kind in CHILD_KINDS}, scaled={})
    settings = OperatorSettings(
        runtime_image="runtime:1",
        nats_url="nats://nats:4222",
        agent_env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio"},
    )
    agent = Agent.model_validate(agent_body())
    await AgentReconciler(kube, settings, world).reconcile(agent)  # type: ignore[arg-type]
    data = kube.objects["ConfigMap", children.config_map_name(agent)]["data"]
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318" and data["KUBESWARM_AGENT"] == "scout"


async def test_a_hand_edit_moments_after_a_write_is_reverted_at_once_a_lagging_watch_is_not() -> None:
    kube = RecordingKube()
    rec = make(kube)
    await rec.reconcile(Agent.model_validate(agent_body()))
    written = kube.objects["Deployment", "scout"]
    # Within the settle window, the watch still shows an older Deployment, but the API server has ours: no write.
    stale = {**written, "spec": {**written["spec"], "replicas": 7}}
    rec.world = world_from(kube)
    rec.world = World(agents={}, swarms={}, children={**rec.world.children, kinds.DEPLOYMENT: {("lab", "scout"): stale}}, scaled={})
    kube.writes.clear()
    await rec.reconcile(Agent.model_validate(agent_body(status=kube.status)))
    assert ("apply", "Deployment", "scout") not in kube.writes
    # Someone edits it (the API server has the edit too): put back now, not once the window has passed.
    kube.objects["Deployment", "scout"] = stale
    await rec.reconcile(Agent.model_validate(agent_body(status=kube.status)))
    assert ("apply", "Deployment", "scout") in kube.writes


async def test_a_referenced_secret_change_rolls_the_deployment_only() -> None:
    kube = RecordingKube()
    rec = make(kube)
    spec = {"model": {"provider": "anthropic", "name": "m", "apiKeySecretRef": {"name": "llm", "key": "k"}}}
    rec.world = world_from(kube, {"llm": {"k": "b25l"}})
    await rec.reconcile(Agent.model_validate(agent_body(**spec)))
    before = kube.objects["Deployment", "scout"]["spec"]["template"]["metadata"]["annotations"][children.CONFIG_HASH_ANNOTATION]
    rec.world = world_from(kube, {"llm": {"k": "dHdv"}})
    kube.writes.clear()
    await rec.reconcile(Agent.model_validate(agent_body(status=kube.status, **spec)))
    applied = [(verb, kind) for verb, kind, _ in kube.writes if verb in ("apply", "create", "merge")]
    assert applied == [("apply", "Deployment")]
    after = kube.objects["Deployment", "scout"]["spec"]["template"]["metadata"]["annotations"][children.CONFIG_HASH_ANNOTATION]
    assert after != before


async def test_missing_secret_key_is_reported_with_an_actionable_message() -> None:
    kube = RecordingKube()
    rec = make(kube)
    rec.world = world_from(kube, {"llm": {"other": "eA=="}})
    spec = {"model": {"provider": "anthropic", "name": "m", "apiKeySecretRef": {"name": "llm", "key": "api-key"}}}
    await rec.reconcile(Agent.model_validate(agent_body(**spec)))
    await rec.flush_events()
    assert kube.status is not None
    secrets_ready = next(c for c in kube.status["conditions"] if c["type"] == "SecretsReady")
    assert secrets_ready["status"] == "False"
    assert secrets_ready["reason"] == "SecretNotFound"
    assert secrets_ready["message"] == 'secret "llm" has no key "api-key"'
    assert ("event", "SecretNotFound", 'SecretsReady: secret "llm" has no key "api-key"') in kube.writes


async def test_ready_is_false_while_a_secret_key_is_missing_even_with_ready_pods() -> None:
    kube = RecordingKube()
    rec = make(kube)
    spec = {"model": {"provider": "anthropic", "name": "m", "apiKeySecretRef": {"name": "llm", "key": "api-key"}}}
    rec.world = world_from(kube, {"llm": {"other": "eA=="}})
    await rec.reconcile(Agent.model_validate(agent_body(**spec)))
    rec.world = world_from(kube, {"llm": {"other": "eA=="}})  # now with a Deployment whose pods are all ready
    await rec.reconcile(Agent.model_validate(agent_body(status=kube.status, **spec)))
    assert kube.status is not None
    conditions = {c["type"]: c for c in kube.status["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "SecretsNotReady")
    assert conditions["SecretsReady"]["status"] == "False"
    assert kube.status["readyReplicas"] == 1


async def test_ready_follows_a_secrets_ready_failure_of_the_aws_sync() -> None:
    kube = RecordingKube()
    rec = make(kube)
    await rec.reconcile(Agent.model_validate(agent_body()))
    rec.world = world_from(kube)
    failed = Condition(type="SecretsReady", status="False", reason="ResourceNotFoundException", message="AWS says no")
    rec.findings.set_condition(("lab", "scout"), failed)
    await rec.reconcile(Agent.model_validate(agent_body(status=kube.status)))
    assert kube.status is not None
    ready = next(c for c in kube.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "SecretsNotReady", "AWS says no")


async def test_replica_series_per_agent_and_removed_with_the_agent() -> None:
    kube = RecordingKube()
    rec = make(kube)
    await rec.reconcile(Agent.model_validate(agent_body(replicas=2)))
    rec.world = world_from(kube)
    await rec.reconcile(Agent.model_validate(agent_body(status=kube.status, replicas=2)))

    def sample(state: str) -> float | None:
        labels = {"namespace": "lab", "agent": "scout", "swarm": "default", "state": state}
        return REGISTRY.get_sample_value("kubeswarm_operator_agent_replicas", labels)

    assert (sample("desired"), sample("ready")) == (2, 2)
    rec.forget("lab", "scout")
    assert (sample("desired"), sample("ready")) == (None, None)


async def test_a_sooner_request_brings_a_queued_recheck_forward() -> None:
    kube = RecordingKube()
    rec = make(kube)
    rec.world = World(agents={("lab", "scout"): [agent_body()]}, swarms={}, children={k: {} for k in CHILD_KINDS}, scaled={})
    rec.enqueue("lab", "scout", delay=3600)  # a settle recheck, far off
    later = rec.queue._queued["lab", "scout"]
    rec.enqueue("lab", "scout", delay=0)  # a child's event
    soon = rec.queue._queued["lab", "scout"]
    assert soon is not later
    await soon
    assert later.cancelled()
    assert ("status", "Agent", "scout") in kube.writes
    rec.enqueue("lab", "scout", delay=3600)
    rec.enqueue("lab", "scout", delay=7200)  # a later request leaves the sooner run queued
    assert len(rec.queue._queued) == 1
    await rec.close()


async def test_children_the_agent_no_longer_wants_are_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = RecordingKube()
    rec = make(kube)
    await rec.reconcile(Agent.model_validate(agent_body(replicas=3)))
    assert ("create", "PodDisruptionBudget", "scout") in kube.writes
    rec.world = world_from(kube)
    monkeypatch.setattr(reconciler, "SETTLE_SECONDS", 0.0)
    await rec.reconcile(Agent.model_validate(agent_body(status=kube.status, replicas=1)))
    assert ("delete", "PodDisruptionBudget", "scout") in kube.writes


def deployment_status(ready: int, wanted: int = 2, failure: bool = False) -> Manifest:
    conditions = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "stuck"}] if failure else []
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": wanted},
        "status": {
            "replicas": wanted,
            "readyReplicas": ready,
            "updatedReplicas": wanted,
            "observedGeneration": 1,
            "conditions": conditions,
        },
    }


@pytest.mark.parametrize(
    ("deployment", "phase", "ready_reason"),
    [
        (None, "Pending", "DeploymentMissing"),
        (deployment_status(0), "Pending", "ReplicasNotReady"),
        (deployment_status(1), "Degraded", "ReplicasNotReady"),
        (deployment_status(2), "Running", "AllReplicasReady"),
        (deployment_status(0, failure=True), "Failed", "ProgressDeadlineExceeded"),
        (deployment_status(0, wanted=0), "Idle", "ScaledToZero"),
    ],
)
def test_phase_and_ready_follow_the_deployment(deployment: Manifest | None, phase: str, ready_reason: str) -> None:
    agent = Agent.model_validate(agent_body())
    status = compute_status(agent, Observed(deployment=deployment, nats_url="nats://n:4222"), "2026-01-01T00:00:00Z")
    assert status.phase == phase
    assert status.conditions[0].type == "Ready"
    assert status.conditions[0].reason == ready_reason


def test_transition_times_are_kept_while_a_condition_holds() -> None:
    agent = Agent.model_validate(agent_body())
    first = compute_status(agent, Observed(deployment=deployment_status(2), nats_url="n"), "t1")
    again = compute_status(agent.model_copy(update={"status": first}), Observed(deployment=deployment_status(2), nats_url="n"), "t2")
    assert first == again
    assert transitions(first, again) == []
    degraded = compute_status(agent.model_copy(update={"status": first}), Observed(deployment=deployment_status(1), nats_url="n"), "t3")
    ready = next(c for c in degraded.conditions if c.type == "Ready")
    assert ready.last_transition_time == "t3"
    assert [e.reason for e in transitions(first, degraded)] == ["ReplicasNotReady", "PhaseDegraded"]
    assert (first.ready, degraded.ready) == ("2/2", "1/2")  # the READY column, as a Deployment's
    assert isinstance(degraded, AgentStatus)


async def test_an_agent_is_queued_for_a_new_generation_not_for_its_own_status_writes() -> None:
    kube = RecordingKube()
    rec = make(kube)
    rec.world = World(agents={("lab", "scout"): [agent_body()]}, swarms={}, children={k: {} for k in CHILD_KINDS}, scaled={})
    rec.observe("lab", "scout", "u-1", 1)  # created
    first = rec.queue._queued["lab", "scout"]
    await first
    assert ("status", "Agent", "scout") in kube.writes
    rec.observe("lab", "scout", "u-1", 1)  # its status written: the same generation
    assert ("lab", "scout") not in rec.queue._queued
    rec.observe("lab", "scout", "u-1", 2)  # the spec changed
    assert ("lab", "scout") in rec.queue._queued
    await rec.close()


@pytest.mark.parametrize("kind", [kinds.SERVICE, kinds.CONFIG_MAP, kinds.SECRET, kinds.DEPLOYMENT])
async def test_an_object_the_agent_does_not_own_is_left_alone_and_reported(kind: Kind) -> None:
    kube = RecordingKube()
    rec = make(kube)
    name = children.child_name(Agent.model_validate(agent_body()), kind)
    theirs = {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": {"name": name, "namespace": "lab"}}
    kube.objects[kind.kind, name] = theirs
    await rec.reconcile(Agent.model_validate(agent_body()))
    await rec.flush_events()
    assert not [w for w in kube.writes if w[1] == kind.kind and w[2] == name]
    assert kube.objects[kind.kind, name] is theirs
    assert kube.status is not None
    ready = next(c for c in kube.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NameConflict")
    assert f'{kind.kind} "{name}" exists and is not owned by this Agent' in ready["message"]
    assert any(w[0] == "event" and w[1] == "NameConflict" and name in w[2] for w in kube.writes)
    # The other children are made as usual.
    assert ("create", "NetworkPolicy", "scout") in kube.writes


def test_what_the_reconciler_remembers_of_its_writes_is_forgotten_past_its_window() -> None:
    now = time.monotonic()
    recent = {"written": ("hash", now + 60), "long ago": ("hash", now - 1)}
    assert reconciler.unexpired(recent, "written") == "hash"
    assert reconciler.unexpired(recent, "long ago") is None
    assert recent == {"written": ("hash", now + 60)}  # memory stays bounded by the writes of the last moments


def plain_inputs() -> children.ChildInputs:
    return children.ChildInputs(
        image="runtime:1",
        runtime_env={},
        nats_url="nats://n:4222",
        ingress_namespace="i",
        config_hash="h",
        api_key_env="K",
        jwt_key_env="J",
    )


def test_views_of_objects_parsed_apart_share_their_field_names_and_short_values() -> None:
    inputs = plain_inputs()
    deployment = children.build_children(Agent.model_validate(agent_body()), inputs)[kinds.DEPLOYMENT]
    assert deployment is not None
    text = json.dumps({**deployment, "metadata": {**deployment["metadata"], "managedFields": [{"manager": "x"}]}})
    first, second = prune(json.loads(text)), prune(json.loads(text))
    assert first == deployment  # the same content, managedFields left out
    containers = first["spec"]["template"]["spec"]["containers"], second["spec"]["template"]["spec"]["containers"]
    image_keys = [next(key for key in c[0] if key == "image") for c in containers]
    assert image_keys[0] is image_keys[1]  # one string for thousands of views, not one each
    assert containers[0][0]["image"] is containers[1][0]["image"]


def test_packed_views_read_back_what_was_stored_as_copies_in_less_memory_than_the_compacted_dicts() -> None:
    inputs = plain_inputs()
    bodies = [agent_body() for _ in range(200)]
    for i, body in enumerate(bodies):
        body["metadata"] = {**body["metadata"], "name": f"a{i}", "uid": f"u-{i}"}
    deployments = [json.dumps(children.build_children(Agent.model_validate(body), inputs)[kinds.DEPLOYMENT]) for body in bodies]
    views = PackedViews()
    key = ("lab", "a0")
    views[key] = strip(json.loads(deployments[0]))
    assert views[key] == json.loads(deployments[0]) and key in views and list(views) == [key] and len(views) == 1
    views[key]["spec"]["replicas"] = 7
    assert views[key]["spec"]["replicas"] == 1, "a read is a copy: no caller can change the view"
    del views[key]
    assert views.get(key) is None and len(views) == 0

    def held(store: Any) -> int:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i, text in enumerate(deployments):
                store[("lab", f"a{i}")] = strip(json.loads(text)) if isinstance(store, PackedViews) else prune(json.loads(text))
            return int(tracemalloc.get_traced_memory()[0] - before)
        finally:
            tracemalloc.stop()

    packed, compacted = held(PackedViews()), held({})
    assert packed < compacted / 2, (packed, compacted)


async def test_events_are_posted_a_few_at_a_time_and_past_a_backlog_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciler, "EVENT_POSTS_AT_ONCE", 2)
    monkeypatch.setattr(reconciler, "EVENT_BACKLOG", 3)
    gate = asyncio.Event()
    posting = 0
    most_at_once = 0
    posted: list[str] = []

    class SlowEvents(RecordingKube):
        async def post_event(self, regarding: Manifest, type_: str, reason: str, message: str, action: str) -> None:
            nonlocal posting, most_at_once
            posting += 1
            most_at_once = max(most_at_once, posting)
            await gate.wait()
            posting -= 1
            posted.append(regarding["name"])

    kube = SlowEvents()
    rec = make(kube)
    dropped = REGISTRY.get_sample_value("kubeswarm_operator_events_dropped_total") or 0.0
    for name in ("a", "b", "c", "d", "e"):
        body = agent_body()
        await rec.reconcile(Agent.model_validate({**body, "metadata": {**body["metadata"], "name": name, "uid": name}}))
    assert REGISTRY.get_sample_value("kubeswarm_operator_events_dropped_total") == dropped + 2
    gate.set()
    await rec.flush_events()
    assert most_at_once == 2
    assert sorted(posted) == ["a", "b", "c"]


async def test_a_new_agents_first_status_waits_for_its_deployments_first_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciler, "FIRST_STATUS_WAIT_SECONDS", 3600.0)
    kube = RecordingKube()
    rec = make(kube)
    await rec.reconcile(Agent.model_validate(agent_body()))
    await rec.flush_events()
    assert kube.status is None, "the Deployment created in this run has reported nothing yet"
    assert any(w[0] == "event" and w[1] == "Created" for w in kube.writes), "what was done is told at once"
    assert ("lab", "scout") in rec.queue._queued, "a run at the deadline writes the status whatever the Deployment says"
    # Its watch shows it before the controller reports on it: still nothing to write.
    reported = world_from(kube)
    deployment = reported.children[kinds.DEPLOYMENT][("lab", "scout")]
    unreported = {key: value for key, value in deployment.items() if key != "status"}
    rec.world = World(agents={}, swarms={}, children={**reported.children, kinds.DEPLOYMENT: {("lab", "scout"): unreported}}, scaled={})
    await rec.reconcile(Agent.model_validate(agent_body()))
    assert kube.status is None
    # Its first report (pods ready at once, as on a fake node): one status, straight to Running, one Event for it all.
    rec.world = world_from(kube)
    await rec.reconcile(Agent.model_validate(agent_body()))
    await rec.flush_events()
    assert kube.status is not None and kube.status["phase"] == "Running"
    assert [w[0] for w in kube.writes].count("status") == 1
    assert [w[1] for w in kube.writes if w[0] == "event"] == ["Created"]
    await rec.close()


async def test_a_new_agents_first_status_is_written_at_the_deadline_whatever_the_deployment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconciler, "FIRST_STATUS_WAIT_SECONDS", 0.05)
    kube = RecordingKube()
    rec = make(kube)
    rec.world = World(agents={("lab", "scout"): [agent_body()]}, swarms={}, children={k: {} for k in CHILD_KINDS}, scaled={})
    await rec.reconcile(Agent.model_validate(agent_body()))
    assert kube.status is None
    await rec.queue._queued["lab", "scout"]  # the deadline's run (the Deployment never reported)
    assert kube.status is not None and kube.status["phase"] == "Pending"
    await rec.close()


@pytest.mark.parametrize(
    ("generation", "status", "settling"),
    [
        (1, {}, False),  # new: not reported on yet
        (2, {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 1}, False),  # a spec change not observed yet
        (1, {"observedGeneration": 1, "readyReplicas": 0, "updatedReplicas": 2}, True),  # pods coming up
        (1, {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 2}, True),
        (1, {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 2}, False),  # the last step
    ],
)
def test_a_deployment_is_settling_while_its_observed_pods_come_up(generation: int, status: Manifest, settling: bool) -> None:
    deployment = {"metadata": {"generation": generation}, "spec": {"replicas": 2}, "status": status}
    assert deployment_settling(deployment) is settling
