"""Admission: a per-process bound on the HTTP requests doing work at once, decided before any of their work.

A request that reads or streams (GET, HEAD, OPTIONS: probes, metadata, SSE and WebSocket streams, which
``max_streams`` bounds) passes; any other (a POST's JSON-RPC, A2A, webhook; a DELETE) takes a place among
``max_in_flight`` and reserves its body's bytes (its Content-Length, else ``max_request_bytes``) among
``max_in_flight_bytes``. Past either: 429 with ``Retry-After`` and a JSON reason (a JSON-RPC error on a route
carrying JSON-RPC: :mod:`.refusal`); while the replica drains (SIGTERM): 503, so callers go to another replica.
Work that outlives its HTTP request keeps a place until it ends: a legacy ``/messages`` request answered on its SSE
stream keeps its request's (:meth:`Admission.keep`), each ``/ws/mcp`` message takes one of its own
(:meth:`Admission.enter`). An A2A stream that only follows a task gives its place back
(:meth:`Admission.release_to_stream`): streams are capped by ``max_streams``.
What grows with concurrent callers (handlers, bodies, replies held) is so bounded per process, whatever the
number of callers: they wait, the process does not grow.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import Counter

from ..config import McpConfig
from .jsonrpc import SERVER_BUSY, SERVER_UNAVAILABLE
from .refusal import Refused

PASSING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRY_AFTER_SECONDS = 1  # work is short: a place frees within a second at the rates a replica serves
REASONS = ("in_flight", "in_flight_bytes", "draining")
# Where a request's place is: "held" by the request, "kept" by work it left running, "released" by its stream.
PLACE = web.RequestKey("kubeswarm_admission_place", str)


class Admission:
    def __init__(self, config: McpConfig, draining: Callable[[], bool], rejected: Counter) -> None:
        self.max_in_flight = config.max_in_flight
        self.max_bytes = config.max_in_flight_bytes
        self.body_limit = config.max_request_bytes
        self.draining = draining
        self.in_flight = 0
        self.bytes = 0
        self._rejected = {reason: rejected.labels(reason) for reason in REASONS}

    def _refuse(self, status: type[web.HTTPException], reason: str, error: str, description: str, code: int) -> Refused:
        self._rejected[reason].inc()
        return Refused(status, error, description, code, RETRY_AFTER_SECONDS)

    def enter(self) -> bool:
        """Take a place for one message of a connection admitted already (a WebSocket's); False (counted) when none is free."""
        if self.in_flight >= self.max_in_flight:
            self._rejected["in_flight"].inc()
            return False
        self.in_flight += 1
        return True

    @staticmethod
    def keep(request: web.Request) -> None:
        """The request's place stays taken after its answer, by work it leaves running: :meth:`leave` when that ends."""
        if request.get(PLACE) == "held":
            request[PLACE] = "kept"

    def release_to_stream(self, request: web.Request) -> None:
        """The request's work is done and its answer now only follows a state, for long (A2A streams): it gives back
        its place, and ``max_streams`` caps it from now on, as it does the GET streams."""
        if request.get(PLACE) == "held":
            request[PLACE] = "released"
            self.in_flight -= 1

    def leave(self) -> None:
        self.in_flight -= 1

    def _reserve(self, request: web.Request) -> int:
        """The bytes the request's body may take (413 comes later, when it is read, for one past the limit)."""
        length = request.content_length
        return self.body_limit if length is None else min(length, self.body_limit)

    def take(self, request: web.Request) -> int:
        """Admit a request before any of its work (``routes.serving``, around each route's handler): the bytes it reserved, -1 for one that
        passes (GET, HEAD, OPTIONS), or :class:`Refused` raised (503 draining, 429 past a bound); :meth:`release` after it."""
        if request.method in PASSING_METHODS:
            return -1
        if self.draining():
            raise self._refuse(web.HTTPServiceUnavailable, "draining", "draining", "this replica is shutting down", SERVER_UNAVAILABLE)
        if self.in_flight >= self.max_in_flight:
            description = f"this replica serves at most {self.max_in_flight} requests at once"
            raise self._refuse(web.HTTPTooManyRequests, "in_flight", "overloaded", description, SERVER_BUSY)
        size = self._reserve(request)
        if self.bytes + size > self.max_bytes:
            description = f"this replica holds at most {self.max_bytes} bytes of requests at once"
            raise self._refuse(web.HTTPTooManyRequests, "in_flight_bytes", "overloaded", description, SERVER_BUSY)
        self.in_flight += 1
        self.bytes += size
        request[PLACE] = "held"
        return size

    def release(self, request: web.Request, size: int) -> None:
        """The request admitted by :meth:`take` (``size``: what it returned) was answered."""
        if size < 0:
            return
        if request[PLACE] == "held":
            self.in_flight -= 1
        self.bytes -= size
