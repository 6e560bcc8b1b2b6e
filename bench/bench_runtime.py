"""Runtime benchmarks, side by side with raw nats-py on the same nats-server; prints ratios.

    .venv/bin/python bench/bench_runtime.py [--tasks 5000] [--requests 2000]

- task throughput: echo handler, 1 replica, vs a raw pull-and-ack loop (target: >= 0.6 of raw)
- capability request/reply p50/p99 vs raw request/reply (target: p99 within 1.5x)
- idle RSS of one runtime process (target: <= 60 MiB)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.config import NatsConfig, RuntimeConfig
from kubeswarm_runtime.runtime import AgentRuntime
from nats.aio.msg import Msg
from nats.js import api

from tests.testbed.nats import NatsServer
from tests.testbed.procs import ManagedProcess, free_port

CONCURRENCY = 64


async def raw_throughput(url: str, count: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="RAW", subjects=["raw.>"], retention=api.RetentionPolicy.WORK_QUEUE)
    payload = b'{"id": "x", "capability": "raw", "input": {"n": 1}, "created_at": 0}'
    await asyncio.gather(*[await js.publish_async("raw.tasks", payload) for _ in range(count)])
    sub = await js.pull_subscribe("raw.tasks", durable="raw", stream="RAW")
    done = 0
    started = 0.0
    while done < count:
        for msg in await sub.fetch(CONCURRENCY, timeout=5):
            started = started or time.perf_counter()  # steady state: from the first message on
            await msg.ack()
            done += 1
    elapsed = time.perf_counter() - started
    await nc.close()
    return count / elapsed


async def runtime_throughput(url: str, count: int) -> float:
    prefix = "ks.bench.tput"
    client = await SwarmClient.connect(NatsConfig(url=url), prefix, sender="bench")
    for start in range(0, count, 500):
        await asyncio.gather(*(client.tasks.create("echo", {"n": i}) for i in range(start, min(start + 500, count))))
    runtime = AgentRuntime(
        RuntimeConfig(agent="bench", subject_prefix=prefix, capabilities=["echo"], concurrency=CONCURRENCY, nats={"url": url})
    )
    results = 0
    started = 0.0
    all_done = asyncio.Event()

    async def on_result(_msg: Msg) -> None:
        nonlocal results, started
        started = started or time.perf_counter()  # steady state: from the first result on
        results += 1
        if results == count:
            all_done.set()

    await client.conn.nc.subscribe(client.names.task_result("*"), cb=on_result)
    await runtime.start()
    await all_done.wait()
    elapsed = time.perf_counter() - started
    await runtime.stop()
    await client.close()
    return count / elapsed


async def latencies(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    for _ in range(100):  # warm up
        await call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def raw_request_reply(url: str, count: int) -> list[float]:
    responder, requester = await nats.connect(url), await nats.connect(url)

    async def answer(msg: Msg) -> None:
        await msg.respond(msg.data)

    await responder.subscribe("raw.rr", queue="q", cb=answer)
    samples = await latencies(lambda: requester.request("raw.rr", b'{"n": 1}', timeout=5), count)
    await responder.close()
    await requester.close()
    return samples


async def runtime_request_reply(url: str, count: int) -> list[float]:
    prefix = "ks.bench.rr"
    runtime = AgentRuntime(RuntimeConfig(agent="rr", subject_prefix=prefix, capabilities=["rr"], nats={"url": url}))
    await runtime.start()
    client = await SwarmClient.connect(NatsConfig(url=url), prefix, sender="bench")
    samples = await latencies(lambda: client.capabilities.request("rr", {"n": 1}, timeout_seconds=5), count)
    await client.close()
    await runtime.stop()
    return samples


def idle_rss_mib(url: str, workdir: Path) -> float:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESWARM_")} | {
        "KUBESWARM_AGENT": "idle", "KUBESWARM_CAPABILITIES": "a,b", "KUBESWARM_NATS__URL": url,
        "KUBESWARM_MCP__PORT": str(port), "KUBESWARM_METRICS_PORT": str(free_port()),
    }
    process = ManagedProcess("idle-runtime", [sys.executable, "-m", "kubeswarm_runtime"], workdir / "idle.log", env=env)
    process.start()
    try:
        def ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                return bool(resp.status == 200)

        process.wait_until(ready, 30, "ready")
        time.sleep(2)  # idle: a few heartbeats and polls
        status = Path(f"/proc/{process.pid}/status").read_text()
        kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return kib / 1024
    finally:
        process.stop()


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1] * 1000


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubeswarm-bench-") as tmp:
        server = NatsServer(Path(tmp)).start()
        try:
            raw = await raw_throughput(server.url, args.tasks)
            ours = await runtime_throughput(server.url, args.tasks)
            raw_rr = await raw_request_reply(server.url, args.requests)
            our_rr = await runtime_request_reply(server.url, args.requests)
            rss = await asyncio.to_thread(idle_rss_mib, server.url, Path(tmp))
        finally:
            server.stop()
    ratio = ours / raw
    p99_ratio = pct(our_rr, 99) / pct(raw_rr, 99)
    print(f"task throughput   runtime {ours:8.0f}/s   raw pull+ack {raw:8.0f}/s   ratio {ratio:.2f}  (target >= 0.60)")
    print(
        f"request/reply     runtime p50 {pct(our_rr, 50):.3f} ms p99 {pct(our_rr, 99):.3f} ms   "
        f"raw p50 {pct(raw_rr, 50):.3f} ms p99 {pct(raw_rr, 99):.3f} ms   p99 ratio {p99_ratio:.2f}  (target <= 1.50)"
    )
    print(f"idle RSS          {rss:.1f} MiB  (target <= 60)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
