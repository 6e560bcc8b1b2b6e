"""Per-swarm NATS isolation on a real nats-server in operator mode: an account per swarm, agents with creds files.

Two swarms in two namespaces: each one's work flows; every cross-swarm subscribe, publish, stream read, KV read,
consumer creation and task submission is refused to the other's identity and to a client without creds. A creds
rotation (the file replaced, the old JWT expiring) does not lose a task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from kubeswarm_operator.jetstream.connections import NatsPool
from kubeswarm_operator.jetstream.identity import NatsIdentities
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.config import NatsConfig, StreamsConfig
from kubeswarm_runtime.names import Priority, SwarmNames
from kubeswarm_runtime.natsauth import OPERATOR_INBOX, OPERATOR_PERMISSIONS, NatsAuthority, SwarmAccount, agent_permissions
from kubeswarm_runtime.providers.base import TaskContext
from kubeswarm_runtime.stores import task_consumer_config
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, NotFoundError

from tests.integration.runtime_helpers import agent_config, running, wait_for
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Tenant:
    account: SwarmAccount
    names: SwarmNames
    creds: Path

    def nats(self, url: str) -> NatsConfig:
        return NatsConfig(url=url, creds_file=self.creds, reconnect_base_seconds=0.05, reconnect_max_seconds=0.5)


@dataclass(frozen=True)
class SecuredNats:
    authority: NatsAuthority
    server: NatsServer
    alpha: Tenant
    beta: Tenant

    @property
    def url(self) -> str:
        return self.server.url


def _write_creds(path: Path, text: str) -> None:
    """As the kubelet updates a mounted Secret: the new file replaces the old one at once."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    os.replace(staged, path)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredNats]:
    authority = NatsAuthority.generate()
    tenants = {}
    for namespace, swarm in (("ns-a", "alpha"), ("ns-b", "beta")):
        account = authority.account(namespace, swarm)
        names = SwarmNames(f"ks.{namespace}.{swarm}")
        creds = tmp_path / f"{swarm}.creds"
        _write_creds(creds, authority.user_creds(account, f"{account.name}/agent", agent_permissions(names)))
        tenants[swarm] = Tenant(account, names, creds)
    jwts = {t.account.public_key: authority.account_jwt(t.account) for t in tenants.values()}
    server = NatsServer(tmp_path / "nats", config=authority.server_config(resolver_dir=None, accounts=jwts)).start()
    try:
        yield SecuredNats(authority, server, tenants["alpha"], tenants["beta"])
    finally:
        server.stop()


async def _connect(url: str, errors: list[str], creds: Path | None = None) -> Client:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(url, user_credentials=str(creds) if creds else None, error_cb=on_error, allow_reconnect=False)


@pytest_asyncio.fixture
async def agents(secured: SecuredNats) -> AsyncIterator[None]:
    """Each swarm's echo agent, connected with its own creds file."""
    configs = [
        agent_config(secured.url, t.names.prefix, "worker", ["work"], nats={"creds_file": str(t.creds)})
        for t in (secured.alpha, secured.beta)
    ]
    async with running(configs[0]), running(configs[1]):
        yield


@pytest.mark.usefixtures("agents")
async def test_each_swarm_works_and_no_swarm_reaches_the_other(secured: SecuredNats) -> None:
    alpha, beta = secured.alpha, secured.beta
    clients = {t.names.prefix: await SwarmClient.connect(t.nats(secured.url), t.names.prefix, sender="test") for t in (alpha, beta)}
    try:
        for prefix, client in clients.items():
            record = await client.tasks.wait((await client.tasks.create("work", {"prompt": prefix})).id, 20)
            assert record.state == "succeeded", record
        tasks_before = (await clients[alpha.names.prefix].conn.js.stream_info(alpha.names.tasks_stream)).state.messages

        errors: list[str] = []
        intruder = await _connect(secured.url, errors, beta.creds)
        try:
            js = intruder.jetstream()
            # Subscribe and publish on the other's subjects: refused by the server.
            await intruder.subscribe(f"{alpha.names.prefix}.>")
            await intruder.publish(alpha.names.task("work"), b'{"input": "stolen"}')
            await intruder.publish(f"$KV.{alpha.names.tasks_bucket}.task.x", b"forged")
            await intruder.flush()
            await wait_for(lambda: _async(len(errors) >= 3), what="three permission violations")
            assert all("permissions violation" in e.lower() for e in errors), errors
            # The other's streams, buckets and consumers do not exist for this identity: another account.
            with pytest.raises(NotFoundError):
                await js.stream_info(alpha.names.tasks_stream)
            with pytest.raises(NotFoundError):
                await js.get_msg(alpha.names.tasks_stream, 1)
            with pytest.raises(BucketNotFoundError):
                await js.key_value(alpha.names.tasks_bucket)
            with pytest.raises(NotFoundError):
                await js.add_consumer(alpha.names.tasks_stream, task_consumer_config(alpha.names, "work", Priority.NORMAL, StreamsConfig()))
            assert alpha.names.tasks_stream not in {s.config.name for s in await js.streams_info()}
        finally:
            await intruder.close()

        # Task submission through the client API, as the other swarm: refused, nothing reaches alpha's queue.
        with pytest.raises(nats.errors.Error):
            await beta_submits_to_alpha(secured)
        assert (await clients[alpha.names.prefix].conn.js.stream_info(alpha.names.tasks_stream)).state.messages == tasks_before

        # Without creds: no connection at all.
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await _connect(secured.url, [])
        # Each swarm still works.
        for client in clients.values():
            assert (await client.tasks.wait((await client.tasks.create("work", "again")).id, 20)).state == "succeeded"
    finally:
        for client in clients.values():
            await client.close()


