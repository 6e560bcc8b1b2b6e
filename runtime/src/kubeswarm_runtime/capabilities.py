"""Capability request/reply: load-balanced over a queue group, with a circuit breaker per capability."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from . import tracing
from .codec import decode_json, encode_json
from .connection import NatsConnection
from .metrics import RuntimeMetrics
from .names import SwarmNames
from .providers.base import TaskContext, TaskHandler

log = logging.getLogger(__name__)

QUEUE_GROUP = "kubeswarm"
# The delegation depth of a request made by a model's tool call (docs/tools.md); absent means 0.
DEPTH_HEADER = "Kubeswarm-Depth"


def depth_of(msg: Msg) -> int:
    try:
        return max(int((msg.headers or {}).get(DEPTH_HEADER, 0)), 0)
    except ValueError:
        return 0


class CapabilityError(Exception):
    """A capability request did not produce a result."""


class CapabilityUnavailable(CapabilityError):
    """No agent offers the capability, or its breaker is open."""


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → half-open after ``cooldown``: one trial call decides."""

    def __init__(self, threshold: int = 5, cooldown: float = 30.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial_running = False

    def failed(self) -> None:
        self.failures += 1
        if self._trial_running or self.failures >= self.threshold:
            self.opened_at = time.monotonic()
        self._trial_running = False


class CapabilityService:
    """Serve this replica's capabilities and request others'."""

    def __init__(
        self,
        conn: NatsConnection,
        names: SwarmNames,
        metrics: RuntimeMetrics,
        *,
        agent: str = "",
        breaker_threshold: int = 5,
        breaker_cooldown: float = 30.0,
    ) -> None:
        self.conn = conn
        self.names = names
        self.metrics = metrics
        self.agent = agent
        self.breaker_threshold = breaker_threshold
        self.breaker_cooldown = breaker_cooldown
        self.breakers: dict[str, CircuitBreaker] = {}
        self._subs: list[Subscription] = []
        self._slots: asyncio.Semaphore | None = None
        self._answering: set[asyncio.Task[None]] = set()
        # Metric children looked up once (labels() takes a lock and a lookup on every call).
        self._requests_out = metrics.messages.labels("out", "capability_request")
        self._requests_in = metrics.messages.labels("in", "capability_request")
        self._breaker_shown: dict[str, str] = {}

    def breaker(self, capability: str) -> CircuitBreaker:
        if capability not in self.breakers:
            self.breakers[capability] = CircuitBreaker(self.breaker_threshold, self.breaker_cooldown)
        return self.breakers[capability]

    async def request(self, capability: str, payload: Any, *, timeout_seconds: float = 30.0, depth: int = 0) -> Any:
        """Ask one agent offering ``capability``; its result, or CapabilityError / CapabilityUnavailable.

        ``depth``: how many delegations deep the answer runs (the answering agent's tool loop bounds it).
        """
        breaker = self.breaker(capability)
        if not breaker.allow():
            raise CapabilityUnavailable(f"capability {capability!r} is failing; circuit open for up to {breaker.cooldown:.0f}s")
        self._requests_out.inc()
        headers = {DEPTH_HEADER: str(depth)} if depth else {}
        tracing.inject(headers)  # the answer is a child of the caller's span (a tool call of its model)
        try:
            reply = await self.conn.nc.request(
                self.names.capability(capability), encode_json(payload), timeout=timeout_seconds, headers=headers or None
            )
        except nats.errors.NoRespondersError:
            breaker.failed()
            self._breaker_gauge(capability)
            raise CapabilityUnavailable(f"no agent offers capability {capability!r}") from None
        except (TimeoutError, nats.errors.TimeoutError):
            breaker.failed()
            self._breaker_gauge(capability)
            raise CapabilityError(f"capability {capability!r} did not answer within {timeout_seconds}s") from None
        answer = decode_json(reply.data)
        if not answer.get("ok"):
            breaker.failed()
            self._breaker_gauge(capability)
            raise CapabilityError(f"capability {capability!r} failed: {answer.get('error')}")
        breaker.succeeded()
        self._breaker_gauge(capability)
        return answer.get("result")

    def _breaker_gauge(self, capability: str) -> None:
        state = self.breaker(capability).state
        if self._breaker_shown.get(capability) != state:  # the gauge is set on changes only
            self._breaker_shown[capability] = state
            self.metrics.breaker_open.labels(capability).set(0 if state == "closed" else 1)

    async def serve(self, capabilities: list[str], handler: TaskHandler, concurrency: int) -> None:
        """Answer requests for ``capabilities`` (one queue group per capability: one replica answers each), ``concurrency`` at once."""
        slots = self._slots = asyncio.Semaphore(concurrency)
        for capability in capabilities:

            async def take(msg: Msg, capability: str = capability) -> None:
                # nats-py runs a subscription's callbacks one after another: each answer runs in a task of its own,
                # and the callback waits only for a free slot (requests past ``concurrency`` wait in the subscription).
                await slots.acquire()
                answering = asyncio.create_task(self._answer(msg, capability, handler))
                self._answering.add(answering)
                answering.add_done_callback(self._answered)

            self._subs.append(await self.conn.subscribe_bounded(self.names.capability(capability), take, queue=QUEUE_GROUP))

    def _answered(self, answering: asyncio.Task[None]) -> None:
        self._answering.discard(answering)
        assert self._slots is not None
        self._slots.release()

    async def _answer(self, msg: Msg, capability: str, handler: TaskHandler) -> None:
        self._requests_in.inc()
        with tracing.answer_request(msg.headers, msg.subject, capability, self.agent) as span:
            try:
                payload = decode_json(msg.data) if msg.data else None
                result = await handler.handle(TaskContext(msg.reply or "request", capability, payload, 1, self.agent, depth=depth_of(msg)))
                answer: dict[str, Any] = {"ok": True, "result": result}
            except Exception as exc:
                answer = {"ok": False, "error": str(exc) or type(exc).__name__}
                tracing.failed(span, answer["error"])
        with contextlib.suppress(nats.errors.Error):  # the connection closed meanwhile: the caller times out
            await msg.respond(encode_json(answer))

    async def stop(self, grace: float = 0.0) -> None:
        """Take no more requests; answers in flight get up to ``grace`` seconds to finish, then are cancelled."""
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()
        if self._answering:
            _done, late = await asyncio.wait(set(self._answering), timeout=grace)
            for answering in late:
                answering.cancel()
            await asyncio.gather(*late, return_exceptions=True)
