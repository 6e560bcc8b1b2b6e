"""Between A2A's shapes (the a2a-sdk's protobuf types) and ours.

The Agent Card of an agent, a message as a task input, a task record as an A2A Task.

Pure: no HTTP, no NATS.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from a2a.types import a2a_pb2 as a2a
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT, TransportProtocol
from google.protobuf import json_format, struct_pb2

from .. import __version__
from ..config import RuntimeConfig
from ..resources import AuthMode
from ..tasks import TaskRecord, TaskState

# Our task states as A2A's. "failed" is a failed attempt with a retry scheduled: still working, to A2A.
TASK_STATES: dict[TaskState, a2a.TaskState] = {
    TaskState.PENDING: a2a.TASK_STATE_SUBMITTED,
    TaskState.RUNNING: a2a.TASK_STATE_WORKING,
    TaskState.FAILED: a2a.TASK_STATE_WORKING,
    TaskState.SUCCEEDED: a2a.TASK_STATE_COMPLETED,
    TaskState.DEAD: a2a.TASK_STATE_FAILED,
    TaskState.CANCELLED: a2a.TASK_STATE_CANCELED,
}
# What an A2A ListTasks status filter selects of ours.
STATES_OF: dict[a2a.TaskState, frozenset[TaskState]] = {
    a2a_state: frozenset(ours for ours, theirs in TASK_STATES.items() if theirs == a2a_state) for a2a_state in set(TASK_STATES.values())
}
MEDIA_TYPES = ["text/plain", "application/json"]
TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class MessageRefused(ValueError):
    """A message that cannot become a task; ``unsupported`` marks content this agent does not take (else a bad request)."""

    def __init__(self, reason: str, *, unsupported: bool = False) -> None:
        super().__init__(reason)
        self.unsupported = unsupported


def a2a_url(mcp_url: str) -> str:
    """The A2A endpoint beside an MCP endpoint (``…/mcp`` → ``…/a2a``): the same host, path prefix, ingress and gateway route."""
    return (mcp_url.removesuffix("/mcp") if mcp_url.endswith("/mcp") else mcp_url.rstrip("/")) + "/a2a"


def agent_card(config: RuntimeConfig, url: str) -> a2a.AgentCard:
    """The Agent Card: who this agent is, its skills (= its capabilities), where and how to call it (the MCP endpoint's auth)."""
    card = a2a.AgentCard(
        name=config.agent,
        description=(
            f"kubeswarm agent {config.agent!r} ({config.role}) of swarm {config.swarm!r} in namespace {config.namespace!r}. "
            "Each message becomes a task on the swarm's queue of the chosen skill (metadata.skill; default the first): "
            "delivered at least once, retried, dead-lettered after its last attempt."
        ),
        version=__version__,
        default_input_modes=MEDIA_TYPES,
        default_output_modes=MEDIA_TYPES,
        capabilities=a2a.AgentCapabilities(streaming=True, push_notifications=False),
        provider=a2a.AgentProvider(organization="kubeswarm", url="https://kubeswarm.io"),
    )
    card.supported_interfaces.append(
        a2a.AgentInterface(url=url, protocol_binding=TransportProtocol.JSONRPC.value, protocol_version=PROTOCOL_VERSION_CURRENT)
    )
    for capability in config.capabilities:
        card.skills.append(
            a2a.AgentSkill(
                id=capability,
                name=capability,
                description=f"Tasks of capability {capability!r}, handled by {config.agent} ({config.role}).",
                tags=[capability, config.role],
            )
        )
    mcp = config.mcp
    if mcp.auth is AuthMode.JWT:
        card.security_schemes["bearer"].http_auth_security_scheme.CopyFrom(
            a2a.HTTPAuthSecurityScheme(scheme="Bearer", bearer_format="JWT", description="An HS256 JWT signed with the swarm's key.")
        )
    elif mcp.auth is AuthMode.OIDC and mcp.issuer:
        card.security_schemes["oidc"].open_id_connect_security_scheme.CopyFrom(
            a2a.OpenIdConnectSecurityScheme(open_id_connect_url=mcp.issuer.rstrip("/") + "/.well-known/openid-configuration")
        )
    for name in card.security_schemes:
        requirement = a2a.SecurityRequirement()
        requirement.schemes[name].list.extend(mcp.required_scopes)
        card.security_requirements.append(requirement)
    return card


def task_id_of(caller_key: str, message_id: str) -> str:
    """The task a message creates: the same message id from the same caller is the same task (a retried send creates one task)."""
    digest = hashlib.sha256(f"{caller_key}\n{message_id}".encode()).hexdigest()
    return f"a2a-{digest[:32]}"


def input_of(message: a2a.Message) -> Any:
    """A message's parts as a task input: one text, one data value, or a list of both (files by URL)."""
    values: list[Any] = []
    for part in message.parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            values.append(part.text)
        elif kind == "data":
            values.append(json_format.MessageToDict(part.data))
        elif kind == "url":
            values.append({"url": part.url, "media_type": part.media_type or None, "filename": part.filename or None})
        elif kind == "raw":
            raise MessageRefused("file bytes are not taken: send the file as a url part", unsupported=True)
        else:
            raise MessageRefused("a part without content")
    if not values:
        raise MessageRefused("the message has no parts")
    if all(isinstance(v, str) for v in values):
        return "\n".join(values)
    return values[0] if len(values) == 1 else values


def parts_of(value: Any) -> list[a2a.Part]:
    """A task input or result as message parts: text for a string, a data part for any other JSON value."""
    if isinstance(value, str):
        return [a2a.Part(text=value)]
    return [a2a.Part(data=json_format.ParseDict(value, struct_pb2.Value()), media_type="application/json")]


def status_of(record: TaskRecord) -> a2a.TaskStatus:
    status = a2a.TaskStatus(state=TASK_STATES[record.state])
    status.timestamp.FromNanoseconds(int(record.updated_at * 1e9))
    if record.error and record.state in (TaskState.FAILED, TaskState.DEAD):
        status.message.CopyFrom(task_message(record, f"error-{record.attempts}", a2a.ROLE_AGENT, record.error))
    return status


def task_message(record: TaskRecord, name: str, role: a2a.Role, content: Any) -> a2a.Message:
    """A message of a task's own (its input, an error), with an id that names it within the task."""
    return a2a.Message(
        message_id=f"{record.id}-{name}", task_id=record.id, context_id=context_of(record), role=role, parts=parts_of(content)
    )


def context_of(record: TaskRecord) -> str:
    return record.context_id or record.id


def result_artifact(record: TaskRecord) -> a2a.Artifact:
    return a2a.Artifact(artifact_id=f"{record.id}-result", name="result", parts=parts_of(record.result))


def task_of(record: TaskRecord, history_length: int | None = None) -> a2a.Task:
    """A task record as an A2A Task: its state, the result as an artifact, the input as the history's one message."""
    task = a2a.Task(id=record.id, context_id=context_of(record), status=status_of(record))
    if record.state is TaskState.SUCCEEDED:
        task.artifacts.append(result_artifact(record))
    if history_length is None or history_length > 0:
        task.history.append(task_message(record, "input", a2a.ROLE_USER, record.input))
    meta: dict[str, Any] = {"capability": record.capability, "priority": record.priority.value, "attempts": record.attempts}
    if record.agent:
        meta["agent"] = record.agent
    if record.replay_of:
        meta["replayOf"] = record.replay_of
    task.metadata.update({"kubeswarm": meta})
    return task
