"""The NATS connection of a runtime: reconnect forever, readiness, and idempotent JetStream setup."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import nats
from nats.aio.client import Client, RawCredentials, Server
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from .config import NatsConfig
from .metrics import RuntimeMetrics

log = logging.getLogger(__name__)
Found = TypeVar("Found")

JS_API_TIMEOUT = 5.0
# The JetStream API's subject prefix (no domain); a few calls nats-py lacks are made on it directly.
JS_API_PREFIX = "$JS.API"
# Readiness re-checks JetStream at most this often.
JS_CHECK_INTERVAL = 2.0


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter in its upper half (never zero, never in lockstep)."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 16))
    return ceiling * random.uniform(0.5, 1.0)


# What may wait in one subscription any caller can fill (capability requests, direct messages, broadcasts)
# before its callback takes it; past either bound the client drops what comes (a slow consumer), counted.
SUBSCRIPTION_PENDING_MESSAGES = 4096
SUBSCRIPTION_PENDING_BYTES = 8 * 1024 * 1024

# How long a write keeps retrying through a JetStream leader election or a reconnect.
PUBLISH_PATIENCE_SECONDS = 30.0


async def publish_patiently(
    js: JetStreamContext,
    subject: str,
    data: bytes,
    *,
    headers: dict[str, str] | None = None,
    msg_ttl: float | None = None,
    fail_fast: tuple[type[Exception], ...] = (),
) -> bool:
    """Publish to a stream, confirmed, retrying failures; False once patience runs out.

    Right after a node loss (or a stream's creation on a cluster) the stream has no
    leader for a moment and answers nothing: a retry, not an error, is the answer.
    Errors in ``fail_fast`` (the caller can act on them) are raised at once.
    """
    deadline = time.monotonic() + PUBLISH_PATIENCE_SECONDS
    attempt = 0
    while True:
        try:
            await js.publish(subject, data, headers=headers, msg_ttl=msg_ttl)
            return True
        except fail_fast:
            raise
        except (TimeoutError, nats.errors.Error) as exc:
            if time.monotonic() > deadline:
                log.warning("giving up publishing to %s: %s", subject, exc)
                return False
            log.info("publishing to %s failed (%s); retrying", subject, exc)
            await asyncio.sleep(backoff_delay(attempt, 0.1, 2.0))
            attempt += 1


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None  # between the kubelet's swaps, or not mounted yet: keep what we have


class NatsUnreachable(ConnectionError):
    """No NATS server answered within the caller's patience."""


class NatsConnection:
    def __init__(self, config: NatsConfig, metrics: RuntimeMetrics, name: str, *, credentials: str | None = None) -> None:
        """``credentials``: the text of a .creds file held in memory (the operator reads it from a Secret), besides ``config``."""
        self.config = config
        self.metrics = metrics
        self.name = name
        self._credentials = credentials
        self.nc = Client()
        self._js: JetStreamContext | None = None
        self._js_checked_at = 0.0
        self._js_usable = False
        self._closing = False
        self._slow_consumer_drops = metrics.buffer_dropped.labels("nats_subscription")
        self._slow_sids_logged: set[int] = set()
        self._creds_watch: asyncio.Task[None] | None = None
        self._last_error: Exception | None = None  # what the client reported last (why a connect keeps failing)

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "connect() first"
        return self._js

    @property
    def server_info(self) -> dict[str, Any]:
        """The INFO of the server connected to (its cluster, the servers clients may use)."""
        return dict(self.nc._server_info)

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    async def connect(self, *, give_up_after: float | None = None) -> None:
        """Connect, retrying with backoff until a server answers (a pod may start before NATS).

        ``give_up_after`` seconds (a CLI's patience): then NatsUnreachable instead of retrying on.
        """
        attempt = 0
        deadline = None if give_up_after is None else time.monotonic() + give_up_after
        while True:
            try:
                # nats-py itself retries a first connect for ever (max_reconnect_attempts=-1): bound it from outside.
                async with asyncio.timeout(None if deadline is None else max(0.0, deadline - time.monotonic())):
                    await self.nc.connect(**self._options())
                break
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    reason = str(self._last_error or exc) or f"no answer within {give_up_after:g}s"
                    raise NatsUnreachable(f"NATS at {self.config.url} is not reachable ({reason})") from None
                delay = backoff_delay(attempt, self.config.reconnect_base_seconds, self.config.reconnect_max_seconds)
                log.warning("NATS at %s not reachable (%s); retrying in %.1fs", self.config.url, exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
        self._js = self.nc.jetstream(prefix=JS_API_PREFIX, timeout=JS_API_TIMEOUT)
        self.metrics.nats_connected.set(1)
        log.info("connected to NATS %s", self.nc.connected_url.netloc if self.nc.connected_url else self.config.url)
        if self.config.creds_file is not None and self._creds_watch is None:
            self._creds_watch = asyncio.create_task(self._watch_creds(self.config.creds_file))

    async def _watch_creds(self, path: Path) -> None:
        """Reconnect with a rotated creds file before the old identity expires.

        The client reads the file on every connect; the server cuts a connection whose JWT expired, and nats-py
        does not reconnect after that error, so a changed file (the kubelet updating the mounted Secret) means a
        reconnect now, while the old identity is still valid.
        """
        seen = _digest(path)
        while True:
            await asyncio.sleep(self.config.creds_check_seconds)
            current = _digest(path)
            if current is not None and current != seen:
                seen = current
                log.info("NATS credentials rotated; reconnecting with them")
                await self.nc.force_reconnect()

    @property
    def closed_unexpectedly(self) -> bool:
        """Closed for good without close() (e.g. the server ended an expired identity): only a restart recovers."""
        return self.nc.is_closed and not self._closing and self._js is not None

    def _options(self) -> dict[str, Any]:
        cfg = self.config
        options: dict[str, Any] = {
            "servers": cfg.servers,
            "name": self.name,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "connect_timeout": cfg.connect_timeout_seconds,
            "ping_interval": cfg.ping_interval_seconds,
            "max_outstanding_pings": cfg.max_outstanding_pings,
            "reconnect_to_server_handler": self._pick_server,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "error_cb": self._on_error,
            "closed_cb": self._on_closed,
            "lame_duck_mode_cb": self._on_lame_duck,
            "inbox_prefix": cfg.inbox_prefix,
        }
        if cfg.user:
            options["user"] = cfg.user
        if cfg.password:
            options["password"] = cfg.password.get_secret_value()
        if cfg.token:
            options["token"] = cfg.token.get_secret_value()
        if cfg.creds_file:
            options["user_credentials"] = str(cfg.creds_file)
        if self._credentials:
            options["user_credentials"] = RawCredentials(self._credentials)
        return options

    def _pick_server(self, servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
        # The least-tried server next, after a jittered backoff growing with its failures.
        server = min(servers, key=lambda s: s.reconnects)
        return server, backoff_delay(server.reconnects, self.config.reconnect_base_seconds, self.config.reconnect_max_seconds)

    async def _on_disconnected(self) -> None:
        self.metrics.nats_connected.set(0)
        self._js_usable = False
        if not self._closing:
            log.warning("disconnected from NATS")

    async def _on_reconnected(self) -> None:
        self.metrics.nats_reconnects.inc()
        self.metrics.nats_connected.set(1)
        log.info("reconnected to NATS %s", self.nc.connected_url.netloc if self.nc.connected_url else "")

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            # Reported once per dropped message, from the connection's read loop: counted, logged once per subscription.
            self._slow_consumer_drops.inc()
            if exc.sid not in self._slow_sids_logged:
                self._slow_sids_logged.add(exc.sid)
                log.warning("dropping messages on %s: its subscription is full (a flood, or a stuck handler)", exc.subject)
            return
        if not isinstance(self._last_error, nats.errors.AuthorizationError):  # the reason a reset that follows it hides
            self._last_error = exc
        log.warning("NATS error: %s", exc or type(exc).__name__)

    async def subscribe_bounded(self, subject: str, cb: Callable[[Msg], Awaitable[None]], queue: str = "") -> Subscription:
        """A subscription whose waiting messages are bounded (SUBSCRIPTION_PENDING_*), for subjects any caller can fill."""
        return await self.nc.subscribe(
            subject,
            queue=queue,
            cb=cb,
            pending_msgs_limit=SUBSCRIPTION_PENDING_MESSAGES,
            pending_bytes_limit=SUBSCRIPTION_PENDING_BYTES,
        )

    async def _on_closed(self) -> None:
        self.metrics.nats_connected.set(0)

    async def _on_lame_duck(self) -> None:
        # The server is going away and will close us within its grace period;
        # the client then reconnects to another server of the pool.
        log.warning("NATS server entered lame-duck mode; will move to another server")

    async def jetstream_usable(self) -> bool:
        """Connected and JetStream answering (cached briefly: readiness probes are frequent)."""
        if not self.connected:
            return False
        now = time.monotonic()
        if now - self._js_checked_at > JS_CHECK_INTERVAL:
            self._js_checked_at = now
            try:
                await self.js.account_info()
                self._js_usable = True
            except (TimeoutError, nats.errors.Error):
                self._js_usable = False
        return self._js_usable

    async def close(self) -> None:
        """Drain subscriptions and pending publishes, then close."""
        self._closing = True
        if self._creds_watch is not None:
            self._creds_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._creds_watch
        if self.nc.is_connected:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await self.nc.drain()
        if not self.nc.is_closed:
            await self.nc.close()
        self.metrics.nats_connected.set(0)

    # -- idempotent JetStream setup: existing settings (a Swarm's) win

    async def ensure_stream(self, config: api.StreamConfig) -> None:
        assert config.name
        name = config.name
        await found_or_made(lambda: self.js.stream_info(name), lambda: self.js.add_stream(config))

    async def ensure_consumer(self, stream: str, config: api.ConsumerConfig) -> None:
        assert config.durable_name
        durable = config.durable_name
        await found_or_made(lambda: self.js.consumer_info(stream, durable), lambda: self.js.add_consumer(stream, config))

    async def ensure_kv(self, config: api.KeyValueConfig) -> KeyValue:
        return await found_or_made(lambda: self.js.key_value(config.bucket), lambda: self.js.create_key_value(config))


async def found_or_made(find: Callable[[], Awaitable[Found]], make: Callable[[], Awaitable[Found]]) -> Found:
    """What ``find`` finds, made by ``make`` first if missing. A refused make is another replica's concurrent one (or
    one with other settings): what is there is used; if nothing is, the refusal was about the config itself (no peers
    for placement, a limit the server will not take) and is raised, not a "not found" that would hide it."""
    try:
        return await find()
    except NotFoundError:
        pass
    try:
        return await make()
    except BadRequestError as refused:
        try:
            return await find()
        except NotFoundError:
            raise refused from None
