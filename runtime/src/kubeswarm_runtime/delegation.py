"""Who calls a swarm tool: an MCP client from outside, or a task's tool loop (docs/tools.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CallOrigin:
    """``idempotency_key`` names one call of one task (task id and step): a task run again after a crash makes
    the same calls with the same keys, so what they create (a task, a discovery, a message id) is created once.
    ``depth`` is the delegation depth that what the call creates (tasks, capability requests, queries) carries.
    """

    idempotency_key: str | None = None
    depth: int = 0


OUTSIDE = CallOrigin()
