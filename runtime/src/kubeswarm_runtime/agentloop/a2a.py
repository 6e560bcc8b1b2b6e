"""External A2A agents (``spec.tools.a2a``) through the official a2a-sdk client: each as one tool ``a2a__<name>``.

A call sends one message (text, or a data part for any other JSON value) and waits for the task it starts to end;
the model gets the task's artifacts as text (data parts as JSON), or its failure as the tool's error. The agent's
card is read on first use (and again after a failure); its description is shown to the model unless
``description`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, cast

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as a2a
from google.protobuf import json_format, struct_pb2

from ..config import A2aAgentConfig
from ..delegation import CallOrigin
from ..providers.base import ToolDefinition
from .remote import RECONNECT_AFTER_SECONDS, header_values
from .swarm import dumps
from .toolbox import Tool, ToolError, ToolSource, model_tool_name

log = logging.getLogger(__name__)

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "input": {"description": "What to ask the agent: text, or any JSON value (sent as a data part)."},
        "skill": {"type": "string", "description": "One of the agent's skills (its card lists them); default: its own choice."},
    },
    "required": ["input"],
    "additionalProperties": False,
}
FINISHED = {a2a.TASK_STATE_COMPLETED, a2a.TASK_STATE_FAILED, a2a.TASK_STATE_CANCELED, a2a.TASK_STATE_REJECTED}
# While the agent's task runs (a server that answers before it ends), it is read again this often.
POLL_SECONDS = 0.5


def message_of(value: object, skill: object) -> a2a.Message:
    message = a2a.Message(message_id=uuid.uuid4().hex, role=a2a.ROLE_USER)
    if isinstance(value, str):
        message.parts.append(a2a.Part(text=value))
    else:
        message.parts.append(a2a.Part(data=json_format.ParseDict(cast(Any, value), struct_pb2.Value())))
    if isinstance(skill, str):
        message.metadata.update({"skill": skill})
    return message


def parts_text(parts: Any) -> list[str]:
    texts = []
    for part in parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            texts.append(part.text)
        elif kind == "data":
            texts.append(dumps(json_format.MessageToDict(part.data)))
        elif kind == "url":
            texts.append(part.url)
    return texts


def answer_of(task: a2a.Task) -> str:
    """A finished task as the tool's result: its artifacts' text; a failure is the tool's error."""
    if task.status.state != a2a.TASK_STATE_COMPLETED:
        reason = "\n".join(parts_text(task.status.message.parts)) or a2a.TaskState.Name(task.status.state)
        raise ToolError(f"the agent's task {task.id} ended {a2a.TaskState.Name(task.status.state)}: {reason}")
    return "\n".join(text for artifact in task.artifacts for text in parts_text(artifact.parts))


class A2aAgentTools(ToolSource):
    def __init__(self, config: A2aAgentConfig, tool_timeout_seconds: float) -> None:
        self.config = config
        self.headers = header_values(config)
        self.timeout = min(config.timeout_seconds, tool_timeout_seconds)
        self._card: a2a.AgentCard | None = None
        self._http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._failed_at = -RECONNECT_AFTER_SECONDS

    @property
    def secrets(self) -> list[str]:
        return [self.headers[name] for name in self.config.header_env]

    async def tools(self) -> list[Tool]:
        async with self._lock:
            if self._card is None and time.monotonic() - self._failed_at >= RECONNECT_AFTER_SECONDS:
                try:
                    if self._http is None:
                        self._http = httpx.AsyncClient(headers=self.headers, timeout=self.timeout)
                    self._card = await A2ACardResolver(self._http, self.config.url).get_agent_card()
                except Exception as exc:  # an unreachable agent leaves its tool out; the task goes on
                    self._failed_at = time.monotonic()
                    log.warning("A2A agent %s (%s) unavailable, its tool is left out: %r", self.config.name, self.config.url, exc)
        return [self._tool(self._card)] if self._card is not None else []

    def _tool(self, card: a2a.AgentCard) -> Tool:
        skills = ", ".join(f"{s.id} ({s.description})" if s.description else s.id for s in card.skills)
        description = (self.config.description or card.description or f"Ask the A2A agent {card.name!r}.") + (
            f" Skills: {skills}." if skills else ""
        )

        async def run(arguments: dict[str, object], _origin: CallOrigin) -> str:
            if "input" not in arguments or set(arguments) - {"input", "skill"}:
                raise ToolError('invalid arguments: pass {"input": ...} and optionally "skill"')
            assert self._http is not None
            client = ClientFactory(ClientConfig(httpx_client=self._http, streaming=False)).create(card)
            try:
                task: a2a.Task | None = None
                request = a2a.SendMessageRequest(message=message_of(arguments["input"], arguments.get("skill")))
                async for event in client.send_message(request):
                    if event.HasField("message"):
                        return "\n".join(parts_text(event.message.parts))
                    task = event.task
                while task is not None and task.status.state not in FINISHED:
                    await asyncio.sleep(POLL_SECONDS)
                    task = await client.get_task(a2a.GetTaskRequest(id=task.id))
            except ToolError:
                raise
            except Exception as exc:
                self._card = None  # read the card again on the next task (the agent may have moved)
                raise ToolError(f"A2A agent {self.config.name}: {type(exc).__name__}: {exc}") from None
            finally:
                await client.close()
            if task is None:
                raise ToolError(f"A2A agent {self.config.name} answered nothing")
            return answer_of(task)

        definition = ToolDefinition(model_tool_name("a2a", self.config.name), description, INPUT_SCHEMA)
        return Tool(definition, run, self.timeout, side_effect=True, delegates=True)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
