"""``mcp.processes``: one replica's MCP port served by two processes (real nats-server, real processes).

Both answer on the one port; only the first runs tasks (each once); the metrics port shows both; a serving
process that dies is started again, and one whose first process is gone leaves.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubeswarm_runtime.tasks import TaskState

from tests.integration.runtime_helpers import agent_config, runtime_process, unique_prefix, wait_for
from tests.integration.test_mcp_support import modern_call
from tests.testbed.nats import NatsServer
from tests.testbed.procs import ManagedProcess

pytestmark = pytest.mark.integration

SERVED_BY_THE_SECOND = 'kubeswarm_mcp_requests_total{code="",method="tools/call",outcome="ok",process="1"}'
SERVED_BY_THE_FIRST = 'kubeswarm_mcp_requests_total{code="",method="tools/call",outcome="ok"}'


def serving_processes(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


class Replica:
    def __init__(self, process: ManagedProcess, http: aiohttp.ClientSession) -> None:
        assert process.env is not None
        self.process = process
        self.http = http
        self.url = f"http://127.0.0.1:{process.env['KUBESWARM_MCP__PORT']}/mcp"
        self.metrics_url = f"http://127.0.0.1:{process.env['KUBESWARM_METRICS_PORT']}/metrics"

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """A tools/call on a connection of its own (so the kernel spreads the calls over the processes)."""
        body, headers = modern_call("tools/call", {"name": tool, "arguments": arguments})
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
            fresh.post(self.url, json=body, headers={**headers, "Accept": "application/json"}) as response,
        ):
            assert response.status == 200, await response.text()
            answer: dict[str, Any] = (await response.json(content_type=None))["result"]["structuredContent"]
            return answer

    async def samples(self) -> dict[str, float]:
        async with self.http.get(self.metrics_url) as response:
            text = await response.text()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line and not line.startswith("#")}

    async def both_serving(self) -> bool:
        try:
            return (await self.samples()).get('kubeswarm_nats_connected{process="1"}') == 1.0
        except aiohttp.ClientError:
            return False


@asynccontextmanager
async def two_processes(nats_url: str, log_dir: Path) -> AsyncIterator[Replica]:
    config = agent_config(nats_url, unique_prefix(), "front", ["echo"])
    process = runtime_process(config, log_dir, {"KUBESWARM_MCP__PROCESSES": "2", "KUBESWARM_MCP__RATE_LIMIT_PER_SECOND": "0"})
    try:
        async with aiohttp.ClientSession() as http:
            replica = Replica(process, http)
            await wait_for(replica.both_serving, timeout=60, what="both processes serving")
            yield replica
    finally:
        process.stop()


async def test_both_processes_answer_on_the_port_and_only_the_first_runs_tasks(nats_server: NatsServer, tmp_path: Path) -> None:
    async with two_processes(nats_server.url, tmp_path) as replica:
        seen: list[dict[str, Any]] = []

        async def each_process_answered() -> bool:
            seen.append((await replica.call("get_agent_info", {}))["agent"])
            samples = await replica.samples()
            return samples.get(SERVED_BY_THE_FIRST, 0) > 0 and samples.get(SERVED_BY_THE_SECOND, 0) > 0

        await wait_for(each_process_answered, timeout=30, what="calls answered by each process")
        # Either process describes the same replica (the second mirrors the first's presence).
        assert {(agent["id"], agent["started_at"]) for agent in seen} == {(seen[0]["id"], seen[0]["started_at"])}

        ids = [f"t-{uuid.uuid4().hex[:8]}" for _ in range(12)]
        answers = await asyncio.gather(
            *(
                replica.call("create_task", {"capability": "echo", "input": {"n": i}, "task_id": ids[i], "wait_seconds": 30})
                for i in range(12)
            )
        )
        assert all(answer["task"]["state"] == TaskState.SUCCEEDED and answer["task"]["attempts"] == 1 for answer in answers)
        samples = await replica.samples()
        assert samples['kubeswarm_tasks_total{capability="echo",outcome="succeeded"}'] == 12
        assert not any(name.startswith("kubeswarm_tasks_total") and 'process="1"' in name for name in samples)


async def test_a_serving_process_is_started_again_and_leaves_with_the_first(nats_server: NatsServer, tmp_path: Path) -> None:
    async with two_processes(nats_server.url, tmp_path) as replica:
        [second] = serving_processes(replica.process.pid)
        os.kill(second, signal.SIGKILL)

        async def another_serving() -> bool:
            children = serving_processes(replica.process.pid)
            return bool(children) and children != [second] and await replica.both_serving()

        await wait_for(another_serving, timeout=30, what="a new serving process")
        [third] = serving_processes(replica.process.pid)
        os.kill(replica.process.pid, signal.SIGKILL)  # the first process alone, as a crash would

        async def third_gone() -> bool:
            return not alive(third)

        await wait_for(third_gone, timeout=30, what="the serving process to leave")
