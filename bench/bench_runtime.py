"""Runtime benchmarks, side by side with raw nats-py on the same nats-server; prints ratios.

    .venv/bin/python bench/bench_runtime.py [--tasks 5000] [--requests 2000] [--rounds 5]

- task throughput: echo handler, 1 replica, vs a raw pull-and-ack loop (target: >= 0.9 of raw), and the CPU
  per task of this process on each side (raw / runtime: the same ratio measured by work rather than by time,
  which other processes of a shared machine disturb less)
- capability request/reply p50/p99 vs raw request/reply (target: p99 within 1.5x)
- idle RSS of one runtime process (target: <= 60 MiB)

Fairness: both sides run against the same server, in the same process, in alternating rounds
(raw, runtime, raw, runtime, ...) so slow drifts of a shared machine hit both alike; the
ratio printed is the median of the per-round ratios. Request/reply goes further: raw and
runtime requests alternate one by one within a round (the same moments for both, which
matters for a p99 on a busy machine). Both pull the same messages (the
runtime's task JSON with its ``Nats-Msg-Id`` header) in batches of ``CONCURRENCY`` and are
timed in steady state, from the first message handled on. The runtime's completions are
read from its own task counter rather than through a result subscriber in this process
(that subscriber would bill its own work to the runtime; the raw loop has none). The process
settles its heap as an agent process does once started (``app.settle_heap``), for both sides.
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
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
from kubeswarm_runtime.app import settle_heap
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.config import NatsConfig, RuntimeConfig
from kubeswarm_runtime.runtime import AgentRuntime
from kubeswarm_runtime.tasks import TaskMessage
from nats.aio.msg import Msg
from nats.js import api

from tests.testbed.nats import NatsServer
from tests.testbed.procs import ManagedProcess, free_port

CONCURRENCY = 64
# How often the runtime's completed-task counter is read while its throughput is measured.
POLL_SECONDS = 0.002


def task_message(i: int) -> tuple[bytes, dict[str, str]]:
    """A task as TaskService.create queues it: its JSON and its dedup header."""
    task = TaskMessage(id=uuid.uuid4().hex, capability="echo", input={"n": i}, created_at=time.time())
    return task.model_dump_json().encode(), {"Nats-Msg-Id": task.id}


async def raw_throughput(url: str, count: int, round_no: int) -> tuple[float, float]:
    """Tasks per second, and this process's CPU microseconds per task."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream, subject = f"RAW{round_no}", f"raw{round_no}.tasks"
    await js.add_stream(name=stream, subjects=[f"raw{round_no}.>"], retention=api.RetentionPolicy.WORK_QUEUE)
    for start in range(0, count, 500):
        batch = [task_message(i) for i in range(start, min(start + 500, count))]
        await asyncio.gather(*[await js.publish_async(subject, data, headers=headers) for data, headers in batch])
    sub = await js.pull_subscribe(subject, durable="raw", stream=stream)
    done = 0
    started = 0.0
    cpu = 0.0
    while done < count:
        for msg in await sub.fetch(CONCURRENCY, timeout=5):
            if not started:  # steady state: from the first message on
                started, cpu = time.perf_counter(), time.process_time()
            await msg.ack()
            done += 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    await js.delete_stream(stream)
    await nc.close()
    return count / elapsed, cpu / count * 1e6


async def poll_until(done: Callable[[], bool]) -> tuple[float, float]:
    """When ``done()`` was first seen true (read every POLL_SECONDS: a bounded, cheap observer), and the CPU time then."""
    while True:
        if done():
            return time.perf_counter(), time.process_time()
        await asyncio.sleep(POLL_SECONDS)


