"""spec.triggers: what is refused, what a pod gets (the webhook keys by Secret reference only), and the schedule's ticks."""

from __future__ import annotations

import json
import zoneinfo
from datetime import datetime
from typing import Any

import pytest
from kubeswarm_operator.agent.children import build_deployment, referenced_objects
from kubeswarm_runtime.config import CronTriggerConfig, RuntimeConfig
from kubeswarm_runtime.local import local_secrets
from kubeswarm_runtime.render import MCP_JWT_KEY_ENV, MODEL_API_KEY_ENV, render_runtime_env
from kubeswarm_runtime.resources import Agent
from kubeswarm_runtime.triggers import last_tick, next_tick, tick_task_id
from pydantic import ValidationError

pytestmark = pytest.mark.unit

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def agent(triggers: dict[str, Any]) -> Agent:
    return Agent.model_validate({"metadata": {"name": "ops", "namespace": "d"}, "spec": {"capabilities": ["report"], "triggers": triggers}})


TRIGGERS = {
    "cron": [{"name": "nightly", "schedule": "30 2 * * *", "timeZone": "Europe/Paris", "capability": "report", "input": {"scope": "all"}}],
    "webhooks": [{"name": "deploys", "capability": "report", "secretKeyRef": {"name": "hooks", "key": "deploys"}}],
}


def test_triggers_reach_the_pod_and_the_key_only_by_secret_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    ops = agent(TRIGGERS)
    env = render_runtime_env(ops, None, namespace="d", nats_url="nats://n:4222")
    with monkeypatch.context() as pod:  # the runtime reads the rendered environment as a pod would
        for name, value in env.items():
            pod.setenv(name, value)
        config = RuntimeConfig()
    assert config.triggers.cron[0].time_zone == "Europe/Paris" and config.triggers.cron[0].input == {"scope": "all"}
    assert config.triggers.webhooks[0].key_env == "KUBESWARM_WEBHOOK_KEY_0"
    assert "deploys" not in json.dumps({k: v for k, v in env.items() if "KEY" in k})  # no key value anywhere in the ConfigMap
    deployment = build_deployment(ops, image="runtime:1", config_hash="h", api_key_env=MODEL_API_KEY_ENV, jwt_key_env=MCP_JWT_KEY_ENV)
    container_env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KUBESWARM_WEBHOOK_KEY_0", "valueFrom": {"secretKeyRef": {"name": "hooks", "key": "deploys"}}} in container_env
    assert ("Secret", "hooks") in referenced_objects(ops)  # a new key rolls the pods
    monkeypatch.setenv("HOOKS_DEPLOYS", "k3y")
    assert local_secrets(ops) == {"KUBESWARM_WEBHOOK_KEY_0": "k3y"}
    assert "KUBESWARM_TRIGGERS__CRON" not in render_runtime_env(agent({}), None, namespace="d", nats_url="nats://n:4222")


@pytest.mark.parametrize(
    ("triggers", "message"),
    [
        ({"cron": [{"name": "n", "schedule": "61 * * * *", "capability": "c"}]}, "is not a cron schedule"),
        ({"cron": [{"name": "n", "schedule": "0 * * * *", "timeZone": "Mars/Olympus", "capability": "c"}]}, "not an IANA time zone"),
        ({"cron": [{"name": "n", "schedule": "0 * * *", "capability": "c"}]}, "schedule"),
        (
            {
                "cron": [
                    {"name": "n", "schedule": "0 * * * *", "capability": "c"},
                    {"name": "n", "schedule": "1 * * * *", "capability": "c"},
                ]
            },
            "cron trigger name 'n' appears twice",
        ),
        (
            {
                "cron": [{"name": "n", "schedule": "0 * * * *", "capability": "c"}],
                "webhooks": [{"name": "n", "capability": "c", "secretKeyRef": {"name": "s", "key": "k"}}],
            },
            "cannot share a name",
        ),
    ],
)
def test_local_mode_refuses_bad_triggers(triggers: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        agent(triggers)


def test_ticks_follow_the_time_zone_across_daylight_saving() -> None:
    nightly = CronTriggerConfig(name="nightly", schedule="30 2 * * *", time_zone="Europe/Paris", capability="report")
    # 2:30 does not exist in Paris on 2026-03-29 (clocks jump 2:00 -> 3:00): that night's tick is at 3:00 local.
    ticks = [next_tick(nightly, datetime(2026, 3, 28, 12, 0, tzinfo=PARIS))]
    ticks.append(next_tick(nightly, ticks[0]))
    assert [t.astimezone(PARIS).strftime("%m-%d %H:%M") for t in ticks] == ["03-29 03:00", "03-30 02:30"]
    assert last_tick(nightly, ticks[1]) == ticks[1]  # at the tick itself: that tick
    assert last_tick(nightly, datetime(2026, 3, 30, 2, 29, tzinfo=PARIS)) == ticks[0]
    # One id per tick, the same on every replica and after a restart.
    assert tick_task_id("ops", "nightly", ticks[0]) == f"cron-ops-nightly-{int(ticks[0].timestamp())}"
