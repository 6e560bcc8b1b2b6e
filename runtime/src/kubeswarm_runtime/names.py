"""Subjects, stream, consumer and bucket names of one swarm (the NATS subjects in docs/runtime.md).

Pure functions of the subject prefix, so the operator (which creates a Swarm's
streams) and the runtime (which uses or creates them) agree on every name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


# Served in this order.
PRIORITIES: tuple[Priority, ...] = (Priority.HIGH, Priority.NORMAL, Priority.LOW)


@dataclass(frozen=True)
class SwarmNames:
    prefix: str

    @property
    def base(self) -> str:
        """The prefix as a stream/bucket name fragment (no dots)."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.prefix)

    # -- streams and buckets
    @property
    def tasks_stream(self) -> str:
        return f"{self.base}_TASKS"

    @property
    def discoveries_stream(self) -> str:
        return f"{self.base}_DISCOVERIES"

    @property
    def dlq_stream(self) -> str:
        return f"{self.base}_DLQ"

    @property
    def agents_bucket(self) -> str:
        return f"{self.base}_agents"

    @property
    def tasks_bucket(self) -> str:
        return f"{self.base}_tasks"

    @property
    def mcp_sessions_bucket(self) -> str:
        return f"{self.base}_mcp_sessions"

    @property
    def mcp_events_stream(self) -> str:
        return f"{self.base}_MCP_EVENTS"

    # -- subjects
    @property
    def announce(self) -> str:
        return f"{self.prefix}.agent.announce"

    def heartbeat(self, agent_id: str) -> str:
        return f"{self.prefix}.agent.{agent_id}.heartbeat"

    def events(self, agent_id: str) -> str:
        return f"{self.prefix}.agent.{agent_id}.events"

    @property
    def broadcast(self) -> str:
        return f"{self.prefix}.broadcast"

    @property
    def all_tasks(self) -> str:
        return f"{self.prefix}.tasks.>"

    def task(self, capability: str, priority: Priority = Priority.NORMAL) -> str:
        # Normal tasks sit on P.tasks.<capability> exactly; the other
        # priorities on a sub-token, so the three consumers never overlap.
        base = f"{self.prefix}.tasks.{capability}"
        return base if priority is Priority.NORMAL else f"{base}.{priority.value}"

    def task_consumer(self, capability: str, priority: Priority = Priority.NORMAL) -> str:
        return capability if priority is Priority.NORMAL else f"{capability}-{priority.value}"

    def task_result(self, task_id: str) -> str:
        return f"{self.prefix}.task.result.{task_id}"

    def capability(self, name: str) -> str:
        return f"{self.prefix}.capability.{name}"

    @property
    def all_discoveries(self) -> str:
        return f"{self.prefix}.discoveries.>"

    def discovery(self, agent: str, kind: str) -> str:
        return f"{self.prefix}.discoveries.{agent}.{kind}"

    def direct(self, agent_id: str) -> str:
        return f"{self.prefix}.msg.{agent_id}"

    @property
    def all_mcp_events(self) -> str:
        return f"{self.prefix}.mcp.events.>"

    def mcp_events(self, session: str, stream: str) -> str:
        """Events of one SSE stream of an MCP session (kept for resumption on any replica)."""
        return f"{self.prefix}.mcp.events.{session}.{stream}"

    def mcp_sse(self, replica: str, session: str = "*") -> str:
        """Messages for a legacy HTTP+SSE session, to the replica holding its stream."""
        return f"{self.prefix}.mcp.sse.{replica}.{session}"

    @property
    def all_dlq(self) -> str:
        return f"{self.prefix}.dlq.>"

    def dlq(self, capability: str) -> str:
        return f"{self.prefix}.dlq.{capability}"

    def max_deliveries_advisory(self, consumer: str) -> str:
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.tasks_stream}.{consumer}"


def task_key(task_id: str) -> str:
    """Key of a task's state in the tasks bucket."""
    return f"task.{task_id}"


def cancel_key(task_id: str) -> str:
    """Key of a cancellation request in the tasks bucket."""
    return f"cancel.{task_id}"
