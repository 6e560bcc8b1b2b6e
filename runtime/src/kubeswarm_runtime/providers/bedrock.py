"""AWS Bedrock Converse through boto3 (toolUse / toolResult), run off the event loop (boto3 is imported only here: it is heavy)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ..config import ModelConfig
from ..metrics import RuntimeMetrics
from .base import ChatMessage, ModelReply, PermanentTaskError, ToolCall, ToolDefinition, usage_of

# usage field of Converse → token kind in kubeswarm_llm_tokens_total
USAGE_KINDS = {
    "inputTokens": "input",
    "outputTokens": "output",
    "cacheReadInputTokens": "cache_read",
    "cacheWriteInputTokens": "cache_write",
}
# Errors retrying cannot fix: dead-letter at once.
PERMANENT_ERRORS = frozenset({"ValidationException", "AccessDeniedException", "ResourceNotFoundException"})


def converse_message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "user":
        return {"role": "user", "content": [{"text": message.text}]}
    if message.role == "tool":
        results = [
            {"toolResult": {"toolUseId": r.call_id, "content": [{"text": r.content}], "status": "error" if r.is_error else "success"}}
            for r in message.results
        ]
        return {"role": "user", "content": results}
    content: list[dict[str, Any]] = [{"text": message.text}] if message.text else []
    content += [{"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}} for c in message.tool_calls]
    return {"role": "assistant", "content": content}


class BedrockModel:
    def __init__(self, config: ModelConfig, metrics: RuntimeMetrics) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError

        self.config = config
        self.metrics = metrics
        self._client_error: type[Exception] = ClientError
        self.client = boto3.client(
            "bedrock-runtime",
            region_name=config.region,
            endpoint_url=config.endpoint,
            config=Config(
                retries={"max_attempts": config.max_retries + 1, "mode": "standard"},
                read_timeout=config.request_timeout_seconds,
            ),
        )

    def request(self, system: str | None, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> dict[str, Any]:
        request: dict[str, Any] = {
            "modelId": self.config.name,
            "messages": [converse_message(m) for m in messages],
            "inferenceConfig": {"maxTokens": self.config.max_tokens},
        }
        if system:
            # Cache point after the stable system prompt.
            request["system"] = [{"text": system}, {"cachePoint": {"type": "default"}}]
        if tools:
            specs = [{"toolSpec": {"name": t.name, "description": t.description, "inputSchema": {"json": t.input_schema}}} for t in tools]
            request["toolConfig"] = {"tools": specs}
        return request

    async def reply(self, system: str | None, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> ModelReply:
        try:
            answer = await asyncio.to_thread(self.client.converse, **self.request(system, messages, tools))
        except self._client_error as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in PERMANENT_ERRORS:
                raise PermanentTaskError(f"bedrock: {exc}") from exc
            raise
        usage = usage_of(answer.get("usage"), USAGE_KINDS)
        self.metrics.record_tokens("bedrock", self.config.name, usage)
        content = answer.get("output", {}).get("message", {}).get("content", [])
        text = "".join(block.get("text", "") for block in content)
        calls = tuple(
            ToolCall(str(use.get("toolUseId")), str(use.get("name")), use.get("input") if isinstance(use.get("input"), dict) else {})
            for use in (block.get("toolUse") for block in content)
            if use
        )
        return ModelReply(text, calls, usage, answer.get("stopReason"), self.config.name)

    async def close(self) -> None:
        self.client.close()
