"""5,000 tasks submitted at once through MCP ``create_task`` to a 10-replica local swarm, against raw nats-py.

    .venv/bin/python -m bench.bench_tasks [--tasks 5000] [--replicas 10] [--max-in-flight 256]

The swarm: one real nats-server and ``--replicas`` runtime processes (``python -m kubeswarm_runtime``, as a pod runs
it, with the defaults a pod gets: concurrency 4, admission ``max_in_flight`` 256) of one agent serving ``echo``.
The callers: ``--tasks`` coroutines of this process, all started at once, each one caller of ``create_task`` over raw
JSON-RPC on HTTP (MCP 2026-07-28, stateless: one POST per call, no session — the official SDK client costs a
session and a process-wide task group per caller, too much for 5,000 callers on one machine). Caller ``i`` goes
to replica ``i mod replicas`` as a Service spreads connections; on 429/503 it waits ``Retry-After`` and retries
on the next replica, with the same ``task_id`` (its idempotency key: a retry never makes a second task). The
per-caller rate limit is off (``rate_limit_per_second`` 0): every caller here has one address, which that limit
would meter as one client; admission is per process and is what this measures.

Results are taken from the task-result subject of the swarm (``P.task.result.*``), then every task's stored
state is read back: complete = succeeded in the store; lost = not; completed twice = a second result message for
an id, or more successes counted by the replicas (``kubeswarm_tasks_total``) than tasks. Time to result: from the
moment the caller started to the result seen here. Peak RSS: each runtime's ``VmHWM`` at the end. CPU seconds: of the
runtimes and of this process during the flood, and of this process during each baseline — on a shared machine the
CPU spent per task says more than the wall-clock rates.

Baselines, same server, same run, in this process, no HTTP: raw nats-py, the same number of task messages published
at once to a work-queue stream and pulled + acked by ``--replicas`` pull consumers (``CONCURRENCY`` a fetch); then the
same with the NATS work the runtime does per task by hand (state created in a KV bucket before the publish; final
state written and result published before the ack). Time to result: publish to ack. Ratios: the runtime's drain
rate over each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import nats
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.config import NatsConfig
from kubeswarm_runtime.names import SwarmNames
from kubeswarm_runtime.tasks import TaskState
from nats.aio.msg import Msg
from nats.js import api

from tests.testbed.nats import NatsServer
from tests.testbed.procs import ManagedProcess, free_port

PREFIX = "ks.bench.flood"
CAPABILITY = "echo"
MODERN = "2026-07-28"
CONCURRENCY = 4  # tasks a replica runs at once (the runtime's default) and a raw consumer's fetch
RESULT_DEADLINE_SECONDS = 600
REJECTIONS = ("in_flight", "in_flight_bytes", "draining")
HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "MCP-Protocol-Version": MODERN}


@dataclass
class Replica:
    process: ManagedProcess
    url: str
    metrics: str

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def vm_kib(self, field_name: str) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith(field_name + ":"))


@dataclass
class Flood:
    started: dict[str, float] = field(default_factory=dict)  # task id -> when its caller started
    results: dict[str, float] = field(default_factory=dict)  # task id -> when its first result was seen
    result_messages: dict[str, int] = field(default_factory=dict)
    refused: dict[int, int] = field(default_factory=dict)  # HTTP status -> count (429, 503)
    errors: dict[str, int] = field(default_factory=dict)  # connection errors by kind, retried


def start_replicas(url: str, count: int, workdir: Path, max_in_flight: int) -> list[Replica]:
    replicas = []
    for i in range(count):
        port, metrics_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESWARM_")} | {
            "KUBESWARM_AGENT": "worker",
            "KUBESWARM_REPLICA_ID": f"worker-{i}",
            "KUBESWARM_SUBJECT_PREFIX": PREFIX,
            "KUBESWARM_CAPABILITIES": CAPABILITY,
            "KUBESWARM_NATS__URL": url,
            "KUBESWARM_MCP__PORT": str(port),
            "KUBESWARM_MCP__RATE_LIMIT_PER_SECOND": "0",
            "KUBESWARM_MCP__MAX_IN_FLIGHT": str(max_in_flight),
            "KUBESWARM_METRICS_PORT": str(metrics_port),
        }
        process = ManagedProcess(f"worker-{i}", [sys.executable, "-m", "kubeswarm_runtime"], workdir / f"worker-{i}.log", env=env)
        process.start()
        replicas.append(Replica(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"))
    return replicas


async def wait_ready(http: aiohttp.ClientSession, replicas: list[Replica]) -> None:
    deadline = time.monotonic() + 120
    for replica in replicas:
        while True:
            if not replica.process.running():
                raise RuntimeError(f"{replica.process.name} exited; see {replica.process.log}")
            try:
                async with http.get(replica.url + "/readyz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{replica.process.name} not ready in 120 s; see {replica.process.log}")
            await asyncio.sleep(0.2)


async def metric(http: aiohttp.ClientSession, replica: Replica, line: str) -> float:
    async with http.get(replica.metrics) as response:
        for text in (await response.text()).splitlines():
            if text.startswith(line + " "):
                return float(text.split()[-1])
    return 0.0


def create_task_body(task_id: str, n: int) -> bytes:
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    arguments = {"capability": CAPABILITY, "input": {"n": n}, "task_id": task_id}
    body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": "create_task", "arguments": arguments, "_meta": meta}}
    return json.dumps(body).encode()


async def caller(http: aiohttp.ClientSession, replicas: list[Replica], n: int, flood: Flood) -> None:
    """One caller: create_task until it is accepted, honouring Retry-After; the same task id on every attempt."""
    task_id = uuid.uuid4().hex
    body = create_task_body(task_id, n)
    headers = {**HEADERS, "Mcp-Method": "tools/call", "Mcp-Name": "create_task"}
    flood.started[task_id] = time.perf_counter()
    target = n % len(replicas)
    while True:
        try:
            async with http.post(replicas[target].url + "/mcp", data=body, headers=headers) as response:
                payload = await response.read()
                if response.status in (429, 503):
                    flood.refused[response.status] = flood.refused.get(response.status, 0) + 1
                    wait = float(response.headers.get("Retry-After", "1"))
                elif response.status == 200 and json.loads(payload).get("result", {}).get("isError") is False:
                    return
                else:
                    raise RuntimeError(f"create_task answered {response.status}: {payload[:300]!r}")
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            kind = type(exc).__name__
            flood.errors[kind] = flood.errors.get(kind, 0) + 1
            wait = 0.5
        await asyncio.sleep(wait)
        target = (target + 1) % len(replicas)


def pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1] if len(samples) > 1 else samples[0]


async def runtime_flood(url: str, replicas: list[Replica], tasks: int) -> dict[str, Any]:
    flood = Flood()
    names = SwarmNames(PREFIX)
    nc = await nats.connect(url)
    all_in = asyncio.Event()

    async def on_result(msg: Msg) -> None:
        task_id = msg.subject.rsplit(".", 1)[-1]
        flood.result_messages[task_id] = flood.result_messages.get(task_id, 0) + 1
        flood.results.setdefault(task_id, time.perf_counter())
        if len(flood.results) == tasks:
            all_in.set()

    await nc.subscribe(names.task_result("*"), cb=on_result, pending_msgs_limit=10 * tasks, pending_bytes_limit=-1)
    await nc.flush()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http:
        started = time.perf_counter()
        await asyncio.gather(*(caller(http, replicas, n, flood) for n in range(tasks)))
        submitted = time.perf_counter() - started
        with contextlib.suppress(TimeoutError):  # what is missing then is reported as lost
            await asyncio.wait_for(all_in.wait(), RESULT_DEADLINE_SECONDS)
        drained = max(flood.results.values(), default=started) - started
        succeeded = sum(
            [await metric(http, r, f'kubeswarm_tasks_total{{capability="{CAPABILITY}",outcome="succeeded"}}') for r in replicas]
        )
        rejected = sum(
            [await metric(http, r, f'kubeswarm_admission_rejected_total{{reason="{reason}"}}') for r in replicas for reason in REJECTIONS]
        )
    client = await SwarmClient.connect(NatsConfig(url=url), PREFIX, sender="bench")
    stored = await asyncio.gather(*(client.tasks.get(task_id) for task_id in flood.started))
    await client.close()
    await nc.close()
    complete = sum(1 for record in stored if record is not None and record.state is TaskState.SUCCEEDED)
    # Either witness of a second completion: a second result message, or more successes than tasks.
    twice = max(sum(1 for count in flood.result_messages.values() if count > 1), int(succeeded) - tasks, 0)
    latencies = [flood.results[t] - flood.started[t] for t in flood.started if t in flood.results]
    return {
        "complete": complete,
        "lost": tasks - complete,
        "twice": twice,
        "submitted_s": submitted,
        "drain_rate": len(latencies) / drained if drained > 0 else 0.0,
        "p50": pct(latencies, 50),
        "p99": pct(latencies, 99),
        "refused": flood.refused,
        "rejected_metric": int(rejected),
        "errors": flood.errors,
    }


async def raw_flood(url: str, tasks: int, consumers: int, *, stores: bool) -> dict[str, Any]:
    """Raw nats-py: publish ``tasks`` at once, pull + ack them with ``consumers`` pullers; time to ack per message.

    ``stores``: also the NATS work a task costs the runtime, by hand — its state created in a KV bucket before it is
    published, its final state written (confirmed) and its result published before the ack."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="RAWFLOOD", subjects=["rawflood.>"], retention=api.RetentionPolicy.WORK_QUEUE)
    await js.add_consumer("RAWFLOOD", api.ConsumerConfig(durable_name="raw", ack_policy=api.AckPolicy.EXPLICIT))
    kv = await js.create_key_value(bucket="RAWFLOOD_tasks") if stores else None
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    started, cpu = time.perf_counter(), time.process_time()

    async def publish(n: int) -> None:
        task_id = uuid.uuid4().hex
        sent[task_id] = time.perf_counter()
        payload = json.dumps({"id": task_id, "capability": CAPABILITY, "input": {"n": n}, "state": "pending"}).encode()
        if kv is not None:
            await kv.create(f"task.{task_id}", payload)
        await js.publish("rawflood.tasks", payload, headers={"Nats-Msg-Id": task_id})

    async def finish(msg: Msg) -> None:
        task_id = msg.headers["Nats-Msg-Id"] if msg.headers else ""
        if kv is not None:
            done = msg.data.replace(b'"pending"', b'"succeeded"')
            await kv.put(f"task.{task_id}", done)
            await nc.publish(f"rawresult.{task_id}", done)
        await msg.ack()
        acked.setdefault(task_id, time.perf_counter())

    async def puller() -> None:
        sub = await js.pull_subscribe_bind("raw", stream="RAWFLOOD")
        while len(acked) < tasks:
            try:
                msgs = await sub.fetch(CONCURRENCY, timeout=1)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            await asyncio.gather(*(finish(msg) for msg in msgs))

    pullers = [asyncio.create_task(puller()) for _ in range(consumers)]
    await asyncio.gather(*(publish(n) for n in range(tasks)))
    await asyncio.wait_for(asyncio.gather(*pullers), RESULT_DEADLINE_SECONDS)
    drained, cpu = max(acked.values()) - started, time.process_time() - cpu
    await js.delete_stream("RAWFLOOD")
    if kv is not None:
        await js.delete_key_value("RAWFLOOD_tasks")
    await nc.close()
    latencies = [acked[t] - sent[t] for t in sent if t in acked]
    return {"drain_rate": len(latencies) / drained, "p50": pct(latencies, 50), "p99": pct(latencies, 99), "cpu": cpu}


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--max-in-flight", type=int, default=256, help="each replica's mcp.max_in_flight (the default: 256)")
    args = parser.parse_args()
    print("reproduce: .venv/bin/python -m bench.bench_tasks " + shlex.join(sys.argv[1:]))
    with tempfile.TemporaryDirectory(prefix="kubeswarm-bench-") as tmp:
        server = NatsServer(Path(tmp)).start()
        replicas: list[Replica] = []
        try:
            raw = await raw_flood(server.url, args.tasks, args.replicas, stores=False)
            raw_stores = await raw_flood(server.url, args.tasks, args.replicas, stores=True)
            replicas = start_replicas(server.url, args.replicas, Path(tmp), args.max_in_flight)
            async with aiohttp.ClientSession() as http:
                await wait_ready(http, replicas)
            idle = [r.vm_kib("VmRSS") / 1024 for r in replicas]
            cpu_before = [r.cpu_seconds() for r in replicas], time.process_time()
            ours = await runtime_flood(server.url, replicas, args.tasks)
            runtimes_cpu = sum(r.cpu_seconds() for r in replicas) - sum(cpu_before[0])
            callers_cpu = time.process_time() - cpu_before[1]
            peaks = [r.vm_kib("VmHWM") / 1024 for r in replicas]
        finally:
            for replica in replicas:
                replica.process.stop()
            server.stop()
    print(f"{args.tasks} tasks through MCP create_task, {args.replicas} replicas (max_in_flight {args.max_in_flight} each)")
    print(f"  complete          {ours['complete']}/{args.tasks} ({100 * ours['complete'] / args.tasks:.1f}%)")
    print(f"  lost              {ours['lost']}")
    print(f"  completed twice   {ours['twice']}")
    print(f"  refused (callers) {ours['refused'] or 0}  (kubeswarm_admission_rejected_total: {ours['rejected_metric']})")
    print(f"  connection errors {ours['errors'] or 0} (retried)")
    print(f"  all submitted in  {ours['submitted_s']:.1f} s")
    print(f"  drain rate        {ours['drain_rate']:.0f} tasks/s;  time to result p50 {ours['p50']:.2f} s  p99 {ours['p99']:.2f} s")
    for name, base in (("raw pull+ack", raw), ("raw + stores", raw_stores)):
        ratio = ours["drain_rate"] / base["drain_rate"]
        print(
            f"  baseline {name}: {base['drain_rate']:.0f} tasks/s (ratio {ratio:.2f});"
            f"  p50 {base['p50']:.2f} s  p99 {base['p99']:.2f} s;  CPU {base['cpu']:.1f} s (publishers and pullers, this process)"
        )
    print(
        f"  CPU seconds       runtimes {runtimes_cpu:.1f} (all {args.replicas}), callers + result watcher (this process) {callers_cpu:.1f}"
    )
    print(f"  runtime RSS MiB   idle {min(idle):.0f}-{max(idle):.0f}, peak (VmHWM) {min(peaks):.0f}-{max(peaks):.0f}")
    return 0 if ours["lost"] == 0 and ours["twice"] == 0 else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stopped (timeout, kill): its processes stop too
    sys.exit(asyncio.run(main()))
