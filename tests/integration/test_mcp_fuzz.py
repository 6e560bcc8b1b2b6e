"""Malformed bodies, fuzzed, against a runtime process: no 5xx, no crash, never a stack trace in an answer."""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.runtime_helpers import agent_config, config_env, unique_prefix
from tests.testbed.nats import NatsServer
from tests.testbed.procs import ManagedProcess

pytestmark = pytest.mark.integration

MODERN = "2026-07-28"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# Read-only or harmless methods only: fuzzing must not start work that waits (a query to nobody would).
methods = st.sampled_from(
    [
        "tools/list",
        "tools/call",
        "list_tools",
        "call_tool",
        "initialize",
        "server/discover",
        "ping",
        "get_task",
        "list_agents",
        "share_discovery",
        "get_agent_info",
    ]
) | st.text(max_size=12)
messages = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "method": methods},
    optional={"id": json_values, "params": json_values},
)
bodies = (
    st.binary(max_size=256)
    | json_values.map(lambda v: json.dumps(v).encode())
    | messages.map(lambda m: json.dumps(m).encode())
    | st.lists(messages, max_size=3).map(lambda m: json.dumps(m).encode())
)
endpoints = st.sampled_from(["/rpc", "/mcp", "/messages?session_id=0123"])
headers = st.fixed_dictionaries(
    {},
    optional={
        "MCP-Protocol-Version": st.sampled_from([MODERN, "2025-11-25", "bogus"]),
        "Mcp-Method": st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12),
        "Mcp-Session-Id": st.sampled_from(["0" * 32, "x"]),
        "Mcp-Name": st.sampled_from(["=?base64?!!?=", "list_agents"]),
    },
)


@pytest.fixture(scope="module")
def agent_port(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    config = agent_config(nats_server.url, unique_prefix(), "fuzz", ["echo"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESWARM_")} | config_env(config)
    env["KUBESWARM_MCP__RATE_LIMIT_PER_SECOND"] = "0"
    process = ManagedProcess("fuzz", [sys.executable, "-m", "kubeswarm_runtime"], tmp_path_factory.mktemp("fuzz") / "agent.log", env=env)
    process.start()
    port = int(env["KUBESWARM_MCP__PORT"])
    process.wait_until(lambda: _status(port, "GET", "/readyz", b"", {})[0] == 200, 60, "ready")
    yield port
    assert process.running(), "the agent died during the fuzz run"
    process.stop()


def _status(port: int, method: str, path: str, body: bytes, extra: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **extra})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@settings(max_examples=300, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=endpoints, body=bodies, extra=headers)
def test_fuzzed_bodies_get_answers_not_crashes(agent_port: int, path: str, body: bytes, extra: dict[str, Any]) -> None:
    status, answer = _status(agent_port, "POST", path, body, extra)
    assert status < 500, (status, answer)
    assert b"Traceback" not in answer and b'File "' not in answer
    if status == 200 and answer:
        reply = json.loads(answer)
        for one in reply if isinstance(reply, list) else [reply]:
            assert one["jsonrpc"] == "2.0" and ("result" in one) != ("error" in one)


def test_agent_still_healthy_after_fuzzing(agent_port: int) -> None:
    assert _status(agent_port, "GET", "/healthz", b"", {})[0] == 200
