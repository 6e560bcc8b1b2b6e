"""Status conditions (metav1.Condition) as Agents and Swarms report them, and which of their changes deserve an Event (pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from kubeswarm_runtime.resources import AgentStatus, Condition, SwarmStatus

from .kinds import Manifest


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def now() -> str:
    """The time conditions are stamped with (seconds, UTC)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, ok: bool | None, reason: str, message: str) -> Condition:
    return Condition(type=type_, status="Unknown" if ok is None else str(ok), reason=reason, message=message)


def stamp(new: Sequence[Condition], old: Sequence[Condition], generation: int | None, now: str) -> list[Condition]:
    """Carry lastTransitionTime over from the old condition of the same type and status."""
    before = {c.type: c for c in old}
    out = []
    for cond in new:
        prev = before.get(cond.type)
        since = prev.last_transition_time if prev is not None and prev.status == cond.status else now
        out.append(cond.model_copy(update={"last_transition_time": since, "observed_generation": generation}))
    return out


def condition_events(old: Sequence[Condition], new: Sequence[Condition], quiet: Collection[str] = ()) -> list[Event]:
    """Events for condition changes a human would want in `kubectl describe`.

    A condition seen for the first time is news only when it reports a
    problem (Ready starts out False on every new object, so not that one);
    types in ``quiet`` are never news.
    """
    before = {c.type: c for c in old}
    events = []
    for cond in new:
        if cond.type in quiet:
            continue
        prev = before.get(cond.type)
        first_problem = prev is None and cond.status == "False" and cond.type != "Ready"
        if first_problem or (prev is not None and prev.status != cond.status):
            kind = "Normal" if cond.status == "True" else "Warning"
            events.append(Event(kind, cond.reason, f"{cond.type}: {cond.message}"))
    return events


def status_patch(status: AgentStatus | SwarmStatus) -> Manifest:
    """An Agent's or a Swarm's status as JSON for a merge patch; unset fields become null so stale values are removed."""
    return status.model_dump(mode="json", by_alias=True, exclude={"conditions"}) | {
        "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in status.conditions]
    }
