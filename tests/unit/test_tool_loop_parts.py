"""The tool loop's pure parts: idempotency keys, tool names, allow/deny, and how spec.tools reaches a pod."""

from __future__ import annotations

import json

import pytest
from kubeswarm_operator.agent.children import build_deployment
from kubeswarm_runtime.agentloop.loop import idempotency_key
from kubeswarm_runtime.agentloop.toolbox import MODEL_TOOL_NAME, allowed, model_tool_name
from kubeswarm_runtime.local import local_secrets
from kubeswarm_runtime.providers.base import ToolCall
from kubeswarm_runtime.providers.openai import tool_call_of
from kubeswarm_runtime.render import MCP_JWT_KEY_ENV, MODEL_API_KEY_ENV, render_runtime_env
from kubeswarm_runtime.resources import Agent, ToolsSpec
from pydantic import ValidationError

pytestmark = pytest.mark.unit


def test_idempotency_keys_are_stable_and_fit_a_task_id() -> None:
    assert idempotency_key("0f3a", 2, 1) == "0f3a-t2c1"
    assert idempotency_key("0f3a", 2, 1) != idempotency_key("0f3a", 2, 0) != idempotency_key("0f3a", 1, 1)
    # A capability request's context id is a NATS inbox: hashed into a subject token.
    inbox = "_INBOX.abc.def"
    assert idempotency_key(inbox, 1, 0) == idempotency_key(inbox, 1, 0)
    assert len(idempotency_key(inbox, 1, 0)) == 40 and "." not in idempotency_key(inbox, 1, 0)
    assert len(idempotency_key("x" * 128, 1, 0)) == 40


def test_openai_arguments_that_are_not_a_json_object_become_the_calls_error() -> None:
    assert tool_call_of({"id": "c1", "function": {"name": "add", "arguments": '{"a": 1}'}}) == ToolCall("c1", "add", {"a": 1})
    assert "not valid JSON" in (tool_call_of({"id": "c1", "function": {"name": "add", "arguments": "{bad"}}).invalid or "")
    assert tool_call_of({"id": "c1", "function": {"name": "add", "arguments": "[1]"}}).invalid == "arguments must be a JSON object"


def test_tool_names_fit_what_model_apis_accept() -> None:
    assert model_tool_name("search", "web.query/v2") == "search__web_query_v2"
    long = model_tool_name("s", "t" * 100)
    assert len(long) == 64 and MODEL_TOOL_NAME.match(long)


@pytest.mark.parametrize(
    ("name", "allow", "deny", "expected"),
    [
        ("broadcast", [], [], True),
        ("broadcast", [], ["broadcast"], False),
        ("search__web", ["search__*"], [], True),
        ("get_task", ["search__*"], [], False),
        ("search__web", ["search__*"], ["search__web"], False),
    ],
)
def test_allow_and_deny(name: str, allow: list[str], deny: list[str], expected: bool) -> None:
    assert allowed(name, allow, deny) is expected


def test_an_agent_without_tools_renders_as_before() -> None:
    env = render_runtime_env(Agent.model_validate({"metadata": {"name": "a"}}), None, namespace="d", nats_url="nats://n:4222")
    assert not [key for key in env if key.startswith("KUBESWARM_TOOLS")]


@pytest.mark.parametrize(
    ("field", "url", "env_var", "rendered"),
    [
        ("mcpServers", "http://search:8000/mcp", "KUBESWARM_TOOL_HEADER_0_0", "KUBESWARM_TOOLS__MCP_SERVERS"),
        ("a2a", "https://search.example/", "KUBESWARM_A2A_HEADER_0_0", "KUBESWARM_TOOLS__A2A"),
    ],
)
def test_header_secrets_reach_the_pod_by_name_never_by_value(
    monkeypatch: pytest.MonkeyPatch, field: str, url: str, env_var: str, rendered: str
) -> None:
    header = {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "search-token", "key": "bearer"}}}
    agent = Agent.model_validate(
        {"metadata": {"name": "a"}, "spec": {"tools": {field: [{"name": "search", "url": url, "headers": [header]}]}}}
    )
    env = render_runtime_env(agent, None, namespace="d", nats_url="nats://n:4222")
    (server,) = json.loads(env[rendered])
    assert (server["url"], server["headers"], server["header_env"]) == (url, {}, {"Authorization": env_var})
    deployment = build_deployment(agent, image="runtime:1", config_hash="h", api_key_env=MODEL_API_KEY_ENV, jwt_key_env=MCP_JWT_KEY_ENV)
    container_env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": env_var, "valueFrom": {"secretKeyRef": {"name": "search-token", "key": "bearer"}}} in container_env
    monkeypatch.setenv("SEARCH_TOKEN_BEARER", "Bearer s3cret")
    assert local_secrets(agent) == {env_var: "Bearer s3cret"}


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ({"mcpServers": [{"name": "s", "url": "http://a"}, {"name": "s", "url": "http://b"}]}, "mcpServers name 's' appears twice"),
        ({"agents": [{"name": "w"}, {"name": "w"}]}, "agents name 'w' appears twice"),
        (
            {"mcpServers": [{"name": "s", "url": "http://a", "headers": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}]},
            "twice",
        ),
        ({"allow": ["x"], "deny": ["x"]}, "both allowed and denied"),
    ],
)
def test_local_mode_refuses_what_the_api_server_refuses(tools: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ToolsSpec.model_validate(tools)
