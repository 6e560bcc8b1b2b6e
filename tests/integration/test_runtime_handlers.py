"""The real model handlers against local servers speaking the Anthropic Messages and Bedrock Converse shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from kubeswarm_runtime.config import ModelConfig
from kubeswarm_runtime.metrics import RuntimeMetrics
from kubeswarm_runtime.providers import PermanentTaskError, TaskContext, build_handler
from kubeswarm_runtime.providers.retry import RetriesExhausted
from kubeswarm_runtime.tasks import TaskState

from tests.integration.runtime_helpers import agent_config, running, swarm_client, unique_prefix
from tests.testbed.nats import NatsServer
from tests.testbed.procs import free_port

pytestmark = pytest.mark.integration

Handler = Callable[[web.Request], Any]


@asynccontextmanager
async def local_api(routes: dict[str, Handler]) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An aiohttp server on 127.0.0.1; yields its base URL and the requests it received."""
    seen: list[dict[str, Any]] = []

    def recording(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            seen.append({"path": request.path, "headers": dict(request.headers), "body": await request.json()})
            response: web.StreamResponse = await handler(request)
            return response

        return wrapped

    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, recording(handler))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def anthropic_server(failures: list[tuple[int, dict[str, str]]]) -> Handler:
    """Messages API shape; answers the queued failures first (status, headers)."""

    async def messages(request: web.Request) -> web.Response:
        if failures:
            status, headers = failures.pop(0)
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
            return web.json_response(error, status=status, headers=headers)
        body = await request.json()
        if request.headers.get("x-api-key") != "sk-test":
            return web.json_response({"type": "error", "error": {"type": "authentication_error"}}, status=401)
        return web.json_response(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "stop_reason": "end_turn",
                "content": [{"type": "text", "text": "answer to: " + body["messages"][0]["content"]}],
                "usage": {"input_tokens": 12, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0},
            }
        )

    return messages


def ctx(task_input: Any) -> TaskContext:
    return TaskContext("t1", "write", task_input, 1, "writer")


async def test_anthropic_answer_usage_and_prompt_caching() -> None:
    async with local_api({"/v1/messages": anthropic_server([])}) as (url, seen):
        metrics = RuntimeMetrics()
        config = ModelConfig(provider="anthropic", name="claude-test", api_key="sk-test", endpoint=url, max_tokens=50)
        handler = build_handler(config, metrics)
        try:
            result = await handler.handle(ctx({"prompt": "hi", "system": "you are terse"}))
        finally:
            await handler.close()
    assert result["text"] == "answer to: hi"
    assert result["usage"] == {"input": 12, "output": 5, "cache_read": 100}
    request = seen[0]
    assert request["headers"]["anthropic-version"] == "2023-06-01"
    assert request["body"]["max_tokens"] == 50
    assert request["body"]["system"] == [{"type": "text", "text": "you are terse", "cache_control": {"type": "ephemeral"}}]
    assert metrics.llm_tokens.labels("anthropic", "claude-test", "cache_read")._value.get() == 100


async def test_anthropic_retries_and_honours_retry_after() -> None:
    failures = [(529, {}), (429, {"retry-after": "0.3"})]
    async with local_api({"/v1/messages": anthropic_server(failures)}) as (url, seen):
        metrics = RuntimeMetrics()
        config = ModelConfig(provider="anthropic", name="m", api_key="sk-test", endpoint=url, retry_base_seconds=0.01)
        handler = build_handler(config, metrics)
        try:
            result = await handler.handle(ctx("q"))
        finally:
            await handler.close()
    assert result["text"] == "answer to: q"
    assert len(seen) == 3
    assert metrics.llm_retries.labels("anthropic")._value.get() == 2


async def test_anthropic_permanent_and_exhausted_errors() -> None:
    async with local_api({"/v1/messages": anthropic_server([(500, {})] * 3)}) as (url, _seen):
        config = ModelConfig(provider="anthropic", name="m", api_key="sk-test", endpoint=url, max_retries=2, retry_base_seconds=0.01)
        handler = build_handler(config, RuntimeMetrics())
        with pytest.raises(RetriesExhausted):
            await handler.handle(ctx("q"))
        bad_key = build_handler(ModelConfig.model_validate(config.model_dump() | {"api_key": "wrong"}), RuntimeMetrics())
        with pytest.raises(PermanentTaskError, match="401"):
            await bad_key.handle(ctx("q"))
        with pytest.raises(PermanentTaskError, match="prompt"):
            await handler.handle(ctx({"no": "prompt"}))
        await handler.close()
        await bad_key.close()


async def test_bedrock_converse_through_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    async def converse(request: web.Request) -> web.Response:
        body = await request.json()
        text = body["messages"][0]["content"][0]["text"]
        return web.json_response(
            {
                "output": {"message": {"role": "assistant", "content": [{"text": f"bedrock says {text}"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10, "cacheWriteInputTokens": 20},
                "metrics": {"latencyMs": 1},
            }
        )

    model_id = "anthropic.claude-test-v1:0"
    async with local_api({f"/model/{model_id}/converse": converse}) as (url, seen):
        metrics = RuntimeMetrics()
        config = ModelConfig(provider="bedrock", name=model_id, region="eu-west-1", endpoint=url, system_prompt="be brief")
        handler = build_handler(config, metrics)
        try:
            result = await handler.handle(ctx("hello"))
        finally:
            await handler.close()
    assert result["text"] == "bedrock says hello"
    assert result["usage"] == {"input": 7, "output": 3, "cache_write": 20}
    assert seen[0]["body"]["system"] == [{"text": "be brief"}, {"cachePoint": {"type": "default"}}]
    assert seen[0]["body"]["inferenceConfig"] == {"maxTokens": 1024}
    assert "AWS4-HMAC-SHA256" in seen[0]["headers"]["Authorization"]
    assert metrics.llm_tokens.labels("bedrock", model_id, "input")._value.get() == 7


async def test_http_handler_drives_tasks_end_to_end(nats_server: NatsServer) -> None:
    async def webhook(request: web.Request) -> web.Response:
        body = await request.json()
        if body["input"] == "bad":
            return web.json_response({"error": "no"}, status=422)
        return web.json_response({"upper": str(body["input"]).upper()})

    async with local_api({"/hook": webhook}) as (url, seen):
        prefix = unique_prefix()
        config = agent_config(nats_server.url, prefix, "hooked", ["shout"], model={"provider": "http", "endpoint": f"{url}/hook"})
        async with running(config), swarm_client(nats_server.url, prefix) as client:
            good = await client.tasks.wait((await client.tasks.create("shout", "hey")).id, 10)
            bad = await client.tasks.wait((await client.tasks.create("shout", "bad")).id, 10)
    assert good.state is TaskState.SUCCEEDED
    assert good.result == {"upper": "HEY"}
    assert bad.state is TaskState.DEAD
    assert "422" in (bad.error or "")
    assert seen[0]["body"]["capability"] == "shout"
