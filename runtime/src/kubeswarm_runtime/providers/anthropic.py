"""Anthropic Messages API over aiohttp: retries, prompt caching of the system prompt, token usage."""

from __future__ import annotations

from typing import Any

import aiohttp

from ..config import ModelConfig
from ..metrics import RuntimeMetrics
from .base import PermanentTaskError, TaskContext, prompt_of
from .retry import RetryPolicy, post_json

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# usage field of the API → token kind in kubeswarm_llm_tokens_total
USAGE_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_write",
}


class AnthropicHandler:
    def __init__(self, config: ModelConfig, metrics: RuntimeMetrics) -> None:
        if config.api_key is None:
            raise PermanentTaskError("the anthropic provider needs an API key (KUBESWARM_MODEL__API_KEY)")
        self.config = config
        self.metrics = metrics
        self.url = (config.endpoint or DEFAULT_BASE_URL).rstrip("/") + "/v1/messages"
        self.policy = RetryPolicy(config.max_retries, config.retry_base_seconds)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_seconds))
        return self._session

    def request_body(self, prompt: str, system: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.name,
            "max_tokens": self.config.max_tokens,
            "messages": [{"role": "user", "content": prompt}],
        }
        if system:
            # The system prompt is the stable part across tasks: mark it cacheable.
            body["system"] = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
        return body

    async def handle(self, ctx: TaskContext) -> Any:
        prompt, system = prompt_of(ctx.input)
        assert self.config.api_key is not None
        headers = {"x-api-key": self.config.api_key.get_secret_value(), "anthropic-version": API_VERSION}
        answer = await post_json(
            self._client(),
            self.url,
            self.request_body(prompt, system or self.config.system_prompt),
            headers=headers,
            policy=self.policy,
            on_retry=self.metrics.llm_retries.labels("anthropic").inc,
        )
        usage = {USAGE_KINDS[k]: int(v) for k, v in (answer.get("usage") or {}).items() if k in USAGE_KINDS and v}
        self.metrics.record_tokens("anthropic", self.config.name, usage)
        text = "".join(block.get("text", "") for block in answer.get("content", []) if block.get("type") == "text")
        return {"text": text, "model": answer.get("model"), "stop_reason": answer.get("stop_reason"), "usage": usage}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
