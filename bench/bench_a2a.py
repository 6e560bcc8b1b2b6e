"""A2A ``SendMessage`` round trip against MCP ``create_task`` (waiting for the result), the same echo task, same run.

    .venv/bin/python -m bench.bench_a2a [--requests 300] [--rounds 5]

One agent (echo, one replica, no auth; the MCP tests' in-process agent) on a real nats-server serves both doors in this process; one
HTTP client (aiohttp, keep-alive) sends, one at a time, an A2A ``SendMessage`` (blocking: it answers
once the task ended) and an MCP 2026-07-28 ``tools/call`` of ``create_task`` with ``wait_seconds``,
alternating request by request so a shared machine's drifts hit both alike. Both queue one task that
the same worker runs, so the difference is what each protocol layer costs around the same task.
Prints the p50/p99 of each and the ratio A2A / MCP (median of the per-round ratios of p50).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import orjson
from kubeswarm_runtime.app import settle_heap

from tests.integration.test_mcp_support import mcp_agent
from tests.testbed.nats import NatsServer

MODERN = "2026-07-28"


def a2a_body(n: int) -> bytes:
    message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": f"echo {n}"}]}
    return orjson.dumps({"jsonrpc": "2.0", "id": n, "method": "SendMessage", "params": {"message": message}})


def mcp_body(n: int) -> bytes:
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    arguments = {"capability": "echo", "input": f"echo {n}", "wait_seconds": 30}
    return orjson.dumps(
        {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": "create_task", "arguments": arguments, "_meta": meta}}
    )


A2A_HEADERS = {"Content-Type": "application/json", "A2A-Version": "1.0"}
MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": MODERN,
    "Mcp-Method": "tools/call",
    "Mcp-Name": "create_task",
}


async def round_trip(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], done: Any) -> float:
    started = time.perf_counter()
    async with http.post(url, data=body, headers=headers) as response:
        text = await response.read()
    took = time.perf_counter() - started
    if response.status != 200 or not done(text):
        raise RuntimeError(f"{url}: {response.status} {text[:300]!r}")
    return took


def a2a_done(text: bytes) -> bool:
    return bool(orjson.loads(text)["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED")


def mcp_done(text: bytes) -> bool:
    # A slow tool answers as SSE: the last data line carries the result.
    line = text.strip().splitlines()[-1].removeprefix(b"data: ")
    return bool(orjson.loads(line)["result"]["structuredContent"]["task"]["state"] == "succeeded")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(requests: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-a2a-") as tmp:
        nats_server = NatsServer(Path(tmp)).start()
        try:
            async with mcp_agent(nats_server.url) as agent:
                settle_heap()
                ratios, a2a_all, mcp_all = await measure(agent.url, requests, rounds)
        finally:
            nats_server.stop()
    print(
        f"A2A SendMessage  p50 {statistics.median(a2a_all) * 1000:.2f} ms  p99 {percentile(a2a_all, 0.99) * 1000:.2f} ms\n"
        f"MCP create_task  p50 {statistics.median(mcp_all) * 1000:.2f} ms  p99 {percentile(mcp_all, 0.99) * 1000:.2f} ms\n"
        f"A2A / MCP round trip (median of per-round p50 ratios): {statistics.median(ratios):.2f}"
    )


async def measure(base: str, requests: int, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Per-round p50 ratios (A2A / MCP) and every round trip of each."""
    ratios: list[float] = []
    a2a_all: list[float] = []
    mcp_all: list[float] = []
    async with aiohttp.ClientSession() as http:
        for n in range(20):  # warm-up: connections, caches, consumers
            await round_trip(http, base + "/a2a", a2a_body(n), A2A_HEADERS, a2a_done)
            await round_trip(http, base + "/mcp", mcp_body(n), MCP_HEADERS, mcp_done)
        for round_no in range(rounds):
            a2a_times: list[float] = []
            mcp_times: list[float] = []
            for n in range(requests):
                # Alternate which goes first, so neither always follows the other.
                for which in ("a2a", "mcp") if (n + round_no) % 2 == 0 else ("mcp", "a2a"):
                    if which == "a2a":
                        a2a_times.append(await round_trip(http, base + "/a2a", a2a_body(n), A2A_HEADERS, a2a_done))
                    else:
                        mcp_times.append(await round_trip(http, base + "/mcp", mcp_body(n), MCP_HEADERS, mcp_done))
            ratio = statistics.median(a2a_times) / statistics.median(mcp_times)
            ratios.append(ratio)
            a2a_all += a2a_times
            mcp_all += mcp_times
            print(
                f"round {round_no + 1}: A2A p50 {statistics.median(a2a_times) * 1000:.2f} ms, "
                f"MCP p50 {statistics.median(mcp_times) * 1000:.2f} ms, ratio {ratio:.2f}",
                flush=True,
            )
    return ratios, a2a_all, mcp_all


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
