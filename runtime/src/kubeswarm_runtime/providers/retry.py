"""POST JSON with retries: backoff with jitter, honouring Retry-After; 4xx other than 408/409/429 is permanent."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..config import ModelConfig
from ..connection import backoff_delay
from ..metrics import RuntimeMetrics
from .base import PermanentTaskError

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_RETRY_AFTER_SECONDS = 60.0


class RetriesExhausted(Exception):
    """The service kept failing transiently; the task is retried later (nak), not dead-lettered."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    base_seconds: float
    max_seconds: float = 30.0


def retry_after(headers: Any) -> float | None:
    """Seconds a response asks us to wait (retry-after-ms, or Retry-After as seconds or an HTTP date)."""
    if ms := headers.get("retry-after-ms"):
        try:
            return min(float(ms) / 1000, MAX_RETRY_AFTER_SECONDS)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return min(max(parsed.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_SECONDS)


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    body: Any,
    *,
    headers: dict[str, str],
    policy: RetryPolicy,
    on_retry: Callable[[], None] = lambda: None,
) -> Any:
    """The decoded JSON (or text) of a 2xx answer."""
    last_error = ""
    for attempt in range(policy.max_retries + 1):
        wait: float | None = None
        try:
            async with session.post(url, json=body, headers=headers) as resp:
                if resp.status < 300:
                    if resp.content_type == "application/json":
                        return await resp.json()
                    return await resp.text()
                text = (await resp.text())[:500]
                if resp.status not in RETRYABLE_STATUS:
                    raise PermanentTaskError(f"{url} answered {resp.status}: {text}")
                last_error = f"{resp.status}: {text}"
                wait = retry_after(resp.headers)
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            last_error = repr(exc)
        if attempt < policy.max_retries:
            on_retry()
            await asyncio.sleep(wait if wait is not None else backoff_delay(attempt, policy.base_seconds, policy.max_seconds))
    raise RetriesExhausted(f"{url} failed {policy.max_retries + 1} times; last: {last_error}")


class JsonApi:
    """One HTTP JSON API of a provider: a lazily opened aiohttp session and the retry policy."""

    def __init__(self, url: str, max_retries: int, retry_base_seconds: float, timeout_seconds: float, on_retry: Callable[[], None]) -> None:
        self.url = url
        self.policy = RetryPolicy(max_retries, retry_base_seconds)
        self.timeout_seconds = timeout_seconds
        self.on_retry = on_retry
        self._session: aiohttp.ClientSession | None = None

    async def post(self, body: Any, headers: dict[str, str]) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
        return await post_json(self._session, self.url, body, headers=headers, policy=self.policy, on_retry=self.on_retry)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def json_api(provider: str, url: str, config: ModelConfig, metrics: RuntimeMetrics) -> JsonApi:
    """A provider's API with the model configuration's retries and timeout."""
    retries = metrics.llm_retries.labels(provider)
    return JsonApi(url, config.max_retries, config.retry_base_seconds, config.request_timeout_seconds, retries.inc)
