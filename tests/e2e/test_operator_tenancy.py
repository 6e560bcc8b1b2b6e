"""Tenancy against a real API server: an Agent never takes over an object it does not own; a Swarm never
claims another namespace's subjects and streams."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_mcp_support import modern_call
from tests.testbed.nats import NatsServer
from tests.testbed.procs import ManagedProcess, free_port, port_accepts, wheel_binary

from .conftest import Namespace, Operator, until
from .test_operator_agent import agent, condition
from .test_operator_swarm import condition as swarm_condition
from .test_operator_swarm import stream_config

pytestmark = pytest.mark.e2e

SETTLE = 60


def conflict(ns: Namespace, name: str) -> dict[str, Any] | None:
    ready = condition(ns, name, "Ready")
    return ready if ready.get("reason") == "NameConflict" else None


def test_an_agent_named_like_an_existing_service_leaves_it_alone(operator: Operator, namespace: Namespace) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "billing", "labels": {"team": "payments"}},
        "spec": {"selector": {"app": "billing"}, "ports": [{"name": "http", "port": 80}]},
    }
    namespace.apply(service)
    namespace.apply(agent("billing"))

    ready = until(lambda: conflict(namespace, "billing"), SETTLE, "Ready=False NameConflict")
    assert ready["status"] == "False"
    assert 'Service "billing" exists and is not owned by this Agent' in ready["message"]
    events = namespace.kubectl("get", "events", "--field-selector", "reason=NameConflict", "-o", "jsonpath={.items[*].message}").stdout
    assert 'Service "billing"' in events
    # The rest of the Agent's children exist; the Service is as its owner left it.
    until(lambda: namespace.get("configmap", "billing-runtime"), SETTLE, "the Agent's ConfigMap")
    live = namespace.must("service", "billing")
    assert live["spec"]["selector"] == {"app": "billing"}
    assert not live["metadata"].get("ownerReferences")
    assert "kubeswarm.io/agent" not in live["metadata"].get("labels", {})

    namespace.kubectl("delete", "agent", "billing", "--wait=true")
    until(lambda: namespace.get("configmap", "billing-runtime") is None, SETTLE, "the Agent's own children collected")
    assert namespace.must("service", "billing")["spec"]["selector"] == {"app": "billing"}


def swarm(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubeswarm.io/v1alpha1", "kind": "Swarm", "metadata": {"name": name}, "spec": {"nats": {"url": url}, **spec}}


def test_a_swarm_cannot_claim_another_namespaces_prefix_nor_delete_its_streams(
    operator: Operator, namespace: Namespace, other_namespace: Namespace, nats_server: NatsServer
) -> None:
    victim_prefix = f"ks.{namespace.name}.team"
    tasks = f"{victim_prefix.replace('.', '_')}_TASKS"
    namespace.apply(swarm("team", nats_server.url))
    until(lambda: stream_config(nats_server.url, tasks), 60, "the victim's streams")

    other_namespace.apply(swarm("thief", nats_server.url, subjectPrefix=victim_prefix))

    def refused() -> dict[str, Any] | None:
        nats_ready = swarm_condition(other_namespace.get("swarm", "thief"), "NatsReady")
        return nats_ready if nats_ready and nats_ready["reason"] == "PrefixNotOwned" else None

    nats_ready = until(refused, 60, "NatsReady=False PrefixNotOwned on the thief")
    assert nats_ready["status"] == "False"
    assert f"ks.{other_namespace.name}" in nats_ready["message"]

    other_namespace.kubectl("delete", "swarm", "thief", "--wait=true", "--timeout=60s")
    assert stream_config(nats_server.url, tasks) is not None

    # Two Swarms of one namespace sharing a prefix: deleting one leaves the streams to the other.
    namespace.apply(swarm("twin", nats_server.url, subjectPrefix=victim_prefix))
    until(lambda: swarm_condition(namespace.get("swarm", "twin"), "NatsReady"), 60, "the twin's NatsReady")
    namespace.kubectl("delete", "swarm", "twin", "--wait=true", "--timeout=60s")
    assert stream_config(nats_server.url, tasks) is not None


def mint(ns: Namespace, agent_name: str, *scopes: str) -> str:
    """`kubeswarm token` as a user runs it: the key read from the cluster with the user's kubectl."""
    argv = [sys.executable, "-m", "kubeswarm_runtime.cli", "token", agent_name, "-n", ns.name, "--kubectl", str(wheel_binary("kubectl"))]
    argv += [arg for scope in scopes for arg in ("--scope", scope)]
    env = {**os.environ, "KUBECONFIG": str(ns.cluster.kubeconfig)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def tools_list(url: str, token: str) -> int:
    body, headers = modern_call("tools/list")
    headers |= {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, json.dumps(body).encode(), headers), timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_jwt_mode_works_with_the_operators_key_and_kubeswarm_token(
    operator: Operator, namespace: Namespace, nats_server: NatsServer, tmp_path: Path
) -> None:
    namespace.apply(agent("guarded", mcp={"auth": {"mode": "jwt", "requiredScopes": ["swarm:use"]}}))
    config = until(lambda: namespace.get("configmap", "guarded-runtime"), SETTLE, "the Agent's ConfigMap")["data"]
    secret = until(lambda: namespace.get("secret", "guarded-credentials"), SETTLE, "the Agent's Secret")
    key = base64.b64decode(secret["data"]["jwt-key"])
    assert b"\0" not in key and key.decode("ascii").isprintable()

    # The pod's environment, as the kubelet would give it: the ConfigMap, and the key from the Secret.
    mcp_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESWARM_")} | config
    env |= {
        "KUBESWARM_MCP__JWT_KEY": key.decode(),
        "KUBESWARM_NATS__URL": nats_server.url,
        "KUBESWARM_MCP__PORT": str(mcp_port),
        "KUBESWARM_METRICS_PORT": str(free_port()),
    }
    runtime = ManagedProcess("guarded", [sys.executable, "-m", "kubeswarm_runtime"], tmp_path / "guarded.log", [mcp_port], env=env)
    runtime.start()
    try:
        runtime.wait_until(lambda: port_accepts(mcp_port), 60, "serving MCP")
        url = f"http://127.0.0.1:{mcp_port}/mcp"
        assert tools_list(url, mint(namespace, "guarded", "swarm:use")) == 200
        assert tools_list(url, mint(namespace, "guarded")) == 403  # requiredScopes reached the runtime
        assert tools_list(url, "not-a-token") == 401
    finally:
        runtime.stop()


def test_a_swarm_never_takes_over_an_agent_it_does_not_own(operator: Operator, namespace: Namespace, nats_server: NatsServer) -> None:
    namespace.apply(agent("alpha", role="mine"))
    until(lambda: namespace.get("configmap", "alpha-runtime"), SETTLE, "the user's Agent reconciled")
    namespace.apply(swarm("team", nats_server.url, agents=[{"name": "alpha", "template": {"role": "theirs"}}]))

    def refused() -> dict[str, Any] | None:
        ready = swarm_condition(namespace.get("swarm", "team"), "Ready")
        return ready if ready and "NameConflict" in ready["message"] else None

    ready = until(refused, SETTLE, "the Swarm's Ready naming the conflict")
    assert ready["status"] == "False" and 'Agent "alpha" exists and is not owned by this Swarm' in ready["message"]
    mine = namespace.must("agent", "alpha")
    assert mine["spec"]["role"] == "mine" and not mine["metadata"].get("ownerReferences")
    namespace.kubectl("delete", "swarm", "team", "--wait=true", "--timeout=60s")
    assert namespace.must("agent", "alpha")["spec"]["role"] == "mine"
