"""The operator's own NATS connections: one per (URL, credentials), shared by every Swarm and Agent using them.

The operator talks to JetStream over the client protocol with credentials
(the Swarm's ``credentialsSecretRef``, else the operator's own), never
through the unauthenticated monitoring port.  A connection that cannot be
made within the connect timeout raises :class:`NatsUnavailable`, which the
handlers report as ``NatsReady=False`` and retry with backoff; once made, a
connection reconnects on its own in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubeswarm_runtime.config import NatsConfig
from kubeswarm_runtime.connection import NatsConnection
from kubeswarm_runtime.metrics import RuntimeMetrics
from kubeswarm_runtime.resources import Swarm
from pydantic import SecretStr

CLIENT_NAME = "kubeswarm-operator"


class NatsUnavailable(Exception):
    """No NATS server answered; the message says where and why, for the NatsReady condition."""


@dataclass(frozen=True)
class NatsTarget:
    """Where to connect and as whom; hashable, so it keys the connection pool."""

    url: str
    # The text of a .creds file (from the Swarm's Secret); kept out of repr so it never reaches a log.
    creds: str | None = field(default=None, repr=False)
    creds_file: Path | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    inbox_prefix: str = "_INBOX"


def swarm_nats_url(swarm: Swarm | None, default_url: str) -> str:
    """The NATS URL a swarm's agents and the operator use: spec.nats.url, its clusterRef Service, or the default."""
    if swarm is None:
        return default_url
    nats = swarm.spec.nats
    if nats.url:
        return nats.url
    if nats.cluster_ref:
        ref = nats.cluster_ref
        return f"nats://{ref.name}.{ref.namespace or swarm.metadata.namespace}.svc:{ref.port}"
    return default_url


def connection(target: NatsTarget, connect_timeout: float) -> NatsConnection:
    """A runtime NATS connection to ``target``, not yet connected."""
    config = NatsConfig(
        url=target.url,
        user=target.user,
        password=SecretStr(target.password) if target.password else None,
        creds_file=target.creds_file,
        inbox_prefix=target.inbox_prefix,
        connect_timeout_seconds=connect_timeout,
    )
    return NatsConnection(config, RuntimeMetrics(), CLIENT_NAME, credentials=target.creds)


class NatsPool:
    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self._connections: dict[NatsTarget, NatsConnection] = {}
        self._locks: dict[NatsTarget, asyncio.Lock] = {}
        # A target that just failed fails again at once for a while: many Swarms and Agents may share it,
        # and each would otherwise wait out the connect timeout.
        self._failed: dict[NatsTarget, tuple[NatsUnavailable, float]] = {}

    async def get(self, target: NatsTarget) -> NatsConnection:
        """A connected connection to ``target``, or NatsUnavailable."""
        async with self._locks.setdefault(target, asyncio.Lock()):
            conn = self._connections.get(target)
            if conn is not None and not conn.nc.is_closed:
                if conn.connected:
                    return conn
                # Known but reconnecting: say so rather than wait on it.
                raise NatsUnavailable(f"connection to NATS at {target.url} lost; reconnecting")
            failed = self._failed.get(target)
            if failed is not None and time.monotonic() < failed[1]:
                raise failed[0]
            conn = connection(target, self.connect_timeout)
            try:
                # The runtime's connect retries forever (right for a pod); the operator gives up and reports.
                await asyncio.wait_for(conn.connect(), timeout=self.connect_timeout * 2)
            except TimeoutError:
                await conn.close()
                error = NatsUnavailable(f"no NATS server answered at {target.url} within {self.connect_timeout * 2:.0f}s")
                self._failed[target] = (error, time.monotonic() + self.connect_timeout * 2)
                raise error from None
            self._failed.pop(target, None)
            self._connections[target] = conn
            return conn

    async def discard(self, target: NatsTarget) -> None:
        """Close and forget the connection to ``target`` (its credentials were replaced)."""
        conn = self._connections.pop(target, None)
        self._failed.pop(target, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        for conn in self._connections.values():
            with contextlib.suppress(Exception):
                await conn.close()
        self._connections.clear()
