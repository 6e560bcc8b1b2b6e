"""Runtime configuration, the render contract, manifests, and the small state machines."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubeswarm_runtime.capabilities import CircuitBreaker
from kubeswarm_runtime.config import ConfigError, RuntimeConfig, load_config
from kubeswarm_runtime.manifests import ManifestError, load_manifests
from kubeswarm_runtime.names import PRIORITIES, SwarmNames
from kubeswarm_runtime.processes import config_line
from kubeswarm_runtime.providers.retry import retry_after
from kubeswarm_runtime.render import MCP_JWT_KEY_ENV, MODEL_API_KEY_ENV, SECRET_ENV_NAMES, render_runtime_env
from kubeswarm_runtime.resources import Agent, Swarm

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[2] / "examples" / "swarm.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("KUBESWARM_"):
            monkeypatch.delenv(key)


def test_env_with_nested_fields_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBESWARM_AGENT", "scout")
    monkeypatch.setenv("KUBESWARM_SWARM", "research")
    monkeypatch.setenv("KUBESWARM_CAPABILITIES", "search, summarize")
    monkeypatch.setenv("KUBESWARM_MODEL__PROVIDER", "anthropic")
    monkeypatch.setenv(MODEL_API_KEY_ENV, "sk-secret")
    monkeypatch.setenv("KUBESWARM_REPLICA_ID", "scout-abc.cluster.local")
    config = load_config()
    assert config.subject_prefix == "ks.default.research"
    assert config.capabilities == ["search", "summarize"]
    assert config.model.api_key is not None
    assert "sk-secret" not in repr(config)
    assert config.replica_id == "scout-abc-cluster-local"
    assert (config.mcp.port, config.metrics_port, config.heartbeat_seconds) == (8080, 9090, 10)


def test_config_file_below_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = tmp_path / "runtime.yaml"
    file.write_text("agent: from-file\nconcurrency: 7\nmodel:\n  provider: echo\n")
    monkeypatch.setenv("KUBESWARM_CONFIG_FILE", str(file))
    monkeypatch.setenv("KUBESWARM_CONCURRENCY", "3")
    config = load_config()
    assert (config.agent, config.concurrency) == ("from-file", 3)


def test_invalid_config_names_the_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBESWARM_AGENT", "a")
    monkeypatch.setenv("KUBESWARM_MODEL__PROVIDER", "gpt")
    monkeypatch.setenv("KUBESWARM_CONCURRENCY", "0")
    with pytest.raises(ConfigError) as err:
        load_config()
    assert "KUBESWARM_MODEL__PROVIDER (model.provider)" in str(err.value)
    assert "KUBESWARM_CONCURRENCY (concurrency)" in str(err.value)


def test_admission_bytes_must_hold_one_largest_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBESWARM_AGENT", "a")
    monkeypatch.setenv("KUBESWARM_MCP__MAX_REQUEST_BYTES", str(2 << 20))
    monkeypatch.setenv("KUBESWARM_MCP__MAX_IN_FLIGHT_BYTES", str(1 << 20))
    with pytest.raises(ConfigError, match=r"max_in_flight_bytes must be at least mcp\.max_request_bytes"):
        load_config()


def test_entrypoint_exits_with_message_not_traceback() -> None:
    env = {"PATH": "/usr/bin:/bin", "KUBESWARM_MODEL__PROVIDER": "gpt"}
    proc = subprocess.run([sys.executable, "-m", "kubeswarm_runtime"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "KUBESWARM_AGENT (agent): Field required" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_render_is_read_back_by_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    swarm = Swarm.model_validate(
        {
            "apiVersion": "kubeswarm.io/v1alpha1",
            "kind": "Swarm",
            "metadata": {"name": "research", "namespace": "team"},
            "spec": {"subjectPrefix": "acme.research", "streams": {"replicas": 3, "maxDeliver": 7}},
        }
    )
    agent = Agent.model_validate(
        {
            "apiVersion": "kubeswarm.io/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "writer", "namespace": "team"},
            "spec": {
                "swarm": "research",
                "role": "writer",
                "capabilities": ["write", "edit"],
                "concurrency": 3,
                "model": {"provider": "anthropic", "name": "claude-x", "apiKeySecretRef": {"name": "k", "key": "v"}},
                "mcp": {"auth": {"mode": "jwt"}},
            },
        }
    )
    env = render_runtime_env(agent, swarm, namespace="team", nats_url="nats://nats.kubeswarm:4222")
    assert not set(env) & set(SECRET_ENV_NAMES)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(MCP_JWT_KEY_ENV, "k" * 32)
    config = load_config()
    assert (config.agent, config.namespace, config.swarm, config.subject_prefix) == ("writer", "team", "research", "acme.research")
    assert (config.capabilities, config.concurrency, config.role) == (["write", "edit"], 3, "writer")
    assert (config.model.provider, config.model.name, config.mcp.auth) == ("anthropic", "claude-x", "jwt")
    assert (config.streams.replicas, config.streams.max_deliver) == (3, 7)
    assert config.nats.servers == ["nats://nats.kubeswarm:4222"]


def test_render_without_swarm_uses_default_prefix() -> None:
    agent = Agent.model_validate({"kind": "Agent", "metadata": {"name": "solo"}, "spec": {"swarm": "lab"}})
    env = render_runtime_env(agent, None, namespace="ns1", nats_url="nats://n:4222")
    assert env["KUBESWARM_SUBJECT_PREFIX"] == "ks.ns1.lab"
    assert env["KUBESWARM_MODEL__PROVIDER"] == "echo"
    assert "KUBESWARM_STREAMS__REPLICAS" not in env


def test_example_manifests_load() -> None:
    manifests = load_manifests([EXAMPLE])
    assert [a.metadata.name for a in manifests.agents] == ["scout", "critic"]
    assert {a.spec.swarm for a in manifests.agents} == {"research"}
    assert manifests.agents[0].spec.replicas == 2


def test_bad_manifest_names_file_object_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: kubeswarm.io/v1alpha1\nkind: Agent\nmetadata: {name: broken}\nspec:\n  concurrency: many\n")
    with pytest.raises(ManifestError, match=r"bad\.yaml: Agent/broken: spec\.concurrency: should be a valid integer"):
        load_manifests([bad])
    member = tmp_path / "member.yaml"
    member.write_text("kind: Swarm\nmetadata: {name: s}\nspec:\n  agents:\n    - name: m\n      template: {model: {provider: http}}\n")
    with pytest.raises(ManifestError, match=r"member\.yaml: Swarm/s: .*needs endpoint"):
        load_manifests([member])


def test_priority_subjects_never_overlap() -> None:
    names = SwarmNames("ks.a.b")
    subjects = {names.task("cap", p) for p in PRIORITIES}
    assert subjects == {"ks.a.b.tasks.cap", "ks.a.b.tasks.cap.high", "ks.a.b.tasks.cap.low"}
    assert len({names.task_consumer("cap", p) for p in PRIORITIES}) == 3


def test_circuit_breaker_opens_and_half_opens() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=0.05)
    breaker.failed()
    assert breaker.allow()
    breaker.failed()
    assert breaker.state == "open"
    assert not breaker.allow()
    deadline = time.monotonic() + 2
    while breaker.state != "half-open" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert breaker.allow()  # the one trial
    assert not breaker.allow()
    breaker.failed()  # trial failed: open again
    assert breaker.state == "open"
    breaker.succeeded()
    assert breaker.state == "closed"


def test_retry_after_forms() -> None:
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after({"retry-after": "100000"}) == 60.0
    assert retry_after({}) is None


def test_mcp_processes_rendered_only_past_one_and_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def env(processes: int) -> dict[str, str]:
        spec = {"swarm": "lab", "mcp": {"processes": processes}}
        return render_runtime_env(
            Agent.model_validate({"kind": "Agent", "metadata": {"name": "a"}, "spec": spec}), None, namespace="n", nats_url="nats://n:4222"
        )

    assert "KUBESWARM_MCP__PROCESSES" not in env(1)  # the runtime's default: the pods of existing Agents stay as they are
    rendered = env(3)
    assert rendered["KUBESWARM_MCP__PROCESSES"] == "3"
    for name, value in rendered.items():
        monkeypatch.setenv(name, value)
    assert load_config().mcp.processes == 3
    with pytest.raises(ValueError, match="processes"):
        Agent.model_validate({"kind": "Agent", "metadata": {"name": "a"}, "spec": {"mcp": {"processes": 0}}})


def test_a_serving_process_reads_back_the_whole_config_secrets_included() -> None:
    config = load_config(agent="a", mcp={"jwt_key": "k" * 32, "processes": 2}, nats={"creds_file": "/creds/user.creds", "password": "pw"})
    again = RuntimeConfig.model_validate(json.loads(config_line(config)))
    assert again == config and again.mcp.jwt_key is not None and again.mcp.jwt_key.get_secret_value() == "k" * 32
