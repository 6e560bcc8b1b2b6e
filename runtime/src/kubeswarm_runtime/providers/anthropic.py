"""Anthropic Messages API over aiohttp: tool_use / tool_result blocks, retries, prompt caching of the system prompt, token usage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import ModelConfig
from ..metrics import RuntimeMetrics
from .base import ChatMessage, ModelReply, PermanentTaskError, ToolCall, ToolDefinition, usage_of
from .retry import json_api

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# usage field of the API → token kind in kubeswarm_llm_tokens_total
USAGE_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_write",
}


def anthropic_message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "user":
        return {"role": "user", "content": message.text}
    if message.role == "tool":
        blocks = [{"type": "tool_result", "tool_use_id": r.call_id, "content": r.content, "is_error": r.is_error} for r in message.results]
        return {"role": "user", "content": blocks}
    content: list[dict[str, Any]] = [{"type": "text", "text": message.text}] if message.text else []
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in message.tool_calls]
    return {"role": "assistant", "content": content}


class AnthropicModel:
    def __init__(self, config: ModelConfig, metrics: RuntimeMetrics) -> None:
        if config.api_key is None:
            raise PermanentTaskError("the anthropic provider needs an API key (KUBESWARM_MODEL__API_KEY)")
        self.config = config
        self.metrics = metrics
        self.api = json_api("anthropic", (config.endpoint or DEFAULT_BASE_URL).rstrip("/") + "/v1/messages", config, metrics)

    def request_body(self, system: str | None, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.name,
            "max_tokens": self.config.max_tokens,
            "messages": [anthropic_message(m) for m in messages],
        }
        if system:
            # The system prompt is the stable part across tasks: mark it cacheable.
            body["system"] = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
        if tools:
            body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in tools]
        return body

    async def reply(self, system: str | None, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> ModelReply:
        assert self.config.api_key is not None
        headers = {"x-api-key": self.config.api_key.get_secret_value(), "anthropic-version": API_VERSION}
        answer = await self.api.post(self.request_body(system, messages, tools), headers)
        usage = usage_of(answer.get("usage"), USAGE_KINDS)
        self.metrics.record_tokens("anthropic", self.config.name, usage)
        blocks = answer.get("content") or []
        text = "".join(block.get("text", "") for block in blocks if block.get("type") == "text")
        calls = tuple(
            ToolCall(str(b.get("id")), str(b.get("name")), b.get("input") if isinstance(b.get("input"), dict) else {})
            for b in blocks
            if b.get("type") == "tool_use"
        )
        return ModelReply(text, calls, usage, answer.get("stop_reason"), answer.get("model"))

    async def close(self) -> None:
        await self.api.close()
