"""A Swarm's members, streams, status and NATS target, without a cluster or NATS."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from kubeswarm_operator.jetstream import provisioning as jetstream
from kubeswarm_operator.jetstream.provisioning import (
    consumer_differs,
    desired_buckets,
    desired_consumers,
    desired_streams,
    kept_replicas,
    stream_differs,
)
from kubeswarm_operator.kube.conditions import condition
from kubeswarm_operator.settings import OperatorSettings
from kubeswarm_operator.swarm.controller import nats_target
from kubeswarm_operator.swarm.members import build_member, build_members, capabilities, joined, replicas_undone, stale_members
from kubeswarm_operator.swarm.status import SwarmObserved, compute_swarm_status
from kubeswarm_runtime.names import SwarmNames
from kubeswarm_runtime.resources import Agent, StreamsSpec, Swarm
from kubeswarm_runtime.stores import cluster_replicas, stream_configs
from nats.js import api

NOW = "2026-01-01T00:00:00Z"


def swarm(**spec: Any) -> Swarm:
    return Swarm.model_validate({"metadata": {"name": "team", "namespace": "ns", "uid": "swarm-uid", "generation": 2}, "spec": spec})


def agent(name: str, swarm_name: str = "team", ready: bool = False, **spec: Any) -> Agent:
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "x"}]}
    return Agent.model_validate({"metadata": {"name": name, "namespace": "ns"}, "spec": {"swarm": swarm_name, **spec}, "status": status})


def test_member_is_defaults_then_template_then_replicas_owned_by_the_swarm() -> None:
    team = swarm(
        defaults={"capabilities": ["research"], "model": {"maxTokens": 500}},
        agents=[{"name": "alpha", "replicas": 3, "template": {"role": "lead", "model": {"provider": "echo"}}}],
    )
    member = build_member(team, team.spec.agents[0])
    assert member["metadata"]["name"] == "alpha"
    assert member["metadata"]["namespace"] == "ns"
    assert member["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "kubeswarm.io/v1alpha1",
        "kind": "Swarm",
        "name": "team",
        "uid": "swarm-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert member["spec"] == {
        "swarm": "team",
        "replicas": 3,
        "role": "lead",
        "capabilities": ["research"],
        "model": {"maxTokens": 500, "provider": "echo"},
    }
    assert build_member(team, team.spec.agents[0]) == member  # same input, same manifest: re-running writes nothing


def test_an_autoscaled_member_leaves_replicas_to_the_autoscaler() -> None:
    team = swarm(agents=[{"name": "alpha", "replicas": 2, "template": {"autoscaling": {"enabled": True}}}])
    assert "replicas" not in build_member(team, team.spec.agents[0])["spec"]


def test_invalid_member_specs_are_reported_not_built() -> None:
    # Each template is a valid Agent spec alone; merged over these defaults, one is not.
    key = {"apiKeySecretRef": {"name": "k", "key": "k"}}
    defaults = {"model": {"provider": "anthropic", "name": "claude"}}
    team = swarm(defaults=defaults, agents=[{"name": "ok", "template": {"model": key}}, {"name": "bad"}])
    members = build_members(team)
    assert list(members.manifests) == ["ok"]
    assert members.invalid["bad"].startswith("spec.defaults.model: ")  # where the Swarm says it, as local mode does
    assert "anthropic" in members.invalid["bad"]


def test_stale_members_are_only_those_the_swarm_controls() -> None:
    team = swarm(agents=[{"name": "alpha"}])
    owned: dict[str, Any] = {"kind": "Swarm", "uid": "swarm-uid", "controller": True}
    bodies: list[dict[str, Any]] = [
        {"metadata": {"name": "alpha", "ownerReferences": [owned]}},
        {"metadata": {"name": "beta", "ownerReferences": [owned]}},
        {"metadata": {"name": "gamma"}},  # joined by spec.swarm, not created by the Swarm
        {"metadata": {"name": "delta", "ownerReferences": [{**owned, "uid": "other"}]}},
    ]
    assert stale_members(team, bodies) == ["beta"]


def test_members_are_the_agents_naming_the_swarm_in_its_namespace() -> None:
    other_ns = Agent.model_validate({"metadata": {"name": "far", "namespace": "elsewhere"}, "spec": {"swarm": "team"}})
    found = joined(swarm(), [agent("b"), agent("a", capabilities=["x", "y"]), agent("c", swarm_name="other"), other_ns])
    assert [a.metadata.name for a in found] == ["a", "b"]
    assert capabilities([*found, agent("d", capabilities=["y", "z"])]) == ["x", "y", "z"]


def test_status_aggregates_members_nats_and_streams() -> None:
    team = swarm()
    nats_ok = condition("NatsReady", True, "StreamsProvisioned", "3 streams")
    members = [agent("a", ready=True), agent("b")]
    status = compute_swarm_status(team, members, SwarmObserved(nats_ok, {"S_TASKS": 4}, {}), NOW)
    assert (status.phase, status.agents, status.ready_agents, status.streams) == ("Degraded", 2, 1, {"S_TASKS": 4})
    assert status.ready == "1/2"
    assert {c.type: c.reason for c in status.conditions} == {"Ready": "AgentsNotReady", "NatsReady": "StreamsProvisioned"}
    assert all(c.observed_generation == 2 and c.last_transition_time == NOW for c in status.conditions)

    all_ready = compute_swarm_status(team, [agent("a", ready=True)], SwarmObserved(nats_ok, {}, {}), NOW)
    assert all_ready.phase == "Running"


def test_status_counts_the_dead_letters_waiting() -> None:
    team = swarm()
    dlq = SwarmNames(team.subject_prefix).dlq_stream
    nats_ok = condition("NatsReady", True, "StreamsProvisioned", "3 streams")
    waiting = compute_swarm_status(team, [], SwarmObserved(nats_ok, {"S_TASKS": 4, dlq: 3}, {}), NOW)
    assert waiting.dead_letters == 3
    assert compute_swarm_status(team, [], SwarmObserved(nats_ok, {}, {}), NOW).dead_letters == 0
    # NATS away: the last count stays, as the stream counts do.
    down = condition("NatsReady", False, "Unreachable", "no NATS server answered")
    kept = compute_swarm_status(team.model_copy(update={"status": waiting}), [], SwarmObserved(down, None, {}), NOW)
    assert kept.dead_letters == 3


def test_nats_outage_keeps_the_last_stream_counts_and_degrades() -> None:
    team = swarm().model_copy(
        update={
            "status": compute_swarm_status(
                swarm(), [agent("a", ready=True)], SwarmObserved(condition("NatsReady", True, "x", ""), {"S_TASKS": 9}, {}), NOW
            )
        }
    )
    down = condition("NatsReady", False, "Unreachable", "no NATS server answered")
    status = compute_swarm_status(team, [agent("a", ready=True)], SwarmObserved(down, None, {}), "2026-01-02T00:00:00Z")
    assert status.streams == {"S_TASKS": 9}
    assert status.phase == "Degraded"
    ready = {c.type: c for c in status.conditions}["Ready"]
    assert (ready.status, ready.reason, ready.last_transition_time) == ("False", "NatsNotReady", "2026-01-02T00:00:00Z")


SINGLE: dict[str, object] = {"server_name": "n0"}
CLUSTER = {"cluster": "c", "connect_urls": ["a:4222", "b:4222", "c:4222"]}


def test_streams_carry_the_swarm_limits_over_the_runtime_names() -> None:
    names = SwarmNames("ks.ns.team")
    spec = StreamsSpec(replicas=3, max_age_seconds=60, max_bytes=1 << 20, discoveries_retention="interest", max_deliver=7)
    streams = {s.name: s for s in desired_streams(names, spec, SINGLE)}
    runtime = {s.name for s in stream_configs(SwarmNames("ks.ns.team"), jetstream.runtime_streams(spec, SINGLE))}
    assert set(streams) == runtime | {names.mcp_events_stream}
    assert streams[names.discoveries_stream].retention == api.RetentionPolicy.INTEREST
    assert streams[names.tasks_stream].retention == api.RetentionPolicy.WORK_QUEUE
    assert all(s.num_replicas == 3 and s.max_bytes == 1 << 20 for s in streams.values())
    # JetStream refuses a dedup window longer than the stream keeps messages.
    assert streams[names.dlq_stream].duplicate_window == 60
    assert streams[names.tasks_stream].duplicate_window == 60
    consumers = desired_consumers(names, ["b", "a", "a"], spec, SINGLE)
    assert [c.durable_name for c in consumers] == ["a-high", "a", "a-low", "b-high", "b", "b-low"]
    assert {c.max_deliver for c in consumers} == {7}


def test_every_stream_and_bucket_is_limited_and_replicated_as_the_cluster_by_default() -> None:
    names = SwarmNames("p")
    streams = {s.name: s for s in desired_streams(names, StreamsSpec(), CLUSTER)}
    buckets = {b.bucket: b for b in desired_buckets(names, StreamsSpec(), CLUSTER)}
    assert {s.num_replicas for s in streams.values()} == {3} == {b.replicas for b in buckets.values()}
    assert {s.num_replicas for s in desired_streams(names, StreamsSpec(), SINGLE)} == {1}
    assert {s.num_replicas for s in desired_streams(names, StreamsSpec(replicas=1), CLUSTER)} == {1}
    tasks = streams[names.tasks_stream]
    assert tasks.max_age and tasks.max_msgs and tasks.discard == api.DiscardPolicy.NEW
    assert streams[names.discoveries_stream].max_bytes == 64 << 20
    assert streams[names.mcp_events_stream].max_bytes == 32 << 20
    assert buckets[names.mcp_sessions_bucket].max_bytes == 8 << 20
    assert buckets[names.tasks_bucket].ttl and buckets[names.tasks_bucket].history == 1
    unbounded = {s.name: s.max_bytes for s in desired_streams(names, StreamsSpec(max_bytes=-1), CLUSTER)}
    assert set(unbounded.values()) == {None}


@pytest.mark.parametrize(
    ("info", "replicas"),
    [
        ({"server_name": "n0"}, 1),  # no cluster
        ({"cluster": "c", "connect_urls": ["a:4222", "b:4222", "c:4222", "d:4222"]}, 3),
        ({"cluster": "c", "connect_urls": ["a:4222", "b:4222"]}, 1),  # too few servers for three replicas
        ({"cluster": "c"}, 3),  # no_advertise (the chart's NATS): a named cluster counts as three
    ],
)
def test_default_replicas_follow_the_cluster_size(info: dict[str, Any], replicas: int) -> None:
    assert cluster_replicas(info) == replicas


TWO_OF_THREE = {"cluster": "c", "connect_urls": ["a:4222", "b:4222"]}  # a connection made while one node restarts


@pytest.mark.parametrize(
    ("spec", "live", "info", "kept"),
    [
        (StreamsSpec(), 3, TWO_OF_THREE, 3),  # auto: never lowered
        (StreamsSpec(), 1, CLUSTER, 3),  # auto: raised once the connection is told of three servers
        (StreamsSpec(), 1, TWO_OF_THREE, 1),
        (StreamsSpec(), 0, CLUSTER, 3),  # a consumer inheriting the stream's replicas
        (StreamsSpec(replicas=1), 3, CLUSTER, 1),  # the Swarm's own replicas win both ways
        (StreamsSpec(replicas=3), 1, TWO_OF_THREE, 3),
    ],
)
def test_auto_replicas_only_rise(spec: StreamsSpec, live: int, info: dict[str, Any], kept: int) -> None:
    wanted = desired_streams(SwarmNames("p"), spec, info)[0].num_replicas
    assert wanted is not None and kept_replicas(spec, live, wanted) == kept


def test_only_what_the_swarm_controls_makes_an_update() -> None:
    want = desired_streams(SwarmNames("p"), StreamsSpec(), SINGLE)[0]
    assert not stream_differs(want, want)
    assert stream_differs(want, desired_streams(SwarmNames("p"), StreamsSpec(replicas=3), SINGLE)[0])
    assert stream_differs(dataclasses.replace(want, max_msgs=-1, max_age=None), want)
    consumer = desired_consumers(SwarmNames("p"), ["a"], StreamsSpec(), SINGLE)[0]
    assert not consumer_differs(consumer, consumer)
    assert consumer_differs(consumer, desired_consumers(SwarmNames("p"), ["a"], StreamsSpec(max_deliver=9), SINGLE)[0])


def test_nats_target_prefers_the_swarm_credentials_and_keeps_secrets_out_of_repr() -> None:
    settings = OperatorSettings(nats_url="nats://default:4222", nats_user="op", nats_password="op-pass", nats_creds_file="/op.creds")
    own = nats_target(None, settings, None)
    assert (own.url, own.user, own.password, str(own.creds_file)) == ("nats://default:4222", "op", "op-pass", "/op.creds")
    assert nats_target(swarm(nats={"url": "nats://default:4222"}), settings, None) == own
    creds = nats_target(swarm(nats={"clusterRef": {"name": "nats", "namespace": "infra"}}), settings, "CREDS-TEXT")
    assert (creds.url, creds.creds, creds.user, creds.password) == ("nats://nats.infra.svc:4222", "CREDS-TEXT", None, None)
    assert "CREDS-TEXT" not in repr(creds) and "op-pass" not in repr(own)


@pytest.mark.parametrize(
    "nats", [{"url": "nats://attacker.example:4222"}, {"clusterRef": {"name": "nats", "namespace": "kubeswarm-system", "port": 4223}}]
)
def test_the_operators_own_identity_never_goes_to_a_url_a_swarm_names(nats: dict[str, Any]) -> None:
    settings = OperatorSettings(nats_url="nats://default:4222", nats_user="op", nats_password="op-pass", nats_creds_file="/op.creds")
    target = nats_target(swarm(nats=nats), settings, None)
    assert target.url != settings.nats_url
    assert (target.creds, target.creds_file, target.user, target.password) == (None, None, None, None)


def test_a_scaled_member_is_explained_only_when_the_swarm_sets_its_replicas() -> None:
    team = swarm(agents=[{"name": "fixed", "replicas": 2}, {"name": "free"}])
    fixed, free = (build_member(team, member) for member in team.spec.agents)
    scaled = {"spec": {"replicas": 5}}
    message = replicas_undone(team, scaled, fixed)
    assert message is not None and "replicas 5 put back to 2" in message and "spec.agents[name=fixed].replicas" in message
    assert replicas_undone(team, {"spec": {"replicas": 2}}, fixed) is None
    assert replicas_undone(team, scaled, free) is None  # the Swarm sets no replicas: the scale stays
