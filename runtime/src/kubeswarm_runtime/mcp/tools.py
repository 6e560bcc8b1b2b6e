"""The swarm's MCP tools (docs/mcp.md): pydantic inputs and outputs, calls into the runtime's services.

Schemas, descriptions and the ``tools/list`` pages are computed once; a call
validates its arguments, runs, and returns the output as a JSON-ready dict.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar

import nats
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..capabilities import CapabilityError
from ..config import NAME_PATTERN
from ..delegation import OUTSIDE, CallOrigin
from ..discoveries import Discovery
from ..names import Priority
from ..presence import AgentInfo
from ..runtime import AgentRuntime
from ..tasks import DeadLetterNotFound, NotReplayable, StoredLetter, TaskNotFound, TaskRecord, TaskState

log = logging.getLogger(__name__)

# A name that becomes one NATS subject token.
Token = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=128)]


class ToolFailure(Exception):
    """The tool ran and failed; the message is for the model calling it."""


class ToolInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ToolOutput(BaseModel):
    model_config = ConfigDict(frozen=True)


# -- inputs and outputs


class ShareDiscoveryInput(ToolInput):
    discovery_type: Token = Field(description="Kind of finding, e.g. 'pattern', 'bug', 'insight'. Subscribers filter on it.")
    content: Any = Field(description="The finding itself: text or any JSON value.")
    confidence: float = Field(default=1.0, ge=0.0, le=1.0, description="How sure you are, from 0 to 1.")
    agent_id: Token | None = Field(default=None, description="Author to record; defaults to this agent.")
    tags: list[str] = Field(default_factory=list, max_length=32, description="Free-form labels.")


class DiscoveryOutput(ToolOutput):
    discovery: Discovery


class ListDiscoveriesInput(ToolInput):
    agent_id: Token | None = Field(default=None, description="Only discoveries of this agent.")
    discovery_type: Token | None = Field(default=None, description="Only discoveries of this type.")
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0, description="Leave out discoveries less certain than this.")
    since_seq: int = Field(default=0, ge=0, description="Start after this sequence number (the last_seq of a previous call).")
    limit: int = Field(default=50, ge=1, le=500, description="At most this many discoveries.")


class DiscoveriesOutput(ToolOutput):
    discoveries: list[Discovery]
    last_seq: int = Field(description="Pass as since_seq to continue where this page ended.")
    more: bool = Field(default=False, description="Whether more discoveries follow last_seq.")


class ListAgentsInput(ToolInput):
    capability: Token | None = Field(default=None, description="Only agents offering this capability.")


class AgentsOutput(ToolOutput):
    agents: list[AgentInfo]


class GetAgentInfoInput(ToolInput):
    agent_id: Token | None = Field(default=None, description="Replica id from list_agents; omit for the agent serving this call.")


class AgentOutput(ToolOutput):
    agent: AgentInfo


class SendMessageInput(ToolInput):
    to: Token = Field(description="Agent name (one of its replicas receives it) or replica id.")
    body: Any = Field(description="Message content: text or any JSON value.")
    kind: Literal["command", "query"] = Field(
        default="command", description="'command': fire and forget. 'query': wait for the recipient's answer."
    )
    timeout_seconds: float = Field(default=30.0, gt=0, le=300, description="query: how long to wait for the answer.")


class MessageOutput(ToolOutput):
    message_id: str
    response: Any = Field(default=None, description="query: the recipient's answer.")


class RequestCapabilityInput(ToolInput):
    capability: Token = Field(description="Capability name, as listed in an agent's capabilities.")
    input: Any = Field(default=None, description="Input for the capability: text or any JSON value.")
    timeout_seconds: float = Field(default=30.0, gt=0, le=300, description="How long to wait for the answer.")


class CapabilityOutput(ToolOutput):
    result: Any


class CreateTaskInput(ToolInput):
    capability: Token = Field(description="Which capability's queue the task goes to.")
    input: Any = Field(default=None, description="Task input: text or any JSON value.")
    priority: Priority = Field(default=Priority.NORMAL, description="high tasks are served before normal, normal before low.")
    task_id: Token | None = Field(default=None, description="Idempotency key: creating the same id twice creates one task.")
    wait_seconds: float = Field(default=0.0, ge=0, le=600, description="Wait up to this long for the task to finish; 0 returns at once.")


class TaskOutput(ToolOutput):
    task: TaskRecord


class TaskIdInput(ToolInput):
    task_id: Token = Field(description="Task id returned by create_task.")


class ListTasksInput(ToolInput):
    state: TaskState | None = Field(default=None, description="Only tasks in this state.")
    capability: Token | None = Field(default=None, description="Only tasks of this capability.")
    limit: int = Field(default=50, ge=1, le=500, description="Read at most this many tasks (fewer are returned when filtered).")
    cursor: int = Field(default=0, ge=0, description="The next_cursor of the previous page; 0 starts from the newest.")


class TasksOutput(ToolOutput):
    tasks: list[TaskRecord]
    next_cursor: int | None = Field(default=None, description="Pass as cursor for the next (older) page; null: no more.")


class ListDeadLettersInput(ToolInput):
    capability: Token | None = Field(default=None, description="Only dead letters of this capability.")
    since_seq: int = Field(default=0, ge=0, description="Start after this sequence number (the last seq of a previous page).")
    limit: int = Field(default=50, ge=1, le=500, description="At most this many letters, oldest first.")


class DeadLettersOutput(ToolOutput):
    dead_letters: list[StoredLetter]
    waiting: dict[str, int] = Field(description="Dead letters waiting per capability, all of the swarm.")


class DeadLetterRefInput(ToolInput):
    task_id: Token | None = Field(default=None, description="The dead task's id.")
    seq: int | None = Field(default=None, ge=1, description="The letter's sequence number (list_dead_letters shows it); any letter.")

    @model_validator(mode="after")
    def _one(self) -> DeadLetterRefInput:
        if (self.task_id is None) == (self.seq is None):
            raise ValueError("give exactly one of task_id and seq")
        return self


class DeadLetterOutput(ToolOutput):
    dead_letter: StoredLetter


class PurgeDeadLettersInput(ToolInput):
    task_id: Token | None = Field(default=None, description="Remove this task's letter.")
    seq: int | None = Field(default=None, ge=1, description="Remove the letter with this sequence number.")
    capability: Token | None = Field(default=None, description="Remove every letter of this capability.")
    all: bool = Field(default=False, description="Remove every dead letter of the swarm (nothing else given).")

    @model_validator(mode="after")
    def _one(self) -> PurgeDeadLettersInput:
        if sum(v is not None and v is not False for v in (self.task_id, self.seq, self.capability, self.all or None)) != 1:
            raise ValueError("give exactly one of task_id, seq, capability and all=true")
        return self


class PurgedOutput(ToolOutput):
    purged: int


class BroadcastInput(ToolInput):
    body: Any = Field(description="Message content for every agent: text or any JSON value.")


# -- implementations


async def share_discovery(runtime: AgentRuntime, args: ShareDiscoveryInput, origin: CallOrigin) -> DiscoveryOutput:
    discovery = await runtime.swarm.discoveries.share(
        args.discovery_type,
        args.content,
        args.tags,
        confidence=args.confidence,
        agent=args.agent_id,
        idempotency_key=origin.idempotency_key,
    )
    return DiscoveryOutput(discovery=discovery)


async def list_discoveries(runtime: AgentRuntime, args: ListDiscoveriesInput, origin: CallOrigin) -> DiscoveriesOutput:
    page = await runtime.swarm.discoveries.page(agent=args.agent_id, type=args.discovery_type, since_seq=args.since_seq, limit=args.limit)
    found = [d for d in page.discoveries if d.confidence >= args.min_confidence]
    return DiscoveriesOutput(discoveries=found, last_seq=page.last_seq, more=page.more)


async def list_agents(runtime: AgentRuntime, args: ListAgentsInput, origin: CallOrigin) -> AgentsOutput:
    return AgentsOutput(agents=await runtime.swarm.agents.list(capability=args.capability))


async def get_agent_info(runtime: AgentRuntime, args: GetAgentInfoInput, origin: CallOrigin) -> AgentOutput | dict[str, Any]:
    if args.agent_id is None or args.agent_id == runtime.config.replica_id:
        return {"agent": runtime.info_data()}  # AgentOutput's JSON, built from data of ours without a model
    info = await runtime.swarm.agents.get(args.agent_id)
    if info is None:
        raise ToolFailure(f"no live replica {args.agent_id!r}; list_agents shows the live ones")
    return AgentOutput(agent=info)


async def send_message(runtime: AgentRuntime, args: SendMessageInput, origin: CallOrigin) -> MessageOutput:
    messages = runtime.swarm.messages
    if args.kind == "query":
        try:
            answer = await messages.query(args.to, args.body, timeout_seconds=args.timeout_seconds, depth=origin.depth)
        except TimeoutError:
            raise ToolFailure(f"{args.to!r} did not answer within {args.timeout_seconds}s") from None
        return MessageOutput(message_id=answer.correlation_id or answer.id, response=answer.body)
    sent = await messages.send(args.to, "command", args.body, message_id=origin.idempotency_key)
    return MessageOutput(message_id=sent.id)


async def request_capability(runtime: AgentRuntime, args: RequestCapabilityInput, origin: CallOrigin) -> CapabilityOutput:
    result = await runtime.swarm.capabilities.request(args.capability, args.input, timeout_seconds=args.timeout_seconds, depth=origin.depth)
    return CapabilityOutput(result=result)


async def create_task(runtime: AgentRuntime, args: CreateTaskInput, origin: CallOrigin) -> TaskOutput:
    tasks = runtime.swarm.tasks
    record = await tasks.create(
        args.capability, args.input, priority=args.priority, task_id=args.task_id or origin.idempotency_key, depth=origin.depth
    )
    if args.wait_seconds > 0 and not record.terminal:
        try:
            record = await tasks.wait(record.id, args.wait_seconds)
        except TimeoutError:
            record = await tasks.get(record.id) or record  # still running: report where it is
    return TaskOutput(task=record)


async def get_task(runtime: AgentRuntime, args: TaskIdInput, origin: CallOrigin) -> TaskOutput:
    record = await runtime.swarm.tasks.get(args.task_id)
    if record is None:
        raise TaskNotFound(args.task_id)
    return TaskOutput(task=record)


async def list_tasks(runtime: AgentRuntime, args: ListTasksInput, origin: CallOrigin) -> TasksOutput:
    page = await runtime.swarm.tasks.list(state=args.state, capability=args.capability, limit=args.limit, cursor=args.cursor)
    return TasksOutput(tasks=page.tasks, next_cursor=page.next_cursor)


async def cancel_task(runtime: AgentRuntime, args: TaskIdInput, origin: CallOrigin) -> TaskOutput:
    return TaskOutput(task=await runtime.swarm.tasks.cancel(args.task_id))


async def list_dead_letters(runtime: AgentRuntime, args: ListDeadLettersInput, origin: CallOrigin) -> DeadLettersOutput:
    dead = runtime.swarm.dead_letters
    letters = await dead.list(capability=args.capability, since_seq=args.since_seq, limit=args.limit)
    return DeadLettersOutput(dead_letters=letters, waiting=await dead.counts())


async def get_dead_letter(runtime: AgentRuntime, args: DeadLetterRefInput, origin: CallOrigin) -> DeadLetterOutput:
    return DeadLetterOutput(dead_letter=await runtime.swarm.dead_letters.get(task_id=args.task_id, seq=args.seq))


async def replay_dead_letter(runtime: AgentRuntime, args: DeadLetterRefInput, origin: CallOrigin) -> TaskOutput:
    return TaskOutput(task=await runtime.swarm.dead_letters.replay(task_id=args.task_id, seq=args.seq))


async def purge_dead_letters(runtime: AgentRuntime, args: PurgeDeadLettersInput, origin: CallOrigin) -> PurgedOutput:
    purged = await runtime.swarm.dead_letters.purge(task_id=args.task_id, seq=args.seq, capability=args.capability)
    return PurgedOutput(purged=purged)


async def broadcast(runtime: AgentRuntime, args: BroadcastInput, origin: CallOrigin) -> MessageOutput:
    return MessageOutput(message_id=(await runtime.swarm.messages.broadcast(args.body, message_id=origin.idempotency_key)).id)


# -- specs and the registry

InT = TypeVar("InT", bound=ToolInput)
OutT = TypeVar("OutT", bound=ToolOutput)


@dataclass(frozen=True)
class ToolSpec(Generic[InT, OutT]):
    name: str
    title: str
    description: str
    input: type[InT]
    output: type[OutT]
    # The output; or, where the output is made of our own data, the output's JSON data already (no model built).
    run: Callable[[AgentRuntime, InT, CallOrigin], Awaitable[OutT | dict[str, Any]]]
    read_only: bool = False
    idempotent: bool = False
    destructive: bool = False
    # May take seconds or longer: served as an SSE stream (keep-alives, resumable on 2025 sessions).
    slow: bool = False
    definition: dict[str, Any] = field(init=False, repr=False, compare=False)
    # The input of a call without arguments, validated once (None: the tool requires some); inputs are frozen.
    no_arguments: InT | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        definition = {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "inputSchema": self.input.model_json_schema(mode="validation"),
            "outputSchema": self.output.model_json_schema(mode="serialization"),
            "annotations": {
                "title": self.title,
                "readOnlyHint": self.read_only,
                "destructiveHint": self.destructive,
                "idempotentHint": self.idempotent or self.read_only,
                "openWorldHint": False,
            },
        }
        object.__setattr__(self, "definition", definition)
        try:
            no_arguments: InT | None = self.input.model_validate({})
        except ValidationError:
            no_arguments = None
        object.__setattr__(self, "no_arguments", no_arguments)

    async def call(self, runtime: AgentRuntime, arguments: dict[str, Any], origin: CallOrigin = OUTSIDE) -> dict[str, Any]:
        """Validate (pydantic ValidationError names the fields), run, and return the output as JSON data.

        Failures of the swarm become ToolFailure with a message for the model.
        """
        args = self.no_arguments if not arguments and self.no_arguments is not None else self.input.model_validate(arguments)
        if not runtime.started:
            raise ToolFailure("this agent is not connected to the swarm yet; retry in a few seconds")
        try:
            output = await self.run(runtime, args, origin)
        except ToolFailure:
            raise
        except TaskNotFound as exc:
            raise ToolFailure(f"no task {exc.args[0]!r}") from None
        except (DeadLetterNotFound, NotReplayable) as exc:
            raise ToolFailure(str(exc)) from None
        except CapabilityError as exc:
            raise ToolFailure(str(exc)) from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise ToolFailure(f"the swarm's messaging did not answer ({type(exc).__name__}); retry later") from None
        return output if isinstance(output, dict) else output.model_dump(mode="json")


SWARM_TOOLS: tuple[ToolSpec[Any, Any], ...] = (
    ToolSpec(
        "share_discovery",
        "Share a discovery",
        "Publish a finding to every agent of the swarm: it is stored (list_discoveries reads it back) and streamed to "
        "subscribers of /sse/discoveries. Use it when you learn something other agents should know.",
        ShareDiscoveryInput,
        DiscoveryOutput,
        share_discovery,
    ),
    ToolSpec(
        "list_discoveries",
        "List discoveries",
        "Read discoveries shared in the swarm, oldest first, filtered by author, type and minimum confidence. "
        "Page through them by passing the returned last_seq as since_seq while more is true.",
        ListDiscoveriesInput,
        DiscoveriesOutput,
        list_discoveries,
        read_only=True,
    ),
    ToolSpec(
        "list_agents",
        "List agents",
        "List the live agent replicas of the swarm with their role, capabilities and current load. "
        "Use it to find who can do something before request_capability or create_task.",
        ListAgentsInput,
        AgentsOutput,
        list_agents,
        read_only=True,
    ),
    ToolSpec(
        "get_agent_info",
        "Get agent info",
        "Describe one agent replica (role, capabilities, load, endpoint); without agent_id, the agent serving this call.",
        GetAgentInfoInput,
        AgentOutput,
        get_agent_info,
        read_only=True,
    ),
    ToolSpec(
        "send_message",
        "Send a message",
        "Send a direct message to an agent. kind='command' delivers it and returns; kind='query' waits for the "
        "agent's answer (up to timeout_seconds) and returns it as response.",
        SendMessageInput,
        MessageOutput,
        send_message,
        slow=True,
    ),
    ToolSpec(
        "request_capability",
        "Request a capability",
        "Ask one agent offering a capability to handle an input now and return its result (synchronous; load-balanced "
        "over the agents that offer it). For long or retry-worthy work prefer create_task.",
        RequestCapabilityInput,
        CapabilityOutput,
        request_capability,
        slow=True,
    ),
    ToolSpec(
        "create_task",
        "Create a task",
        "Queue a task for a capability: it is delivered at least once, retried on failure and dead-lettered after the "
        "last attempt. Returns the task record (id, state); set wait_seconds to wait for its result.",
        CreateTaskInput,
        TaskOutput,
        create_task,
        slow=True,
    ),
    ToolSpec(
        "get_task",
        "Get a task",
        "Read a task's state, attempts, result or error by its id.",
        TaskIdInput,
        TaskOutput,
        get_task,
        read_only=True,
    ),
    ToolSpec(
        "list_tasks",
        "List tasks",
        "List tasks by their last change, newest first, optionally only those in one state or of one capability. "
        "One page per call: pass the returned next_cursor as cursor for older tasks (a filtered page may be short).",
        ListTasksInput,
        TasksOutput,
        list_tasks,
        read_only=True,
    ),
    ToolSpec(
        "cancel_task",
        "Cancel a task",
        "Cancel a pending or running task; a finished task is returned unchanged.",
        TaskIdInput,
        TaskOutput,
        cancel_task,
        idempotent=True,
    ),
    ToolSpec(
        "list_dead_letters",
        "List dead letters",
        "List the tasks that died (out of deliveries, or a permanent error) and wait in the swarm's dead letters, oldest "
        "first, with their reason, attempts and input; and how many wait per capability. Page with since_seq.",
        ListDeadLettersInput,
        DeadLettersOutput,
        list_dead_letters,
        read_only=True,
    ),
    ToolSpec(
        "get_dead_letter",
        "Get a dead letter",
        "Read one dead letter by the dead task's id or by its sequence number.",
        DeadLetterRefInput,
        DeadLetterOutput,
        get_dead_letter,
        read_only=True,
    ),
    ToolSpec(
        "replay_dead_letter",
        "Replay a dead letter",
        "Queue a dead task again: a new task (new id, replay_of = the dead id, history = its earlier lives) with the same "
        "capability, priority and input; the letter leaves the dead letters. Replaying the same letter twice queues one task.",
        DeadLetterRefInput,
        TaskOutput,
        replay_dead_letter,
        idempotent=True,
    ),
    ToolSpec(
        "purge_dead_letters",
        "Purge dead letters",
        "Remove dead letters for good: one (task_id or seq), every letter of a capability, or all=true. Returns how many went.",
        PurgeDeadLettersInput,
        PurgedOutput,
        purge_dead_letters,
        destructive=True,
    ),
    ToolSpec(
        "broadcast",
        "Broadcast a message",
        "Send a message to every agent of the swarm at once (not stored; agents that are down miss it).",
        BroadcastInput,
        MessageOutput,
        broadcast,
    ),
)


class ToolRegistry:
    """The tools by name, and ``tools/list`` pages built once."""

    def __init__(self, tools: Sequence[ToolSpec[Any, Any]] = SWARM_TOOLS, page_size: int = 50) -> None:
        self.by_name = {tool.name: tool for tool in tools}
        definitions = [tool.definition for tool in tools]
        self.pages = [definitions[start : start + page_size] for start in range(0, len(definitions), page_size)] or [[]]

    def find(self, name: object) -> ToolSpec[Any, Any] | None:
        """The tool called ``name``; None for any other value, including one a client sent as a list or an object."""
        return self.by_name.get(name) if isinstance(name, str) else None

    @property
    def definitions(self) -> list[dict[str, Any]]:
        return [tool.definition for tool in self.by_name.values()]
