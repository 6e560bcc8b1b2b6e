"""A task's tool loop: ask the model; run the tool calls it asks for (concurrently); give it the results; repeat
until it answers or a limit of ``spec.tools`` is hit (docs/tools.md)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from typing import Any

from .. import tracing
from ..config import ModelConfig, ToolsConfig
from ..delegation import CallOrigin
from ..metrics import RuntimeMetrics
from ..providers.base import (
    ChatMessage,
    ChatModel,
    ModelReply,
    PermanentTaskError,
    TaskContext,
    ToolCall,
    ToolDefinition,
    ToolResult,
    prompt_of,
)
from .toolbox import Tool, Toolbox, ToolError

log = logging.getLogger(__name__)

# What the model gets back of one tool result at most (a tool may answer megabytes).
MODEL_RESULT_CHARS = 32 * 1024
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class LimitReached(PermanentTaskError):
    """The loop stopped before a final answer; the message names the limit (a retry would hit it again)."""


def idempotency_key(task_id: str, turn: int, index: int) -> str:
    """The same for the same call of the same task on every delivery: ``<task id>-t<turn>c<index>``, or its hash."""
    readable = f"{task_id}-t{turn}c{index}"
    return readable if IDEMPOTENCY_KEY.match(readable) else hashlib.sha256(readable.encode()).hexdigest()[:40]


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


def tokens_of(usage: dict[str, int]) -> int:
    """Input plus output tokens: what maxTokensPerTask bounds (cache reads are part of the input in some APIs, apart in others)."""
    return usage.get("input", 0) + usage.get("output", 0)


class ToolLoop:
    """A task handler for chat models: the loop over the agent's toolbox, within its limits."""

    def __init__(self, model: ChatModel, config: ModelConfig, metrics: RuntimeMetrics, toolbox: Toolbox | None = None) -> None:
        self.model = model
        self.config = config
        self.metrics = metrics
        self.toolbox = toolbox or Toolbox()
        self.limits: ToolsConfig = self.toolbox.config
        self._calls: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}

    async def handle(self, ctx: TaskContext) -> Any:
        prompt, system = prompt_of(ctx.input)
        tools = await self.toolbox.tools()
        definitions: list[ToolDefinition] = [tool.definition for tool in tools.values()]
        messages: list[ChatMessage] = [ChatMessage("user", prompt)]
        usage: dict[str, int] = {}
        calls_made = 0
        limits = self.limits
        for turn in range(1, limits.max_turns + 1):
            with tracing.model_call(self.config.provider.value, self.config.name, self.config.max_tokens) as span:
                reply = await self.model.reply(system or self.config.system_prompt, messages, definitions)
                tracing.model_replied(span, reply.model, reply.stop_reason, reply.usage)
            for kind, count in reply.usage.items():
                usage[kind] = usage.get(kind, 0) + count
            self._step(ctx, {"turn": turn, "kind": "model", "text": reply.text, "tool_calls": [c.name for c in reply.tool_calls]})
            if not reply.tool_calls:
                return self._answer(reply, usage, turn, calls_made)
            if tokens_of(usage) >= limits.max_tokens_per_task:
                raise LimitReached(f"tool loop stopped: maxTokensPerTask ({limits.max_tokens_per_task}) used up after {turn} turns")
            if turn == limits.max_turns:
                break
            if calls_made + len(reply.tool_calls) > limits.max_tool_calls:
                raise LimitReached(
                    f"tool loop stopped: maxToolCalls ({limits.max_tool_calls}) would be exceeded "
                    f"({calls_made} made, {len(reply.tool_calls)} more asked for)"
                )
            calls_made += len(reply.tool_calls)
            messages.append(ChatMessage("assistant", reply.text, tool_calls=reply.tool_calls))
            done = await asyncio.gather(*(self._call(ctx, tools, call, turn, i) for i, call in enumerate(reply.tool_calls)))
            for _result, step in done:  # in the order the model asked, whatever order they finished in
                self._step(ctx, step)
            messages.append(ChatMessage("tool", results=tuple(result for result, _step in done)))
        raise LimitReached(f"tool loop stopped: maxTurns ({limits.max_turns}) reached without a final answer")

    def _answer(self, reply: ModelReply, usage: dict[str, int], turns: int, calls: int) -> dict[str, Any]:
        return {
            "text": reply.text,
            "model": reply.model,
            "stop_reason": reply.stop_reason,
            "usage": usage,
            "turns": turns,
            "tool_calls": calls,
        }

    async def _call(
        self, ctx: TaskContext, tools: dict[str, Tool], call: ToolCall, turn: int, index: int
    ) -> tuple[ToolResult, dict[str, Any]]:
        with tracing.tool_call(call.name, call.id) as span:
            result, step = await self._run_tool(ctx, tools, call, turn, index)
            if result.is_error:
                tracing.failed(span, step["outcome"])
            return result, step

    async def _run_tool(
        self, ctx: TaskContext, tools: dict[str, Tool], call: ToolCall, turn: int, index: int
    ) -> tuple[ToolResult, dict[str, Any]]:
        started = time.monotonic()
        tool = tools.get(call.name)
        outcome = "ok"
        try:
            if tool is None:
                raise ToolError(f"no tool named {call.name!r}; the tools are: {', '.join(sorted(tools)) or 'none'}")
            if call.invalid:
                raise ToolError(call.invalid)
            depth = ctx.depth + 1
            if tool.delegates and depth > self.limits.max_delegation_depth:
                outcome = "refused"
                raise ToolError(
                    f"delegation depth limit reached: this task is {ctx.depth} delegations deep and maxDelegationDepth is "
                    f"{self.limits.max_delegation_depth}; do the work yourself or answer with what you have"
                )
            origin = CallOrigin(idempotency_key(ctx.task_id, turn, index) if tool.side_effect else None, depth)
            try:
                async with asyncio.timeout(tool.timeout_seconds):
                    content = await tool.run(call.arguments, origin)
            except TimeoutError:
                outcome = "timeout"
                raise ToolError(f"{call.name} did not answer within {tool.timeout_seconds:g}s") from None
            is_error = False
        except ToolError as exc:
            outcome = "error" if outcome == "ok" else outcome
            content, is_error = str(exc), True
        except Exception as exc:  # a tool's own failure is the model's to handle, not the task's
            log.exception("tool %s failed", call.name)
            outcome, content, is_error = "error", f"{call.name} failed: {type(exc).__name__}: {exc}", True
        seconds = time.monotonic() - started
        self._meter(call.name if tool is not None else "unknown", outcome, seconds)
        step = {
            "turn": turn,
            "kind": "tool",
            "tool": call.name,
            "input": json.dumps(call.arguments, default=str),
            "outcome": outcome,
            "output": content,
            "seconds": round(seconds, 3),
        }
        return ToolResult(call.id, call.name, clip(content, MODEL_RESULT_CHARS), is_error), step

    def _step(self, ctx: TaskContext, step: dict[str, Any]) -> None:
        limit = self.limits.step_text_chars
        for key in ("text", "input", "output"):
            if isinstance(step.get(key), str):
                step[key] = clip(self.toolbox.redact(step[key]), limit)
        ctx.steps.append(step)
        ctx.on_step()

    def _meter(self, tool: str, outcome: str, seconds: float) -> None:
        counter = self._calls.get((tool, outcome))
        if counter is None:
            counter = self._calls[tool, outcome] = self.metrics.tool_calls.labels(tool, outcome)
        counter.inc()
        histogram = self._durations.get(tool)
        if histogram is None:
            histogram = self._durations[tool] = self.metrics.tool_call_duration.labels(tool)
        histogram.observe(seconds)

    async def close(self) -> None:
        await self.toolbox.close()
        await self.model.close()
