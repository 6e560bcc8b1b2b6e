"""OpenAI-compatible Chat Completions over aiohttp (OpenAI, vLLM, Ollama, LiteLLM, ...): function tools, retries, token usage."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..config import ModelConfig
from ..metrics import RuntimeMetrics
from .base import ChatMessage, ModelReply, ToolCall, ToolDefinition, usage_of
from .retry import json_api

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# usage field of the API → token kind in kubeswarm_llm_tokens_total (cached prompt tokens are read separately)
USAGE_KINDS = {"prompt_tokens": "input", "completion_tokens": "output"}


def openai_messages(system: str | None, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        if message.role == "user":
            out.append({"role": "user", "content": message.text})
        elif message.role == "tool":
            out += [{"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in message.results]
        else:
            assistant: dict[str, Any] = {"role": "assistant", "content": message.text or None}
            if message.tool_calls:
                assistant["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                    for c in message.tool_calls
                ]
            out.append(assistant)
    return out


def tool_call_of(raw: dict[str, Any]) -> ToolCall:
    function = raw.get("function") or {}
    text = function.get("arguments") or "{}"
    try:
        arguments = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as exc:
        return ToolCall(str(raw.get("id")), str(function.get("name")), {}, invalid=f"arguments are not valid JSON: {exc}")
    if not isinstance(arguments, dict):
        return ToolCall(str(raw.get("id")), str(function.get("name")), {}, invalid="arguments must be a JSON object")
    return ToolCall(str(raw.get("id")), str(function.get("name")), arguments)


class OpenAIModel:
    def __init__(self, config: ModelConfig, metrics: RuntimeMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.api = json_api("openai", (config.endpoint or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions", config, metrics)

    def request_body(self, system: str | None, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.name,
            "max_tokens": self.config.max_tokens,
            "messages": openai_messages(system, messages),
        }
        if tools:
            body["tools"] = [
                {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}
                for t in tools
            ]
        return body

    async def reply(self, system: str | None, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> ModelReply:
        # A local endpoint (vLLM, Ollama) may need no key.
        headers = {"authorization": f"Bearer {self.config.api_key.get_secret_value()}"} if self.config.api_key else {}
        answer = await self.api.post(self.request_body(system, messages, tools), headers)
        raw_usage = answer.get("usage") or {}
        usage = usage_of(raw_usage, USAGE_KINDS)
        cached = (raw_usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if isinstance(cached, int) and cached:
            usage["cache_read"] = cached
        self.metrics.record_tokens("openai", self.config.name, usage)
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        calls = tuple(tool_call_of(raw) for raw in message.get("tool_calls") or [])
        return ModelReply(message.get("content") or "", calls, usage, choice.get("finish_reason"), answer.get("model"))

    async def close(self) -> None:
        await self.api.close()
