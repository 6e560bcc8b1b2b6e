"""Traces on a real nats-server, read with the OpenTelemetry SDK's in-memory exporter: a caller's W3C trace context
goes through MCP and A2A requests, the task's NATS headers, its run, its model calls and tool calls, into the tasks
it delegates; with tracing off nothing is added, not even the SDK's import."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from kubeswarm_runtime import tracing
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.tasks import TaskState
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from examples.tools.scripted_model import Script
from tests.integration.runtime_helpers import agent_config, running, swarm_client, unique_prefix, wait_for
from tests.integration.test_mcp_support import mcp_agent, modern_call
from tests.integration.tool_helpers import model_config, scripted_model
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.integration

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    try:
        yield exporter
    finally:
        tracing.configure(None)
        provider.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    """The first finished span of each name (a model called twice: its first call)."""
    found: dict[str, ReadableSpan] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, span)
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return int(span.parent.span_id) if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_of(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


async def test_an_mcp_and_an_a2a_request_trace_into_the_task(nats_server: NatsServer, spans: InMemorySpanExporter) -> None:
    async with mcp_agent(nats_server.url) as agent, aiohttp.ClientSession() as http:
        body, headers = modern_call(
            "tools/call", {"name": "create_task", "arguments": {"capability": "echo", "input": "hi", "wait_seconds": 20}}
        )
        async with http.post(agent.mcp, json=body, headers={**headers, "traceparent": TRACEPARENT}) as response:
            assert response.status == 200
            await response.read()

        async def both_spans() -> bool:
            return {"POST /mcp", "process echo"} <= set(by_name(spans))

        await wait_for(both_spans, what="the spans of the MCP request and of the task's run")
        found = by_name(spans)
        server, run = found["POST /mcp"], found["process echo"]
        assert {trace_of(s) for s in (server, run)} == {CALLER_TRACE}
        assert parent_of(server) == int(CALLER_SPAN, 16) and server.kind is SpanKind.SERVER
        assert parent_of(run) == span_id(server) and run.kind is SpanKind.CONSUMER
        assert run.attributes is not None
        assert run.attributes["messaging.system"] == "nats" and run.attributes["kubeswarm.task.outcome"] == "succeeded"
        assert run.attributes["gen_ai.agent.name"] == "agent" and server.attributes == {
            "http.request.method": "POST",
            "url.path": "/mcp",
            "http.response.status_code": 200,
        }

        spans.clear()
        a2a_trace = uuid.uuid4().hex
        message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": "over A2A"}]}
        request = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
        a2a_headers = {"A2A-Version": "1.0", "traceparent": f"00-{a2a_trace}-{CALLER_SPAN}-01"}
        async with http.post(agent.url + "/a2a", json=request, headers=a2a_headers) as response:
            assert (await response.json())["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"

        async def a2a_spans() -> bool:
            return {"POST /a2a", "process echo"} <= set(by_name(spans))

        await wait_for(a2a_spans, what="the spans of the A2A request")
        assert {trace_of(s) for s in by_name(spans).values()} == {a2a_trace}


DELEGATION: Script = {
    "lead": [
        {"tool_calls": [{"name": "create_task", "arguments": {"capability": "write", "input": "an article", "wait_seconds": 30}}]},
        {"text": "done: {{results}}"},
    ],
    "writer": [{"text": "the article"}],
}


@asynccontextmanager
async def lead_and_writer(nats_server: NatsServer, script: Script, lead_tools: dict[str, Any] | None = None) -> AsyncIterator[SwarmClient]:
    """Two agents with chat models (the scripted stand-in): lead (capability lead) and writer (capability write)."""
    prefix = unique_prefix()
    async with scripted_model(script) as (url, _requests):
        lead = agent_config(nats_server.url, prefix, "lead", ["lead"], model=model_config("anthropic", url, "lead"), tools=lead_tools or {})
        writer = agent_config(nats_server.url, prefix, "writer", ["write"], model=model_config("anthropic", url, "writer"))
        async with running(lead), running(writer), swarm_client(nats_server.url, prefix) as client:
            yield client


async def test_model_and_tool_calls_and_the_delegated_task_are_spans_of_the_task(
    nats_server: NatsServer, spans: InMemorySpanExporter
) -> None:
    async with lead_and_writer(nats_server, DELEGATION) as client:
        provider_tracer = tracing._tracer
        assert provider_tracer is not None
        with provider_tracer.start_as_current_span("caller") as caller:
            record = await client.tasks.create("lead", "write something")
        done = await client.tasks.wait(record.id, 60)
        assert done.state is TaskState.SUCCEEDED, done.error

        async def all_spans() -> bool:
            return {"process lead", "chat lead", "execute_tool create_task", "process write", "chat writer"} <= set(by_name(spans))

        await wait_for(all_spans, what="the spans of both tasks")
    found = by_name(spans)
    caller_id = caller.get_span_context().span_id
    run = found["process lead"]
    assert parent_of(run) == caller_id
    chat = found["chat lead"]
    assert parent_of(chat) == span_id(run) and chat.kind is SpanKind.CLIENT
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.operation.name"] == "chat" and chat.attributes["gen_ai.provider.name"] == "anthropic"
    assert chat.attributes["gen_ai.request.model"] == "lead" and chat.attributes["gen_ai.response.finish_reasons"] == ("tool_use",)
    usage = (chat.attributes["gen_ai.usage.input_tokens"], chat.attributes["gen_ai.usage.output_tokens"])
    assert all(isinstance(count, int) and count > 0 for count in usage), usage
    tool = found["execute_tool create_task"]
    assert parent_of(tool) == span_id(run) and tool.attributes is not None and tool.attributes["gen_ai.tool.name"] == "create_task"
    # The delegated task: queued inside the tool call, so its run is a child of the call.
    assert parent_of(found["process write"]) == span_id(tool)
    assert parent_of(found["chat writer"]) == span_id(found["process write"])
    assert len({trace_of(s) for s in found.values()}) == 1


ASK_THE_WRITER: Script = {
    "lead": [{"tool_calls": [{"name": "agent__writer", "arguments": {"input": "a line"}}]}, {"text": "done: {{results}}"}],
    "writer": [{"text": "the line"}],
}


async def test_asking_another_agent_through_its_capability_is_a_child_of_the_tool_call(
    nats_server: NatsServer, spans: InMemorySpanExporter
) -> None:
    async with lead_and_writer(nats_server, ASK_THE_WRITER, {"agents": [{"name": "writer", "capability": "write"}]}) as client:
        done = await client.tasks.wait((await client.tasks.create("lead", "go")).id, 60)
        assert done.state is TaskState.SUCCEEDED, done.error

        async def answered() -> bool:
            return {"execute_tool agent__writer", "answer write", "chat writer"} <= set(by_name(spans))

        await wait_for(answered, what="the spans of the request to the writer")
    found = by_name(spans)
    answer = found["answer write"]
    assert parent_of(answer) == span_id(found["execute_tool agent__writer"]) and answer.kind is SpanKind.SERVER
    assert parent_of(found["chat writer"]) == span_id(answer)
    assert len({trace_of(s) for s in found.values()}) == 1


async def test_a_failed_tool_call_and_a_dead_task_are_error_spans(nats_server: NatsServer, spans: InMemorySpanExporter) -> None:
    prefix = unique_prefix()
    async with running(agent_config(nats_server.url, prefix, "worker", ["echo"])), swarm_client(nats_server.url, prefix) as client:
        record = await client.tasks.create("echo", {"fail": "permanent"})
        assert (await client.tasks.wait(record.id, 20)).state is TaskState.DEAD

        async def ran() -> bool:
            return "process echo" in by_name(spans)

        await wait_for(ran, what="the run's span")
    run = by_name(spans)["process echo"]
    assert run.status.status_code is StatusCode.ERROR and run.attributes is not None and run.attributes["kubeswarm.task.outcome"] == "dead"


async def test_off_adds_no_header(nats_server: NatsServer) -> None:
    assert not tracing.enabled()
    prefix = unique_prefix()
    async with swarm_client(nats_server.url, prefix) as client:
        record = await client.tasks.create("echo", "untraced")
        stored = await client.conn.js.get_last_msg(client.names.tasks_stream, client.names.task("echo"))
        assert json.loads(stored.data or b"{}")["id"] == record.id
        assert set(stored.headers or {}) == {"Nats-Msg-Id"}


def test_off_the_sdk_is_not_even_imported() -> None:
    """Tracing off costs no import: an agent process without OTEL_EXPORTER_OTLP_ENDPOINT never loads the SDK."""
    code = (
        "import sys, kubeswarm_runtime.app, kubeswarm_runtime.mcp, kubeswarm_runtime.tracing as t; "
        "assert t.setup_from_env('x', {}) is None and not t.enabled(); "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))"
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, check=True).stdout
    assert out.strip() == "[]"