@pytest.mark.usefixtures("agents")
async def test_the_operator_identity_manages_streams_and_reads_no_message(secured: SecuredNats, tmp_path: Path) -> None:
    alpha = secured.alpha
    async with swarm_client_for(secured, alpha) as client:
        await client.tasks.create("idle", {"prompt": "waiting"})  # no agent takes "idle": it stays in the stream
    creds = tmp_path / "operator.creds"
    _write_creds(creds, secured.authority.user_creds(alpha.account, "alpha/kubeswarm-operator", OPERATOR_PERMISSIONS))
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(secured.url, user_credentials=str(creds), inbox_prefix=OPERATOR_INBOX, error_cb=on_error, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=2)
        info = await js.stream_info(alpha.names.tasks_stream)  # backlogs: stream and consumer state
        assert info.state.messages >= 1
        assert {c.name for c in await js.consumers_info(alpha.names.tasks_stream)} >= {"work"}
        with pytest.raises(nats.errors.TimeoutError):
            await js.get_msg(alpha.names.tasks_stream, info.state.first_seq)
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request(f"$JS.API.CONSUMER.MSG.NEXT.{alpha.names.tasks_stream}.work", b'{"batch":1}', timeout=1)
        await nc.publish(alpha.names.task("work"), b"{}")
        await nc.flush()
        await wait_for(lambda: _async(len(errors) >= 3), what="three permission violations")
        assert all("permissions violation" in e.lower() for e in errors), errors
    finally:
        await nc.close()


@asynccontextmanager
async def swarm_client_for(secured: SecuredNats, tenant: Tenant) -> AsyncIterator[SwarmClient]:
    client = await SwarmClient.connect(tenant.nats(secured.url), tenant.names.prefix, sender="test")
    try:
        yield client
    finally:
        await client.close()


async def beta_submits_to_alpha(secured: SecuredNats) -> None:
    errors: list[str] = []
    nc = await _connect(secured.url, errors, secured.beta.creds)
    try:
        await nc.jetstream(timeout=2).publish(secured.alpha.names.task("work"), b'{"input": "stolen"}')
    finally:
        await nc.close()
        assert any("permissions violation" in e.lower() for e in errors), errors


async def _async(value: bool) -> bool:
    return value


class _Slow:
    """A handler that takes a while, so tasks are in flight when the connection is cut."""

    def __init__(self) -> None:
        self.done: list[str] = []

    async def handle(self, ctx: TaskContext) -> Any:
        await asyncio.sleep(0.3)
        self.done.append(ctx.task_id)
        return {"ok": ctx.task_id}

    async def close(self) -> None:
        return None


async def test_a_creds_rotation_loses_no_task(secured: SecuredNats, tmp_path: Path) -> None:
    """The agent's JWT expires while tasks flow; the file was rotated before, the agent reconnects with it."""
    alpha = secured.alpha
    lifetime = 3.0
    _write_creds(alpha.creds, secured.authority.user_creds(alpha.account, "alpha/agent", agent_permissions(alpha.names), lifetime=lifetime))
    expires = time.time() + lifetime
    config = agent_config(
        secured.url,
        alpha.names.prefix,
        "worker",
        ["work"],
        nats={"creds_file": str(alpha.creds), "creds_check_seconds": 0.2},
        concurrency=2,
    )
    handler = _Slow()
    client_creds = tmp_path / "client.creds"
    _write_creds(client_creds, secured.authority.user_creds(alpha.account, "alpha/client", agent_permissions(alpha.names)))
    async with running(config, handler) as agent:
        client = await SwarmClient.connect(NatsConfig(url=secured.url, creds_file=client_creds), alpha.names.prefix, sender="test")
        try:
            # Rotate: a fresh identity in the file, as the operator's rotation writes the Secret the pod mounts.
            _write_creds(alpha.creds, secured.authority.user_creds(alpha.account, "alpha/agent", agent_permissions(alpha.names)))
            created: list[str] = []
            while time.time() < expires + 2 * lifetime:
                created.append((await client.tasks.create("work", {"n": len(created)})).id)
                await asyncio.sleep(0.1)
            records = await asyncio.gather(*(client.tasks.wait(task_id, 30) for task_id in created))
            assert [r.state for r in records] == ["succeeded"] * len(created)
            assert set(handler.done) >= set(created)
            # The old identity expired and the agent came back with the rotated one.
            assert agent.metrics.nats_reconnects._value.get() >= 1
        finally:
            await client.close()


async def test_the_operator_replaces_its_connection_when_its_creds_are_renewed(tmp_path: Path) -> None:
    """Its user in a swarm's account is renewed at half life; the connection made with the old one is closed, not kept."""
    authority = NatsAuthority.generate()
    server = NatsServer(tmp_path / "nats", config=authority.server_config(resolver_dir=str(tmp_path / "jwt"))).start()
    pool = NatsPool(connect_timeout=3)
    try:
        identities = NatsIdentities(authority, server.url, pool)
        first = await identities.operator_target("lab", "research")  # pushes the account first
        conn = await pool.get(first)
        assert (await conn.js.account_info()).streams == 0  # the account exists, with JetStream
        account = authority.account("lab", "research")
        stale = authority.user_creds(account, "lab/research/kubeswarm-operator", OPERATOR_PERMISSIONS, now=time.time() - 60, lifetime=100)
        identities._operator_creds[account.public_key] = stale
        await pool.get(dataclasses.replace(first, creds=stale))
        renewed = await identities.operator_target("lab", "research")
        assert renewed.creds not in (first.creds, stale)
        assert (await pool.get(renewed)).connected
        assert dataclasses.replace(first, creds=stale) not in pool._connections
    finally:
        await pool.close()
        server.stop()
