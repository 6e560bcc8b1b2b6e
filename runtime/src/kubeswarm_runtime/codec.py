"""JSON on the hot paths (task records, capability requests): orjson, with pydantic's rules as the fallback."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic_core


def encode_json(value: Any) -> bytes:
    """JSON as pydantic writes an ``Any`` field (models, dataclasses, datetimes, bytes...), several times quicker."""
    try:
        return orjson.dumps(value, default=pydantic_core.to_jsonable_python, option=orjson.OPT_UTC_Z)
    except (orjson.JSONEncodeError, TypeError, ValueError):
        # Beyond orjson (e.g. integers over 64 bits): pydantic's own serializer; unknown types as str().
        return pydantic_core.to_json(value, serialize_unknown=True)


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels in a decoded JSON value (iterative: no recursion)."""
    level: list[Any] = [value]
    for _ in range(limit + 1):
        level = [child for item in level for child in _children(item)]
        if not level:
            return False
    return True


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    return value if isinstance(value, list) else []


decode_json = orjson.loads
DecodeError = orjson.JSONDecodeError
