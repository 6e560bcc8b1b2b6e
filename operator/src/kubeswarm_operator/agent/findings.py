"""What the operator's periodic loops found about an Agent, for its reconcile to put into its status.

The Agent's status has one writer (its reconcile); the autoscaler, the AWS
secret sync and the HTTPRoute check report here instead and ask for a
reconcile, so two writers never take turns replacing each other's
conditions.  A condition given here replaces the reconcile's own of the
same type (e.g. ``SecretsReady`` with the AWS error code).
"""

from __future__ import annotations

from kubeswarm_runtime.resources import AgentStatus, Condition

from ..kube.conditions import stamp
from ..kube.kinds import Key
from .status import secrets_gate


class AgentFindings:
    def __init__(self) -> None:
        self._conditions: dict[Key, dict[str, Condition]] = {}
        self._backlog: dict[Key, int] = {}

    def set_condition(self, key: Key, cond: Condition) -> bool:
        """Record a condition; True if it changed (then the Agent needs a reconcile)."""
        mine = self._conditions.setdefault(key, {})
        if mine.get(cond.type) == cond:
            return False
        mine[cond.type] = cond
        return True

    def clear_condition(self, key: Key, type_: str) -> bool:
        return self._conditions.get(key, {}).pop(type_, None) is not None

    def set_backlog(self, key: Key, backlog: int | None) -> bool:
        if self._backlog.get(key) == backlog:
            return False
        if backlog is None:
            self._backlog.pop(key, None)
        else:
            self._backlog[key] = backlog
        return True

    def conditions(self, key: Key) -> list[Condition]:
        return list(self._conditions.get(key, {}).values())

    def backlog(self, key: Key) -> int | None:
        return self._backlog.get(key)

    def merge(self, key: Key, status: AgentStatus, old: AgentStatus | None, now: str) -> AgentStatus:
        """The reconcile's status with these conditions (same type: these win) and this backlog."""
        mine = self._conditions.get(key, {})
        if not mine and status.backlog == self.backlog(key):
            return status
        kept = [c for c in status.conditions if c.type not in mine]
        # Ready follows a SecretsReady given here too; stamped again, as it may have changed.
        merged = secrets_gate(kept + list(mine.values()))
        stamped = stamp(merged, old.conditions if old else [], status.observed_generation, now)
        return status.model_copy(update={"conditions": stamped, "backlog": self.backlog(key)})

    def forget(self, key: Key) -> None:
        self._conditions.pop(key, None)
        self._backlog.pop(key, None)
