"""POST each task to a sidecar or webhook; its JSON answer is the result."""

from __future__ import annotations

from typing import Any

import aiohttp

from ..config import ModelConfig
from ..metrics import RuntimeMetrics
from .base import PermanentTaskError, TaskContext
from .retry import RetryPolicy, post_json


class HttpHandler:
    def __init__(self, config: ModelConfig, metrics: RuntimeMetrics) -> None:
        if not config.endpoint:
            raise PermanentTaskError("the http provider needs an endpoint (KUBESWARM_MODEL__ENDPOINT)")
        self.endpoint = config.endpoint
        self.config = config
        self.metrics = metrics
        self.policy = RetryPolicy(config.max_retries, config.retry_base_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, ctx: TaskContext) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_seconds))
        body = {"task_id": ctx.task_id, "capability": ctx.capability, "input": ctx.input, "attempt": ctx.attempt, "agent": ctx.agent}
        return await post_json(
            self._session,
            self.endpoint,
            body,
            headers={},
            policy=self.policy,
            on_retry=self.metrics.llm_retries.labels("http").inc,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
