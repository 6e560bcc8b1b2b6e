"""The NATS identities the operator issues on its own NATS (docs/security.md): an account per swarm, creds per agent.

On the NATS it manages (the chart's, ``KUBESWARM_NATS_URL``) the operator holds the master secret every key
derives from, in the auth Secret the NATS servers mount. It pushes each swarm's account JWT to the servers'
resolver through its system-account user before anything of the swarm connects, connects to each swarm as its
own limited user there (streams and consumers only), and issues every agent a user of its swarm's account.
Credentials are never sent to any other URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

import nats.errors
from kubeswarm_runtime.names import SwarmNames
from kubeswarm_runtime.natsauth import (
    OPERATOR_INBOX,
    OPERATOR_PERMISSIONS,
    NatsAuthority,
    SwarmAccount,
    agent_permissions,
    creds_fresh,
)

from .connections import NatsPool, NatsTarget, NatsUnavailable

log = logging.getLogger(__name__)

CLAIMS_UPDATE = "$SYS.REQ.CLAIMS.UPDATE"
PUSH_TIMEOUT_SECONDS = 5.0


@dataclass
class NatsIdentities:
    authority: NatsAuthority
    url: str  # the NATS the agents are given: its agents get identities
    pool: NatsPool
    # An account pushed this recently is taken as present (servers keep it on disk and share it; the resync re-pushes).
    recheck_seconds: float = 60.0
    _pushed: dict[str, float] = field(default_factory=dict)
    _operator_creds: dict[str, str] = field(default_factory=dict, repr=False)
    _system_creds: str = field(default="", repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # How the operator itself reaches that NATS, where it differs (an operator run outside the cluster).
    connect_url: str = ""

    @property
    def _connect_url(self) -> str:
        return self.connect_url or self.url

    def manages(self, url: str) -> bool:
        """Identities are issued only for the operator's own NATS: no credential of ours goes to another URL."""
        return url == self.url

    def account(self, namespace: str, swarm: str) -> SwarmAccount:
        return self.authority.account(namespace, swarm)

    def agent_creds(self, namespace: str, swarm: str, agent: str, prefix: str) -> str:
        """A fresh identity for one agent: a user of its swarm's account, limited to its prefix."""
        account = self.account(namespace, swarm)
        return self.authority.user_creds(account, f"{account.name}/{agent}", agent_permissions(SwarmNames(prefix)))

    def _target(self, creds: str) -> NatsTarget:
        return NatsTarget(url=self._connect_url, creds=creds, inbox_prefix=OPERATOR_INBOX)

    async def _rotated(self, old: str, new: str) -> str:
        """``new`` creds in place of ``old``: the connection made with the old ones goes (its identity expires)."""
        if old:
            await self.pool.discard(self._target(old))
        return new

    async def _system_target(self) -> NatsTarget:
        if not creds_fresh(self._system_creds, self.authority.system_account.public_key, time.time()):
            self._system_creds = await self._rotated(self._system_creds, self.authority.system_user_creds("kubeswarm-operator"))
        return self._target(self._system_creds)

    async def operator_target(self, namespace: str, swarm: str) -> NatsTarget:
        """How the operator connects to one swarm: its own user in the swarm's account, after the account is pushed."""
        account = self.account(namespace, swarm)
        await self.ensure_account(account)
        creds = self._operator_creds.get(account.public_key, "")
        if not creds_fresh(creds, account.public_key, time.time()):
            new = self.authority.user_creds(account, f"{account.name}/kubeswarm-operator", OPERATOR_PERMISSIONS)
            creds = self._operator_creds[account.public_key] = await self._rotated(creds, new)
        return self._target(creds)

    def _recently_pushed(self, account: SwarmAccount) -> bool:
        pushed = self._pushed.get(account.public_key)
        return pushed is not None and time.monotonic() - pushed < self.recheck_seconds

    async def ensure_account(self, account: SwarmAccount) -> None:
        """Push the account's JWT to the servers' resolver (idempotent: the JWT is the same every time)."""
        if self._recently_pushed(account):
            return
        async with self._lock:
            if self._recently_pushed(account):  # pushed while this waited
                return
            conn = await self.pool.get(await self._system_target())
            try:
                reply = await conn.nc.request(CLAIMS_UPDATE, self.authority.account_jwt(account).encode(), timeout=PUSH_TIMEOUT_SECONDS)
            except (TimeoutError, nats.errors.Error) as exc:
                raise NatsUnavailable(f"NATS at {self._connect_url} did not take the account of swarm {account.name}: {exc}") from None
            answer = json.loads(reply.data or b"{}")
            if "error" in answer:
                raise NatsUnavailable(f"NATS at {self._connect_url} refused the account of swarm {account.name}: {answer['error']}")
            log.debug("account of swarm %s pushed to NATS", account.name)
            self._pushed[account.public_key] = time.monotonic()
