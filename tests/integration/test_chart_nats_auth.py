"""The chart's NATS as its pods run it: three servers from the rendered nats.conf and the auth files the operator
writes (from the settings the chart gives it), each on its own loopback address with the chart's ports.

Routes form only with the cluster's password; a route or a client without credentials is refused; an account the
operator pushes to one server reaches the others, and its JetStream works across them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from kubeswarm_operator.settings import OperatorSettings
from kubeswarm_runtime.names import SwarmNames
from kubeswarm_runtime.natsauth import NatsAuthority, agent_permissions
from nats.js import api

from tests.testbed.nats import CLUSTER_PATIENCE, healthy, monitor, until_served
from tests.testbed.procs import ManagedProcess, free_port, wheel_binary
from tests.unit.test_chart import nats_config, one, operator_env, render

pytestmark = pytest.mark.integration

SIZE = 3


@dataclass(frozen=True)
class ChartNats:
    authority: NatsAuthority
    hosts: list[str]
    client_port: int
    cluster_port: int
    monitor_port: int

    def url(self, index: int) -> str:
        return f"nats://{self.hosts[index]}:{self.client_port}"

    def monitor(self, index: int, endpoint: str) -> dict[str, Any]:
        return monitor(self.hosts[index], self.monitor_port, endpoint, timeout=2)


def _wait(probe: Callable[[], bool], what: str, timeout: float = CLUSTER_PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def chart_nats(tmp_path: Path) -> Iterator[ChartNats]:
    client, cluster, monitor = free_port(), free_port(), free_port()
    values = {"nats": {"clientPort": client, "clusterPort": cluster, "monitorPort": monitor}}
    docs = render(values, tmp_path)
    env = operator_env(docs)
    settings = OperatorSettings.model_validate({k.removeprefix("KUBESWARM_").lower(): v for k, v in env.items()})
    statefulset = one(docs, "StatefulSet")
    assert statefulset["spec"]["replicas"] == SIZE and len(settings.nats_routes) == SIZE
    hosts = [f"127.0.0.{index + 2}" for index in range(SIZE)]
    # The pods' DNS names stand for these addresses: the routes the operator writes name the same servers.
    routes = [route.replace(route.split(":")[0], hosts[i]) for i, route in enumerate(settings.nats_routes)]
    authority = NatsAuthority.generate()
    processes = []
    for index, host in enumerate(hosts):
        root = tmp_path / f"server-{index}"
        files = authority.server_files(resolver_dir=str(root / "data" / "jwt"), routes=routes)
        (root / "nats-auth").mkdir(parents=True)
        for key in ("auth.conf", "routes.conf"):
            (root / "nats-auth" / key).write_text(files[key])
        (root / "nats-config").mkdir()
        # Where a pod has its own volumes, these servers share a machine.
        config = nats_config(docs).replace("store_dir: /data", f"store_dir: {root / 'data'}")
        # (--cluster would do, but a route URL on the command line drops the configured route credentials.)
        config = config.replace(f"  port: {cluster}\n", f"  listen: {host}:{cluster}\n")
        (root / "nats-config" / "nats.conf").write_text(config.replace("/var/run/nats/nats.pid", str(root / "nats.pid")))
        argv = [
            str(wheel_binary("nats-server")),
            "--config",
            str(root / "nats-config" / "nats.conf"),
            # ... and where a pod has its own address, each listens on its own loopback one.
            "--addr",
            host,
        ]
        process = ManagedProcess(f"nats-{index}", argv, root / "nats.log", env={**os.environ, "SERVER_NAME": f"ks-kubeswarm-nats-{index}"})
        process.start()
        processes.append(process)
    nodes = ChartNats(authority, hosts, client, cluster, monitor)
    try:
        for index, process in enumerate(processes):
            process.wait_until(functools.partial(healthy, nodes.hosts[index], nodes.monitor_port, timeout=2), CLUSTER_PATIENCE, "healthy")
        yield nodes
    finally:
        for process in processes:
            process.stop()


def _route_connect_answer(host: str, port: int) -> str:
    """What a server's route port answers a route that presents no credentials."""
    with socket.create_connection((host, port), timeout=30) as sock:  # answered at once, unless the machine is busy
        sock.recv(4096)  # INFO
        sock.sendall(
            b'CONNECT {"verbose":false,"pedantic":false,"tls_required":false,"name":"intruder","cluster":"ks-kubeswarm-nats"}\r\nPING\r\n'
        )
        return sock.recv(4096).decode(errors="replace")


async def _work_across_servers(nodes: ChartNats, tmp_path: Path) -> int:
    system = tmp_path / "system.creds"
    system.write_text(nodes.authority.system_user_creds("test"))
    account = nodes.authority.account("lab", "research")
    sys_nc = await nats.connect(nodes.url(0), user_credentials=str(system), inbox_prefix="_INBOX_kubeswarm_operator")
    try:
        # Pushing the same JWT again is harmless: asked again if no answer came in time.
        update = functools.partial(sys_nc.request, "$SYS.REQ.CLAIMS.UPDATE", nodes.authority.account_jwt(account).encode(), timeout=5)
        answer = json.loads((await until_served(update, idempotent=True)).data)
        assert "error" not in answer, answer
    finally:
        await sys_nc.close()
    names = SwarmNames("ks.lab.research")
    creds = tmp_path / "agent.creds"
    creds.write_text(nodes.authority.user_creds(account, "lab/research/agent", agent_permissions(names)))
    # The account reached the other servers: a client of the last one can use it, with a stream on all three.
    nc = await nats.connect(nodes.url(SIZE - 1), user_credentials=str(creds))
    try:
        js = nc.jetstream()
        config = api.StreamConfig(name=names.tasks_stream, subjects=[names.all_tasks], num_replicas=SIZE)
        # Made again alike, and published again with the same id (dropped as a repeat), after an answer that timed out.
        await until_served(lambda: js.add_stream(config), idempotent=True)
        await until_served(lambda: js.publish(names.task("work"), b"{}", headers={"Nats-Msg-Id": "work"}), idempotent=True)
        return (await js.stream_info(names.tasks_stream)).state.messages
    finally:
        await nc.close()


def test_the_charts_nats_is_authenticated_on_every_port(chart_nats: ChartNats, tmp_path: Path) -> None:
    nodes = chart_nats
    names = [f"ks-kubeswarm-nats-{i}" for i in range(SIZE)]

    def routed(index: int) -> bool:
        return {r.get("remote_name") for r in nodes.monitor(index, "routez")["routes"]} >= set(names) - {names[index]}

    for index in range(SIZE):
        _wait(functools.partial(routed, index), f"{names[index]}'s routes to the others")
    assert "Authorization Violation" in _route_connect_answer(nodes.hosts[0], nodes.cluster_port)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(nats.connect(nodes.url(1), allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=30))
    assert asyncio.run(_work_across_servers(nodes, tmp_path)) == 1
