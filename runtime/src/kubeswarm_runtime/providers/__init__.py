"""Model providers, each a task handler: echo (default, offline), anthropic, bedrock, http (``spec.model.provider``)."""

from __future__ import annotations

from ..config import ModelConfig
from ..metrics import RuntimeMetrics
from ..resources import Provider
from .base import PermanentTaskError, TaskContext, TaskHandler

__all__ = ["PermanentTaskError", "TaskContext", "TaskHandler", "build_handler"]


def build_handler(config: ModelConfig, metrics: RuntimeMetrics) -> TaskHandler:
    # Imported on demand: an echo agent never loads aiohttp clients or boto3.
    if config.provider is Provider.ANTHROPIC:
        from .anthropic import AnthropicHandler

        return AnthropicHandler(config, metrics)
    if config.provider is Provider.BEDROCK:
        from .bedrock import BedrockHandler

        return BedrockHandler(config, metrics)
    if config.provider is Provider.HTTP:
        from .http import HttpHandler

        return HttpHandler(config, metrics)
    from .echo import EchoHandler

    return EchoHandler()
