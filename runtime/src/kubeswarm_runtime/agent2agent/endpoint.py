"""``/.well-known/agent-card.json`` and ``POST /a2a``: the A2A JSON-RPC binding (protocol 1.0) over the swarm's task queue.

An A2A task is a kubeswarm task: ``SendMessage`` creates one through :class:`TaskService` (same id for
``get_task``, ``kubeswarm task``, the dashboards), ``GetTask`` and ``CancelTask`` read and cancel it there,
``SendStreamingMessage`` and ``SubscribeToTask`` follow its state in the tasks bucket as SSE.
The endpoint shares the MCP surface's :class:`Guard`: the same auth, rate limit, origin check and size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import nats
from a2a.types import a2a_pb2 as a2a
from a2a.utils import errors as a2a_errors
from a2a.utils.constants import VERSION_HEADER
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage

from ..mcp.admission import Admission
from ..mcp.http import CLIENT_GONE, KEEPALIVE, SseStream, json_response, sse_event
from ..mcp.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, RequestId, RpcError, check, decode, encode, error_reply
from ..mcp.metering import NO_METHOD, RequestMeter, method_of
from ..mcp.security import Caller, Guard, StreamSlots
from ..names import Priority, task_key
from ..runtime import AgentRuntime
from ..tasks import TaskRecord, TaskState
from .mapping import (
    STATES_OF,
    TOKEN,
    MessageRefused,
    a2a_url,
    agent_card,
    context_of,
    input_of,
    result_artifact,
    status_of,
    task_id_of,
    task_of,
)

log = logging.getLogger(__name__)

# A blocking SendMessage waits this long for its task to end, then answers with the task as it is (poll GetTask).
SEND_WAIT_SECONDS = 600.0
LIST_PAGE_MAX = 100


def _code(error: type[a2a_errors.A2AError]) -> int:
    return a2a_errors.JSON_RPC_ERROR_CODE_MAP[error]


TASK_NOT_FOUND = _code(a2a_errors.TaskNotFoundError)
TASK_NOT_CANCELABLE = _code(a2a_errors.TaskNotCancelableError)
PUSH_NOT_SUPPORTED = _code(a2a_errors.PushNotificationNotSupportedError)
UNSUPPORTED_OPERATION = _code(a2a_errors.UnsupportedOperationError)
CONTENT_TYPE_NOT_SUPPORTED = _code(a2a_errors.ContentTypeNotSupportedError)
EXTENDED_CARD_NOT_CONFIGURED = _code(a2a_errors.ExtendedAgentCardNotConfiguredError)
VERSION_NOT_SUPPORTED = _code(a2a_errors.VersionNotSupportedError)

REQUEST_TYPES: dict[str, type[ProtoMessage]] = {
    "SendMessage": a2a.SendMessageRequest,
    "SendStreamingMessage": a2a.SendMessageRequest,
    "GetTask": a2a.GetTaskRequest,
    "ListTasks": a2a.ListTasksRequest,
    "CancelTask": a2a.CancelTaskRequest,
    "SubscribeToTask": a2a.SubscribeToTaskRequest,
    "CreateTaskPushNotificationConfig": a2a.TaskPushNotificationConfig,
    "GetTaskPushNotificationConfig": a2a.GetTaskPushNotificationConfigRequest,
    "ListTaskPushNotificationConfigs": a2a.ListTaskPushNotificationConfigsRequest,
    "DeleteTaskPushNotificationConfig": a2a.DeleteTaskPushNotificationConfigRequest,
    "GetExtendedAgentCard": a2a.GetExtendedAgentCardRequest,
}
STREAMING = frozenset({"SendStreamingMessage", "SubscribeToTask"})


def as_json(message: ProtoMessage) -> dict[str, Any]:
    converted: dict[str, Any] = json_format.MessageToDict(message)
    return converted


def not_found(task_id: str) -> RpcError:
    return RpcError(TASK_NOT_FOUND, f"Task not found: {task_id!r}")


def check_version(request: web.Request) -> None:
    """A2A 1.x only; a request without ``A2A-Version`` speaks 0.3 (the protocol's rule), which this endpoint does not."""
    version = request.headers.get(VERSION_HEADER, "0.3")
    if version.split(".")[:1] != ["1"]:
        raise RpcError(VERSION_NOT_SUPPORTED, f"A2A version {version} is not supported: send the header {VERSION_HEADER}: 1.0")


class A2AEndpoint:
    """Its routes are added by :class:`~.surface.A2ASurface`, which makes this endpoint on their first request."""

    def __init__(self, runtime: AgentRuntime, guard: Guard, slots: StreamSlots, admission: Admission, meter: RequestMeter) -> None:
        self.runtime = runtime
        self.guard = guard
        self.slots = slots
        self.admission = admission
        self.config = runtime.config
        self.meter = meter

    async def card(self, request: web.Request) -> web.Response:
        # Public, as the protocol wants: the card says how to authenticate, the methods need it.
        url = a2a_url(self.guard.resource.resource(request))
        return json_response(as_json(agent_card(self.config, url)), headers={"Cache-Control": "max-age=300"})

    async def post(self, request: web.Request) -> web.StreamResponse:
        caller = await self.guard.admit(request)
        body = await self.guard.read_body(request)
        request_id: RequestId | None = None
        method = NO_METHOD
        try:
            payload = decode(body)
            method = method_of(payload)
            if isinstance(payload, list):
                raise RpcError(INVALID_REQUEST, "Invalid request: A2A takes no batches")
            message = check(payload, body)
            request_id, method = message.id, message.method
            self.meter.reading(method)
            if message.is_response or message.is_notification:
                raise RpcError(INVALID_REQUEST, "Invalid request: A2A methods are requests (with an id)")
            check_version(request)
            params = self._params(method, message.params)
            if method in STREAMING:
                return await self._stream(request, request_id, method, params, caller)
            result = await self._call(method, params, caller)
        except RpcError as exc:
            self.meter.count(method, exc.code)
            return json_response(error_reply(request_id, exc))
        self.meter.count(method)
        return json_response({"jsonrpc": "2.0", "id": request_id, "result": result})

    def _params(self, method: str, params: dict[str, Any]) -> Any:
        request_type = REQUEST_TYPES.get(method)
        if request_type is None:
            raise RpcError(-32601, f"Method not found: {method!r}")
        try:
            return json_format.ParseDict(params, request_type(), ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise RpcError(INVALID_PARAMS, f"Invalid params: {exc}") from None

    async def _call(self, method: str, params: Any, caller: Caller) -> dict[str, Any]:
        tasks = self.runtime.swarm.tasks
        try:
            if method == "SendMessage":
                record = await self._create(params, caller)
                if not params.configuration.return_immediately and not record.terminal:
                    with contextlib.suppress(TimeoutError):
                        record = await tasks.wait(record.id, SEND_WAIT_SECONDS)
                return {"task": as_json(task_of(record, self._history_length(params.configuration)))}
            if method == "GetTask":
                record = await self._get(params.id)
                return as_json(task_of(record, params.history_length if params.HasField("history_length") else None))
            if method == "CancelTask":
                record = await self._get(params.id)
                if record.terminal:
                    raise RpcError(TASK_NOT_CANCELABLE, f"Task {record.id!r} is {record.state.value}: it can no longer be canceled")
                return as_json(task_of(await tasks.cancel(record.id)))
            if method == "ListTasks":
                return await self._list(params)
        except (TimeoutError, nats.errors.Error) as exc:
            raise RpcError(INTERNAL_ERROR, f"the swarm's messaging did not answer ({type(exc).__name__}); retry later") from None
        if method == "GetExtendedAgentCard":
            raise RpcError(EXTENDED_CARD_NOT_CONFIGURED, "This agent has no extended card: its public card says everything")
        raise RpcError(PUSH_NOT_SUPPORTED, "Push notifications are not supported: use SendStreamingMessage or SubscribeToTask")

    @staticmethod
    def _history_length(configuration: a2a.SendMessageConfiguration) -> int | None:
        return configuration.history_length if configuration.HasField("history_length") else None

    async def _get(self, task_id: str) -> TaskRecord:
        if not TOKEN.fullmatch(task_id):
            raise not_found(task_id)
        record = await self.runtime.swarm.tasks.get(task_id)
        if record is None:
            raise not_found(task_id)
        return record

    async def _create(self, params: a2a.SendMessageRequest, caller: Caller) -> TaskRecord:
        message = params.message
        if not message.message_id:
            raise RpcError(INVALID_PARAMS, "Invalid params: message.messageId is required")
        if message.task_id:
            # Each message is one task here: a task takes no further messages (no multi-turn input).
            record = await self._get(message.task_id)
            raise RpcError(UNSUPPORTED_OPERATION, f"Task {record.id!r} takes no further messages: send a new message without taskId")
        try:
            task_input = input_of(message)
        except MessageRefused as exc:
            raise RpcError(CONTENT_TYPE_NOT_SUPPORTED if exc.unsupported else INVALID_PARAMS, f"Invalid message: {exc}") from None
        options = {**json_format.MessageToDict(params.metadata), **json_format.MessageToDict(message.metadata)}
        capability = self._capability(options.get("skill"))
        try:
            priority = Priority(options.get("priority", Priority.NORMAL.value))
        except ValueError:
            raise RpcError(INVALID_PARAMS, f"Invalid params: metadata.priority is one of {[p.value for p in Priority]}") from None
        context_id = message.context_id or None
        if context_id is not None and len(context_id) > 256:
            raise RpcError(INVALID_PARAMS, "Invalid params: message.contextId is longer than 256 characters")
        return await self.runtime.swarm.tasks.create(
            capability, task_input, priority=priority, task_id=task_id_of(caller.key, message.message_id), context_id=context_id
        )

    def _capability(self, skill: Any) -> str:
        skills = self.config.capabilities
        if skill is None:
            if not skills:
                raise RpcError(UNSUPPORTED_OPERATION, "This agent has no skills: it takes no tasks")
            return skills[0]
        if skill not in skills:
            raise RpcError(INVALID_PARAMS, f"Invalid params: metadata.skill must be one of this agent's skills {skills}")
        return str(skill)

    async def _list(self, params: a2a.ListTasksRequest) -> dict[str, Any]:
        size = params.page_size if params.HasField("page_size") else LIST_PAGE_MAX
        if not 1 <= size <= LIST_PAGE_MAX:
            raise RpcError(INVALID_PARAMS, f"Invalid params: pageSize is between 1 and {LIST_PAGE_MAX}")
        if params.page_token:
            raise RpcError(INVALID_PARAMS, "Invalid params: this agent answers one page (newest first); pageToken is not taken")
        states = STATES_OF.get(params.status) if params.status else None
        records = [
            r
            for capability in self.config.capabilities
            for r in (await self.runtime.swarm.tasks.list(capability=capability, limit=size)).tasks
            if (states is None or r.state in states) and (not params.context_id or context_of(r) == params.context_id)
        ]
        records.sort(key=lambda r: r.created_at, reverse=True)
        history = params.history_length if params.HasField("history_length") else 0
        page = [task_of(r, history) for r in records[:size]]
        return as_json(a2a.ListTasksResponse(tasks=page, page_size=size, total_size=len(page)))

    # -- streams

    async def _stream(
        self, request: web.Request, request_id: RequestId | None, method: str, params: Any, caller: Caller
    ) -> web.StreamResponse:
        """The task first, then each change of its state (and its result as an artifact) until it ends."""
        try:
            if method == "SendStreamingMessage":
                record = await self._create(params, caller)
            else:
                record = await self._get(params.id)
                if record.terminal:
                    raise RpcError(UNSUPPORTED_OPERATION, f"Task {record.id!r} is {record.state.value}: there is nothing to follow")
        except (TimeoutError, nats.errors.Error) as exc:
            raise RpcError(INTERNAL_ERROR, f"the swarm's messaging did not answer ({type(exc).__name__}); retry later") from None
        self.meter.count(method)
        cfg = self.config.mcp
        with self.slots.hold():
            self.admission.release_to_stream(request)  # following the task is a stream's, not work's
            stream = await SseStream.open(request, cfg.write_timeout_seconds)

            async def send(result: ProtoMessage) -> None:
                await stream.send(sse_event(encode({"jsonrpc": "2.0", "id": request_id, "result": as_json(result)})))

            try:
                await send(a2a.StreamResponse(task=task_of(record)))
                async with asyncio.timeout(cfg.timeout_seconds):
                    async for update in self._updates(record, stream, cfg.keepalive_seconds):
                        await send(update)
            except CLIENT_GONE:
                pass
            except (nats.errors.Error, RuntimeError) as exc:
                log.info("A2A stream of task %s ended: %s", record.id, exc)
            return stream.response

    async def _updates(self, first: TaskRecord, stream: SseStream, keepalive: float) -> AsyncIterator[a2a.StreamResponse]:
        """Status (and artifact) updates of a task from its entry in the tasks bucket, until a terminal state."""
        watcher: Any = await self.runtime.swarm.stores.tasks.watch(task_key(first.id))  # nats-py's watcher is untyped
        try:
            last = (first.state, first.attempts)
            while True:
                try:
                    entry = await watcher.updates(timeout=keepalive)
                except nats.errors.TimeoutError:
                    await stream.send(KEEPALIVE)
                    continue
                if entry is None or not entry.value:
                    continue  # the end of the initial values, or a delete
                record = TaskRecord.model_validate_json(entry.value)
                if (record.state, record.attempts) == last:
                    continue
                last = (record.state, record.attempts)
                if record.state is TaskState.SUCCEEDED:
                    yield a2a.StreamResponse(
                        artifact_update=a2a.TaskArtifactUpdateEvent(
                            task_id=record.id, context_id=context_of(record), artifact=result_artifact(record), last_chunk=True
                        )
                    )
                yield a2a.StreamResponse(
                    status_update=a2a.TaskStatusUpdateEvent(task_id=record.id, context_id=context_of(record), status=status_of(record))
                )
                if record.terminal:
                    return
        finally:
            with contextlib.suppress(nats.errors.Error):
                await watcher.stop()
