"""A stand-in LLM API for offline demos and tests: speaks the Anthropic Messages, Bedrock Converse and OpenAI Chat
Completions shapes, and answers from a script instead of a model.

The script maps a model name (``spec.model.name``) to its turns; the turn a request is at is the number of
assistant messages in its conversation, so the server keeps no state (a task run again gets the same answers).
A turn is ``{"text": ...}`` (the final answer) or ``{"tool_calls": [{"name": ..., "arguments": {...}}]}``;
``{"repeat": true}`` on the last turn repeats it forever. In strings, ``{{prompt}}`` is the task's prompt and
``{{results}}`` the last tool results. A model not in the script answers "echo: <prompt>".

    python -m examples.tools.scripted_model --port 8400 --script examples/tools/script.yaml
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

Script = dict[str, list[dict[str, Any]]]
SCRIPT = web.AppKey("script", dict)
REQUESTS = web.AppKey("requests", list)


@dataclass(frozen=True)
class Conversation:
    """What the script needs of a request, whatever its API shape."""

    model: str
    prompt: str
    turn: int  # assistant messages so far
    results: list[str]  # the last tool results


def fill(value: Any, conversation: Conversation) -> Any:
    if isinstance(value, str):
        return value.replace("{{prompt}}", conversation.prompt).replace("{{results}}", "\n".join(conversation.results))
    if isinstance(value, dict):
        return {k: fill(v, conversation) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, conversation) for v in value]
    return value


def next_turn(script: Script, conversation: Conversation) -> dict[str, Any]:
    turns = script.get(conversation.model)
    if not turns:
        return {"text": f"echo: {conversation.prompt}"}
    index = conversation.turn
    if index >= len(turns):
        index = len(turns) - 1 if turns[-1].get("repeat") else -1
    if index < 0:
        return {"text": fill("done: {{results}}", conversation)}
    return dict(fill(turns[index], conversation))


def usage_numbers(body: Any) -> tuple[int, int]:
    return len(json.dumps(body)) // 4, 10


async def scripted(request: web.Request, api: str, parse: Any) -> tuple[Conversation, dict[str, Any], tuple[int, int]]:
    """Read and record a request of one API shape: its conversation, the script's next turn, the token usage to report."""
    body = await request.json()
    request.app[REQUESTS].append({"api": api, "headers": dict(request.headers), "body": body})
    conversation: Conversation = parse(request, body)
    return conversation, next_turn(request.app[SCRIPT], conversation), usage_numbers(body)


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return ""


# -- Anthropic Messages


def anthropic_conversation(_request: web.Request, body: dict[str, Any]) -> Conversation:
    messages = body.get("messages", [])
    last = messages[-1]["content"] if messages else ""
    results = [text_of(b.get("content")) for b in last if b.get("type") == "tool_result"] if isinstance(last, list) else []
    prompt = text_of(messages[0]["content"]) if messages else ""
    return Conversation(body.get("model", ""), prompt, sum(m.get("role") == "assistant" for m in messages), results)


async def anthropic(request: web.Request) -> web.Response:
    conversation, turn, (tokens_in, tokens_out) = await scripted(request, "anthropic", anthropic_conversation)
    content: list[dict[str, Any]] = [{"type": "text", "text": turn["text"]}] if turn.get("text") else []
    for i, call in enumerate(turn.get("tool_calls", [])):
        content.append(
            {"type": "tool_use", "id": f"toolu_{conversation.turn}_{i}", "name": call["name"], "input": call.get("arguments", {})}
        )
    return web.json_response(
        {
            "id": f"msg_{conversation.turn}",
            "type": "message",
            "role": "assistant",
            "model": conversation.model,
            "content": content,
            "stop_reason": "tool_use" if turn.get("tool_calls") else "end_turn",
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
        }
    )


# -- Bedrock Converse


def converse_conversation(request: web.Request, body: dict[str, Any]) -> Conversation:
    messages = body.get("messages", [])
    last = messages[-1].get("content", []) if messages else []
    results = [text_of(b["toolResult"].get("content")) for b in last if "toolResult" in b]
    prompt = text_of(messages[0].get("content")) if messages else ""
    return Conversation(request.match_info["model"], prompt, sum(m.get("role") == "assistant" for m in messages), results)


async def converse(request: web.Request) -> web.Response:
    conversation, turn, (tokens_in, tokens_out) = await scripted(request, "bedrock", converse_conversation)
    content: list[dict[str, Any]] = [{"text": turn["text"]}] if turn.get("text") else []
    for i, call in enumerate(turn.get("tool_calls", [])):
        content.append(
            {"toolUse": {"toolUseId": f"tooluse_{conversation.turn}_{i}", "name": call["name"], "input": call.get("arguments", {})}}
        )
    return web.json_response(
        {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": "tool_use" if turn.get("tool_calls") else "end_turn",
            "usage": {"inputTokens": tokens_in, "outputTokens": tokens_out, "totalTokens": tokens_in + tokens_out},
            "metrics": {"latencyMs": 1},
        }
    )


# -- OpenAI Chat Completions


def openai_conversation(_request: web.Request, body: dict[str, Any]) -> Conversation:
    messages = [m for m in body.get("messages", []) if m.get("role") != "system"]
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, text_of(message.get("content")))
    prompt = text_of(messages[0].get("content")) if messages else ""
    return Conversation(body.get("model", ""), prompt, sum(m.get("role") == "assistant" for m in messages), results)


async def chat_completions(request: web.Request) -> web.Response:
    conversation, turn, (tokens_in, tokens_out) = await scripted(request, "openai", openai_conversation)
    message: dict[str, Any] = {"role": "assistant", "content": turn.get("text")}
    if turn.get("tool_calls"):
        message["tool_calls"] = [
            {
                "id": f"call_{conversation.turn}_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}))},
            }
            for i, c in enumerate(turn["tool_calls"])
        ]
    return web.json_response(
        {
            "id": f"chatcmpl-{conversation.turn}",
            "object": "chat.completion",
            "model": conversation.model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if turn.get("tool_calls") else "stop"}],
            "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out},
        }
    )


def build_app(script: Script) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[SCRIPT] = script
    app[REQUESTS] = []
    app.router.add_post("/v1/messages", anthropic)
    app.router.add_post("/model/{model}/converse", converse)
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app


def load_script(path: Path) -> Script:
    script = yaml.safe_load(path.read_text()) or {}
    if not isinstance(script, dict):
        raise SystemExit(f"{path}: a script maps model names to lists of turns")
    return script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument("--script", type=Path, required=True)
    args = parser.parse_args()
    web.run_app(build_app(load_script(args.script)), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
