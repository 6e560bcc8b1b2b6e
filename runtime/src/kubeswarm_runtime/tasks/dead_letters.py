"""Dead letters as operations: list, show, replay and purge what waits in the swarm's dead-letter stream.

A letter is addressed by its task id or, for any letter (a malformed delivery has no task), by its
sequence number in the stream. Replaying queues the task again under a new id that links back
(``replay_of``) and carries every earlier life (``history``); the letter then leaves the stream.
The new id is derived from the letter, so a replay retried after a failure queues one task.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict, ValidationError

from ..connection import NatsConnection
from ..names import SwarmNames
from ..stores import read_stream
from .records import DeadLetter, PastAttempts, TaskMessage, TaskRecord
from .service import TaskService

# A letter looked up by task id is searched for among at most this many letters (its capability's, when known).
SEARCH_LIMIT = 100_000


class DeadLetterNotFound(LookupError):
    pass


class NotReplayable(ValueError):
    """A letter without a task (a malformed delivery): it can be read and purged, not replayed."""


class StoredLetter(BaseModel):
    """A dead letter as it waits in the stream."""

    model_config = ConfigDict(frozen=True)

    seq: int
    capability: str
    task_id: str | None
    reason: str
    attempts: int | None = None
    agent: str | None = None
    dead_at: float
    task: TaskMessage | None = None
    raw: str | None = None  # a malformed delivery: its first bytes as text


class DeadLetterService:
    def __init__(self, conn: NatsConnection, names: SwarmNames, tasks: TaskService) -> None:
        self.conn = conn
        self.names = names
        self.tasks = tasks
        self.subject_prefix = names.dlq("")

    def _letter(self, seq: int, subject: str, data: bytes) -> StoredLetter:
        capability = subject.removeprefix(self.subject_prefix)
        try:
            letter = DeadLetter.model_validate_json(data)
        except ValidationError:
            try:
                malformed: Any = json.loads(data)
            except ValueError:
                malformed = {}
            malformed = malformed if isinstance(malformed, dict) else {}
            return StoredLetter(
                seq=seq,
                capability=capability,
                task_id=None,
                reason=str(malformed.get("reason", "unreadable dead letter")),
                dead_at=float(malformed.get("dead_at", 0.0)),
                raw=str(malformed.get("raw", data[:1024].decode(errors="replace"))),
            )
        return StoredLetter(
            seq=seq,
            capability=capability,
            task_id=letter.task.id,
            reason=letter.reason,
            attempts=letter.attempts,
            agent=letter.agent,
            dead_at=letter.dead_at,
            task=letter.task,
        )

    def _of_msg(self, msg: Msg) -> StoredLetter:
        return self._letter(msg.metadata.sequence.stream, msg.subject, msg.data)

    async def list(self, *, capability: str | None = None, since_seq: int = 0, limit: int = 100) -> list[StoredLetter]:
        """Letters oldest first, after ``since_seq``, of one capability or all."""
        subjects = self.names.dlq(capability) if capability else self.names.all_dlq
        msgs = await read_stream(self.conn, self.names.dlq_stream, subjects, start_seq=since_seq + 1 if since_seq else None, limit=limit)
        return [self._of_msg(msg) for msg in msgs]

    async def get(self, *, task_id: str | None = None, seq: int | None = None) -> StoredLetter:
        """The letter at ``seq``, or the newest letter of ``task_id``; DeadLetterNotFound if there is none."""
        if seq is not None:
            try:
                raw = await self.conn.js.get_msg(self.names.dlq_stream, seq)
            except NotFoundError:
                raise DeadLetterNotFound(f"no dead letter #{seq}") from None
            assert raw.data is not None and raw.subject is not None
            return self._letter(seq, raw.subject, raw.data)
        assert task_id is not None
        record = await self.tasks.get(task_id)
        letters = await self.list(capability=record.capability if record else None, limit=SEARCH_LIMIT)
        for letter in reversed(letters):
            if letter.task_id == task_id:
                return letter
        raise DeadLetterNotFound(f"no dead letter of task {task_id!r}")

    async def replay(self, *, task_id: str | None = None, seq: int | None = None) -> TaskRecord:
        """Queue the letter's task again (a new id, linked to the dead one and its history), then remove the letter."""
        letter = await self.get(task_id=task_id, seq=seq)
        dead = letter.task
        if dead is None:
            raise NotReplayable(f"dead letter #{letter.seq} is a malformed delivery, not a task: it can only be purged")
        life = PastAttempts(
            task_id=dead.id, attempts=letter.attempts or 0, reason=letter.reason, agent=letter.agent or "", dead_at=letter.dead_at
        )
        new_id = "replay-" + hashlib.sha256(f"{self.names.dlq_stream}\n{letter.seq}\n{dead.id}".encode()).hexdigest()[:32]
        record = await self.tasks.create(
            dead.capability,
            dead.input,
            priority=dead.priority,
            task_id=new_id,
            context_id=dead.context_id,
            replay_of=dead.id,
            history=[*dead.history, life],
        )
        await self._delete(letter.seq)
        return record

    async def purge(self, *, task_id: str | None = None, seq: int | None = None, capability: str | None = None) -> int:
        """Remove one letter (by task id or seq), every letter of a capability, or (no argument) all; how many went."""
        if task_id is not None or seq is not None:
            letter = await self.get(task_id=task_id, seq=seq)
            return await self._delete(letter.seq)
        before = await self.counts()
        subject = self.names.dlq(capability) if capability else None
        await self.conn.js.purge_stream(self.names.dlq_stream, subject=subject)
        return before.get(capability, 0) if capability else sum(before.values())

    async def _delete(self, seq: int) -> int:
        try:
            await self.conn.js.delete_msg(self.names.dlq_stream, seq)
        except NotFoundError:
            return 0  # gone already (another replay or purge)
        return 1

    async def counts(self) -> dict[str, int]:
        """Letters waiting, per capability: one stream-info request, whatever the number of letters."""
        try:
            info = await self.conn.js.stream_info(self.names.dlq_stream, subjects_filter=self.names.all_dlq)
        except NotFoundError:
            return {}
        return {subject.removeprefix(self.subject_prefix): count for subject, count in (info.state.subjects or {}).items()}
