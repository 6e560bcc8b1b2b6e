"""A request refused before its work (admission, the per-caller rate limit, no NATS), answered in what its route speaks.

On a route carrying JSON-RPC the body is a JSON-RPC error (``id`` null: the request was not read): the official
MCP SDK client surfaces such a body to its caller, reason and wait included, where for any other body it reports
only ``-32603 "Server returned an error response"``. Elsewhere (webhooks, probes, metadata) a small problem
document. Either way the same HTTP status and ``Retry-After``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .jsonrpc import RpcError, encode, error_reply


def problem(
    status: type[web.HTTPException], error: str, description: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.HTTPException:
    """An HTTP refusal with a small JSON body (never internals)."""
    body = json.dumps({"error": error, "error_description": description})
    return status(text=body, content_type="application/json", headers=headers, **extra)


class Refused(Exception):
    """Raised by what refuses (admission, the rate limit, the route wrapper); ``routes.serving`` answers it in the route's shape."""

    def __init__(self, status: type[web.HTTPException], reason: str, description: str, code: int, retry_after_seconds: int) -> None:
        """``reason``: the problem's ``error`` (``overloaded``); ``code``: the JSON-RPC error's (``SERVER_BUSY``)."""
        super().__init__(description)
        self.status = status
        self.reason = reason
        self.message = f"{description}; retry after {retry_after_seconds} s"
        self.code = code
        self.retry_after_seconds = retry_after_seconds

    def as_problem(self) -> web.HTTPException:
        return problem(self.status, self.reason, self.message, {"Retry-After": str(self.retry_after_seconds)})

    def rpc_error(self) -> RpcError:
        """The refusal as a JSON-RPC error: the body of :meth:`as_rpc_error`, and a WebSocket message's answer."""
        return RpcError(self.code, self.message, {"reason": self.reason, "retryAfterSeconds": self.retry_after_seconds})

    def as_rpc_error(self) -> web.HTTPException:
        return self.status(
            text=encode(error_reply(None, self.rpc_error())).decode(),  # aiohttp deprecates a body for its exceptions
            content_type="application/json",
            headers={"Retry-After": str(self.retry_after_seconds)},
        )
