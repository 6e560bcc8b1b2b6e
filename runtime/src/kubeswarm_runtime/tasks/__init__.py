"""Tasks with delivery guarantees over a JetStream work queue.

:class:`TaskService` is the client side (create, get, list, cancel, wait);
:class:`TaskWorker` consumes the queues of a replica's capabilities.

Guarantees: at-least-once (explicit ack; a crash means redelivery after
``ack_wait``), retries with a growing nak delay, dead letters after the last
delivery or on a permanent error, dedup by ``Nats-Msg-Id`` (= task id),
priorities served high first, cancellation of pending and running tasks.

The parts: ``records`` (the shapes), ``service`` (the client side),
``pulling``, ``watch``, ``outcomes``, ``committing`` and ``worker`` (the
consuming side, talking through :class:`~.outcomes.TaskOutcomes`).
"""

from .dead_letters import DeadLetterNotFound, DeadLetterService, NotReplayable, StoredLetter
from .records import TERMINAL_STATES, DeadLetter, PastAttempts, TaskMessage, TaskNotFound, TaskRecord, TaskState, encode_record
from .service import TaskService
from .worker import TaskWorker

__all__ = [
    "TERMINAL_STATES",
    "DeadLetter",
    "DeadLetterNotFound",
    "DeadLetterService",
    "NotReplayable",
    "PastAttempts",
    "StoredLetter",
    "TaskMessage",
    "TaskNotFound",
    "TaskRecord",
    "TaskService",
    "TaskState",
    "TaskWorker",
    "encode_record",
]
