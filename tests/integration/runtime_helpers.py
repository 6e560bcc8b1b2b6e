"""Helpers of the runtime's integration tests: configs with short timings, condition waits, runtime processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats.errors
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.config import NatsConfig, RuntimeConfig
from kubeswarm_runtime.providers import TaskHandler
from kubeswarm_runtime.runtime import AgentRuntime

from tests.testbed.nats import until_served
from tests.testbed.procs import ManagedProcess, free_port

# Short timings so guarantees show within seconds.
FAST: dict[str, Any] = {
    "heartbeat_seconds": 0.5,
    "shutdown_grace_seconds": 5,
    "streams": {"ack_wait_seconds": 2.0, "retry_backoff_seconds": 0.05, "retry_backoff_max_seconds": 0.2, "max_deliver": 3},
    "nats": {"reconnect_base_seconds": 0.05, "reconnect_max_seconds": 0.5, "ping_interval_seconds": 1},
}


def unique_prefix() -> str:
    return f"ks.test.t{uuid.uuid4().hex[:10]}"


def agent_config(nats_url: str, prefix: str, agent: str, capabilities: list[str], **fields: Any) -> RuntimeConfig:
    merged: dict[str, Any] = {**FAST, **fields}
    merged["nats"] = {**FAST["nats"], "url": nats_url, **fields.get("nats", {})}
    merged["streams"] = {**FAST["streams"], **fields.get("streams", {})}
    return RuntimeConfig(
        agent=agent,
        subject_prefix=prefix,
        capabilities=capabilities,
        replica_id=fields.pop("replica_id", f"{agent}-{uuid.uuid4().hex[:6]}"),
        **{k: v for k, v in merged.items() if k != "replica_id"},
    )


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds. A NATS request of the condition timing out (a
    busy server, a group electing its leader) is a "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(nats.errors.TimeoutError):
            if await condition():
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def _started(config: RuntimeConfig, handler: TaskHandler | None) -> AgentRuntime:
    runtime = AgentRuntime(config, handler=handler)
    try:
        await runtime.start()
    except BaseException:
        with contextlib.suppress(TimeoutError, nats.errors.Error):
            await runtime.stop()
        raise
    return runtime


@asynccontextmanager
async def running(config: RuntimeConfig, handler: TaskHandler | None = None) -> AsyncIterator[AgentRuntime]:
    # The swarm's streams and buckets, made R3 on a fresh 3-node cluster, may still be electing their leaders: their
    # JetStream API times out (5 s a request) until then, so a start that timed out is done again (as the pod would be
    # restarted) until a deadline.
    runtime = await until_served(lambda: _started(config, handler), idempotent=True)
    try:
        yield runtime
    finally:
        await runtime.stop()


@asynccontextmanager
async def swarm_client(nats_url: str, prefix: str) -> AsyncIterator[SwarmClient]:
    # Opened again until a deadline while the swarm's new R3 streams elect their leaders (as for ``running``).
    sender = f"test-{uuid.uuid4().hex[:6]}"
    client = await until_served(lambda: SwarmClient.connect(NatsConfig(url=nats_url), prefix, sender=sender), idempotent=True)
    try:
        yield client
    finally:
        await client.close()


def config_env(config: RuntimeConfig) -> dict[str, str]:
    """The KUBESWARM_* environment that reproduces ``config`` in a child process."""
    env = {
        "KUBESWARM_AGENT": config.agent,
        "KUBESWARM_SUBJECT_PREFIX": config.subject_prefix,
        "KUBESWARM_REPLICA_ID": config.replica_id,
        "KUBESWARM_CAPABILITIES": ",".join(config.capabilities),
        "KUBESWARM_CONCURRENCY": str(config.concurrency),
        "KUBESWARM_HEARTBEAT_SECONDS": str(config.heartbeat_seconds),
        "KUBESWARM_SHUTDOWN_GRACE_SECONDS": str(config.shutdown_grace_seconds),
        "KUBESWARM_NATS__URL": config.nats.url,
        "KUBESWARM_MCP__PORT": str(free_port()),
        "KUBESWARM_METRICS_PORT": str(free_port()),
    }
    for section in ("streams", "nats"):
        for key, value in getattr(config, section).model_dump().items():
            if value is not None and key != "url":
                env[f"KUBESWARM_{section.upper()}__{key.upper()}"] = str(value)
    return env


def runtime_process(config: RuntimeConfig, log_dir: Path, extra_env: dict[str, str] | None = None) -> ManagedProcess:
    """An agent as its own process (``python -m kubeswarm_runtime``), as a pod runs it; ``extra_env``: more settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESWARM_")} | config_env(config) | (extra_env or {})
    process = ManagedProcess(config.replica_id, [sys.executable, "-m", "kubeswarm_runtime"], log_dir / f"{config.replica_id}.log", env=env)
    process.start()
    return process
