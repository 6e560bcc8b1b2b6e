"""AWS Bedrock Converse through boto3, run off the event loop (boto3 is imported only here: it is heavy)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..config import ModelConfig
from ..metrics import RuntimeMetrics
from .base import PermanentTaskError, TaskContext, prompt_of

# usage field of Converse → token kind in kubeswarm_llm_tokens_total
USAGE_KINDS = {
    "inputTokens": "input",
    "outputTokens": "output",
    "cacheReadInputTokens": "cache_read",
    "cacheWriteInputTokens": "cache_write",
}
# Errors retrying cannot fix: dead-letter at once.
PERMANENT_ERRORS = frozenset({"ValidationException", "AccessDeniedException", "ResourceNotFoundException"})


class BedrockHandler:
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

    def request(self, prompt: str, system: str | None) -> dict[str, Any]:
        request: dict[str, Any] = {
            "modelId": self.config.name,
            "messages": [{"role": "user", "content": [{"text": prompt}]}],
            "inferenceConfig": {"maxTokens": self.config.max_tokens},
        }
        if system:
            # Cache point after the stable system prompt.
            request["system"] = [{"text": system}, {"cachePoint": {"type": "default"}}]
        return request

    async def handle(self, ctx: TaskContext) -> Any:
        prompt, system = prompt_of(ctx.input)
        try:
            answer = await asyncio.to_thread(self.client.converse, **self.request(prompt, system or self.config.system_prompt))
        except self._client_error as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in PERMANENT_ERRORS:
                raise PermanentTaskError(f"bedrock: {exc}") from exc
            raise
        usage = {USAGE_KINDS[k]: int(v) for k, v in (answer.get("usage") or {}).items() if k in USAGE_KINDS and v}
        self.metrics.record_tokens("bedrock", self.config.name, usage)
        content = answer.get("output", {}).get("message", {}).get("content", [])
        text = "".join(block.get("text", "") for block in content)
        return {"text": text, "model": self.config.name, "stop_reason": answer.get("stopReason"), "usage": usage}

    async def close(self) -> None:
        self.client.close()
