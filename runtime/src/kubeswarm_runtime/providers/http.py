"""POST each task to a sidecar or webhook; its JSON answer is the result."""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from ..metrics import RuntimeMetrics
from .base import PermanentTaskError, TaskContext
from .retry import json_api


class HttpHandler:
    def __init__(self, config: ModelConfig, metrics: RuntimeMetrics) -> None:
        if not config.endpoint:
            raise PermanentTaskError("the http provider needs an endpoint (KUBESWARM_MODEL__ENDPOINT)")
        self.api = json_api("http", config.endpoint, config, metrics)

    async def handle(self, ctx: TaskContext) -> Any:
        body = {"task_id": ctx.task_id, "capability": ctx.capability, "input": ctx.input, "attempt": ctx.attempt, "agent": ctx.agent}
        return await self.api.post(body, {})

    async def close(self) -> None:
        await self.api.close()
