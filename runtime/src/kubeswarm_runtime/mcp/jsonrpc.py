"""JSON-RPC 2.0 framing: decode and check one message, typed errors, encode replies.

The bottom layer of the MCP package: knows nothing of MCP methods or HTTP.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from ..codec import nested_deeper_than

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Defined by the MCP specification (its reserved -32020..-32099 range).
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022
# Ours, outside the JSON-RPC reserved range.
SERVER_BUSY = -31000
TOOL_FAILED = -31001
RATE_LIMITED = -31002
SERVER_UNAVAILABLE = -31003  # the replica drains, or is not connected to the swarm: retry later or on another

RequestId = str | int
# Deepest nesting of arrays and objects in params: far beyond any tool's schema, well within what the
# stored records can be read back with (pydantic's JSON parser stops at about 200 levels).
MAX_PARAMS_DEPTH = 64


class RpcError(Exception):
    """An error answer; ``message`` is shown to the client, so it never carries internals."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class RpcMessage(NamedTuple):
    """A request (``id`` set), a notification, or a client's response to us (``is_response``).

    A named tuple: one is built per message, and a tuple is the cheapest immutable record to build.
    """

    method: str
    params: dict[str, Any]
    id: RequestId | None
    is_notification: bool
    is_response: bool = False


def decode(body: bytes | str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RpcError(PARSE_ERROR, "Parse error: the body is not valid JSON") from None


def check(obj: Any, body: bytes | None = None) -> RpcMessage:
    """One decoded JSON-RPC message, or RpcError(INVALID_REQUEST/INVALID_PARAMS); ``body``: the bytes it was decoded from."""
    if not isinstance(obj, dict):
        raise RpcError(INVALID_REQUEST, "Invalid request: a JSON-RPC message is a JSON object")
    if obj.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'Invalid request: "jsonrpc" must be "2.0"')
    request_id = obj.get("id")
    has_id = "id" in obj
    if has_id and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):  # a tuple: faster than a union
        raise RpcError(INVALID_REQUEST, 'Invalid request: "id" must be a string or an integer')
    if "method" not in obj and has_id and ("result" in obj or "error" in obj):
        return RpcMessage("", {}, request_id, False, True)
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, 'Invalid request: "method" must be a non-empty string')
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, 'Invalid params: "params" must be an object (named parameters)')
    # Each level of nesting opens with a bracket: a body with few of them (the usual call) needs no walk. Counted in
    # one pass (what translate deletes), not two of bytes.count: a third of their cost.
    shallow = body is not None and len(body) - len(body.translate(None, b"{[")) <= MAX_PARAMS_DEPTH
    if not shallow and nested_deeper_than(params, MAX_PARAMS_DEPTH):
        raise RpcError(INVALID_PARAMS, f"Invalid params: arrays and objects nest deeper than {MAX_PARAMS_DEPTH} levels")
    return RpcMessage(method, params, request_id, not has_id)  # positional: half the cost of keywords


def too_many_in_flight(where: str, limit: int) -> RpcError:
    """-31000 for a request past the ``limit`` of requests running at once on one connection, session or replica."""
    return RpcError(SERVER_BUSY, f"Too many requests in flight on this {where} (limit {limit})")


def id_of(obj: Any) -> RequestId | None:
    """The id of a message that failed checks, if it has a usable one (for the error reply)."""
    if isinstance(obj, dict):
        value = obj.get("id")
        if isinstance(value, str | int) and not isinstance(value, bool):
            return value
    return None


def result_reply(request_id: RequestId | None, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_reply(request_id: RequestId | None, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.body()}


def encode(obj: Any) -> bytes:
    return orjson.dumps(obj)


def invalid_params(exc: ValidationError, *, prefix: str = "") -> RpcError:
    """-32602 naming each offending field, e.g. ``discovery_type: Field required``."""
    problems = [f"{prefix}{'.'.join(map(str, err['loc'])) or '(params)'}: {err['msg']}" for err in exc.errors()]
    return RpcError(INVALID_PARAMS, "Invalid params: " + "; ".join(problems), {"fields": [p.split(":")[0] for p in problems]})
