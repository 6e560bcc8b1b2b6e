"""Model providers (``spec.model.provider``): echo (default, offline) and http are task handlers; anthropic, bedrock
and openai are chat models, each run by the tool loop (docs/tools.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import ModelConfig
from ..metrics import RuntimeMetrics
from ..resources import Provider
from .base import ChatModel, PermanentTaskError, TaskContext, TaskHandler

if TYPE_CHECKING:
    from ..agentloop.toolbox import Toolbox

__all__ = ["CHAT_PROVIDERS", "PermanentTaskError", "TaskContext", "TaskHandler", "build_chat_model", "build_handler"]

CHAT_PROVIDERS = frozenset({Provider.ANTHROPIC, Provider.BEDROCK, Provider.OPENAI})


def build_chat_model(config: ModelConfig, metrics: RuntimeMetrics) -> ChatModel:
    # Imported on demand: an echo agent never loads aiohttp clients or boto3.
    if config.provider is Provider.ANTHROPIC:
        from .anthropic import AnthropicModel

        return AnthropicModel(config, metrics)
    if config.provider is Provider.BEDROCK:
        from .bedrock import BedrockModel

        return BedrockModel(config, metrics)
    if config.provider is Provider.OPENAI:
        from .openai import OpenAIModel

        return OpenAIModel(config, metrics)
    raise ValueError(f"provider {config.provider} is not a chat model")


def build_handler(config: ModelConfig, metrics: RuntimeMetrics, toolbox: Toolbox | None = None) -> TaskHandler:
    """The task handler of a provider; a chat model runs the tool loop over ``toolbox`` (none: no tools)."""
    if config.provider in CHAT_PROVIDERS:
        from ..agentloop.loop import ToolLoop

        return ToolLoop(build_chat_model(config, metrics), config, metrics, toolbox)
    if config.provider is Provider.HTTP:
        from .http import HttpHandler

        return HttpHandler(config, metrics)
    from .echo import EchoHandler

    return EchoHandler()
