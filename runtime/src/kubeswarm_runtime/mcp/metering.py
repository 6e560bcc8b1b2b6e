"""``kubeswarm_mcp_requests_total``: one count per JSON-RPC request handled, whatever the transport.

Labels (docs/metrics.md): ``method`` is a method this server knows of, ``unknown`` for any other
name, ``none`` for a request refused before its method was read; ``outcome`` is ``ok`` or
``error``; ``code`` is the JSON-RPC error code of an error answer (``-31001`` for a tool result
with ``isError``), the HTTP status of a refusal that carries no JSON-RPC answer (401, 403, 413,
429, 503, ...), and empty when ok. Label children are cached per (method, code), so counting
costs a set and a dict look-up and the increment.

The transports count their JSON-RPC answers; refusals they raise as HTTP errors are counted by
the wrapper of each route that carries JSON-RPC (``routes.serving``) through :meth:`RequestMeter.serving` and
:meth:`RequestMeter.served`, which learn through a context variable whether the request was
counted already and, once read, its method.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

NO_METHOD = "none"
UNKNOWN_METHOD = "unknown"
OK = 0  # the code of a success, exported as an empty label


@dataclass
class HttpRequestState:
    """What the meter knows of the HTTP request being served."""

    method: str = NO_METHOD
    counted: bool = False


_CURRENT: contextvars.ContextVar[HttpRequestState | None] = contextvars.ContextVar("kubeswarm_mcp_http_request", default=None)


def method_of(obj: Any) -> str:
    """The method named by a decoded message that failed its checks, else ``none``."""
    method = obj.get("method") if isinstance(obj, dict) else None
    return method if isinstance(method, str) else NO_METHOD


class RequestMeter:
    def __init__(self, counter: Counter, methods: Iterable[str]) -> None:
        self._counter = counter
        self._methods = frozenset(methods) | {NO_METHOD}
        self._children: dict[tuple[str, int], Any] = {}

    def count(self, method: str, code: int = OK) -> None:
        """Count one request: ``code`` is OK, a JSON-RPC error code or an HTTP status."""
        if method not in self._methods:
            method = UNKNOWN_METHOD
        child = self._children.get((method, code))
        if child is None:
            outcome, label = ("ok", "") if code == OK else ("error", str(code))
            child = self._children[method, code] = self._counter.labels(method, outcome, label)
        child.inc()
        if (current := _CURRENT.get()) is not None:
            current.counted = True

    @staticmethod
    def reading(method: str) -> None:
        """The HTTP request being served carries ``method``: a refusal from now on is counted under it."""
        if (current := _CURRENT.get()) is not None:
            current.method = method

    @staticmethod
    def serving() -> tuple[HttpRequestState, contextvars.Token[HttpRequestState | None]]:
        """Start watching an HTTP request for a refusal nothing counts (:meth:`served` with its final status)."""
        state = HttpRequestState()
        return state, _CURRENT.set(state)

    def served(self, state: HttpRequestState, token: contextvars.Token[HttpRequestState | None], status: int) -> None:
        """The request ended with ``status`` (0: the client left): a status >= 400 nothing counted yet is counted."""
        _CURRENT.reset(token)
        if status >= 400 and not state.counted:
            self.count(state.method, status)