async def runtime_throughput(url: str, count: int, round_no: int) -> tuple[float, float]:
    """Tasks per second, and this process's CPU microseconds per task (the runtime's work: it runs here)."""
    prefix = f"ks.bench.tput{round_no}"
    client = await SwarmClient.connect(NatsConfig(url=url), prefix, sender="bench")
    for start in range(0, count, 500):
        await asyncio.gather(*(client.tasks.create("echo", {"n": i}) for i in range(start, min(start + 500, count))))
    runtime = AgentRuntime(
        RuntimeConfig(agent="bench", subject_prefix=prefix, capabilities=["echo"], concurrency=CONCURRENCY, nats={"url": url})
    )
    labels = {"capability": "echo", "outcome": "succeeded"}

    def succeeded() -> int:
        # That one counter's samples, not the whole registry's (which would bill the observer to the runtime).
        samples = (sample for family in runtime.metrics.tasks.collect() for sample in family.samples)
        return int(next((s.value for s in samples if s.name == "kubeswarm_tasks_total" and s.labels == labels), 0))

    await runtime.start()
    # Steady state: from the first completions seen on, counting only those after them.
    started, cpu = await poll_until(lambda: succeeded() > 0)
    first = succeeded()
    ended, cpu_ended = await poll_until(lambda: succeeded() >= count)
    await runtime.stop()
    await client.close()
    return (count - first) / (ended - started), (cpu_ended - cpu) / (count - first) * 1e6


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def request_reply(url: str, count: int) -> tuple[list[float], list[float]]:
    """(runtime, raw) latencies of ``count`` requests each, interleaved one by one so both see the same moments."""
    responder, requester = await nats.connect(url), await nats.connect(url)

    async def answer(msg: Msg) -> None:
        await msg.respond(msg.data)

    await responder.subscribe("raw.rr", queue="q", cb=answer)
    await responder.flush()  # the subscription is known to the server before the first request
    prefix = "ks.bench.rr"
    runtime = AgentRuntime(RuntimeConfig(agent="rr", subject_prefix=prefix, capabilities=["rr"], nats={"url": url}))
    await runtime.start()
    client = await SwarmClient.connect(NatsConfig(url=url), prefix, sender="bench")

    def raw() -> Awaitable[object]:
        return requester.request("raw.rr", b'{"n": 1}', timeout=5)

    def ours() -> Awaitable[object]:
        return client.capabilities.request("rr", {"n": 1}, timeout_seconds=5)

    for _ in range(100):  # warm up
        await raw()
        await ours()
    raw_samples, our_samples = [], []
    for i in range(count):
        first, second = (raw, ours) if i % 2 else (ours, raw)  # neither always goes first
        a, b = await timed(first), await timed(second)
        raw_samples.append(a if first is raw else b)
        our_samples.append(b if first is raw else a)
    await client.close()
    await runtime.stop()
    await responder.close()
    await requester.close()
    return our_samples, raw_samples


def idle_rss_mib(url: str, workdir: Path) -> float:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESWARM_")} | {
        "KUBESWARM_AGENT": "idle",
        "KUBESWARM_CAPABILITIES": "a,b",
        "KUBESWARM_NATS__URL": url,
        "KUBESWARM_MCP__PORT": str(port),
        "KUBESWARM_METRICS_PORT": str(free_port()),
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
    parser.add_argument("--rounds", type=int, default=5, help="alternating raw/runtime rounds; the median ratio is reported")
    args = parser.parse_args()
    # What an agent process does once set up (app.run_agent), here for both sides alike.
    settle_heap()
    tput_ratios: list[float] = []
    cpu_ratios: list[float] = []
    p99_ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kubeswarm-bench-") as tmp:
        server = NatsServer(Path(tmp)).start()
        try:
            for round_no in range(args.rounds):
                raw, raw_cpu = await raw_throughput(server.url, args.tasks, round_no)
                ours, our_cpu = await runtime_throughput(server.url, args.tasks, round_no)
                tput_ratios.append(ours / raw)
                cpu_ratios.append(raw_cpu / our_cpu)
                print(
                    f"  round {round_no + 1}: task throughput runtime {ours:6.0f}/s raw {raw:6.0f}/s ratio {ours / raw:.2f}; "
                    f"CPU per task (this process) runtime {our_cpu:.1f} us raw {raw_cpu:.1f} us ratio {raw_cpu / our_cpu:.2f}"
                )
            for round_no in range(args.rounds):
                our_rr, raw_rr = await request_reply(server.url, args.requests)
                p99_ratios.append(pct(our_rr, 99) / pct(raw_rr, 99))
                print(
                    f"  round {round_no + 1}: request/reply runtime p50 {pct(our_rr, 50):.3f} ms p99 {pct(our_rr, 99):.3f} ms"
                    f"  raw p50 {pct(raw_rr, 50):.3f} ms p99 {pct(raw_rr, 99):.3f} ms  p99 ratio {p99_ratios[-1]:.2f}"
                )
            rss = await asyncio.to_thread(idle_rss_mib, server.url, Path(tmp))
        finally:
            server.stop()
    ratio, p99_ratio = statistics.median(tput_ratios), statistics.median(p99_ratios)
    print(f"task throughput   median ratio {ratio:.2f} over {args.rounds} rounds  (target >= 0.90)")
    print(f"task CPU          median ratio {statistics.median(cpu_ratios):.2f} (raw / runtime CPU per task; steadier on a shared machine)")
    print(f"request/reply     median p99 ratio {p99_ratio:.2f} over {args.rounds} rounds  (target <= 1.50)")
    print(f"idle RSS          {rss:.1f} MiB  (target <= 60)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
