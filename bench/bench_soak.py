"""Soak: steady tasks on a 3-node NATS cluster, with and without a hostile hour, side by side in one run.

    .venv/bin/python bench/bench_soak.py [--minutes 60] [--quick] [--rate 20]

Two phases of ``--minutes / 2`` each on the same 3-node nats-server cluster, each with its own swarm
(prefix) served by two runtime processes (``python -m kubeswarm_runtime``, as pods run it):

- baseline: steady tasks at ``--rate`` per second, nothing else;
- hostile: the same steady tasks, plus a broadcast storm (850 KB broadcasts nobody reads, in bursts),
  one poison message on the task queue (not a task: it must go to the dead letters, the worker must
  go on), and a NATS node killed and restarted half-way through.

Printed per phase: the runtimes' RSS over time (MiB, both processes summed), tasks lost (not succeeded
at the end), tasks completed twice (more than one run, by replica and start, among the "succeeded" writes of a
task's state, watched through a node that is never restarted), p50/p99 latency from creation to completion, dead letters; then the
hostile phase's figures as ratios to the baseline's. ``--quick`` is a 2-minute run (1 + 1).
Not a test: nothing is asserted; the figures are for reading (docs/runtime.md records them).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.config import NatsConfig
from kubeswarm_runtime.tasks import TaskRecord, TaskState
from nats.aio.msg import Msg

from tests.integration.runtime_helpers import agent_config, runtime_process, wait_for
from tests.testbed.nats import NatsCluster
from tests.testbed.procs import ManagedProcess

STORM_BYTES = 850_000
STORM_BURST = 20
SAMPLES = 8  # RSS samples per phase


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Phase:
    name: str
    rss: list[tuple[float, float]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    # Per task, the runs that completed: (replica, start) of each "succeeded" write (a write repeated is the same run).
    completions: defaultdict[str, set[tuple[str | None, float | None]]] = field(default_factory=lambda: defaultdict(set))
    latencies: list[float] = field(default_factory=list)
    lost: int = 0
    dead_letters: int = 0
    events: list[str] = field(default_factory=list)

    @property
    def twice(self) -> int:
        return sum(1 for runs in self.completions.values() if len(runs) > 1)


async def create_retrying(client: SwarmClient, i: int) -> str | None:
    task_id = f"soak-{i}"
    for _ in range(80):
        try:
            await client.tasks.create("soak", {"i": i}, task_id=task_id)
            return task_id
        except Exception:
            await asyncio.sleep(0.25)
    return None


async def run_phase(cluster: NatsCluster, workdir: Path, name: str, seconds: float, rate: float, hostile: bool) -> Phase:
    phase = Phase(name)
    prefix = f"ks.soak.{name}{uuid.uuid4().hex[:6]}"
    configs = [agent_config(cluster.url, prefix, "soak", ["soak"], concurrency=8) for _ in range(2)]
    processes: list[ManagedProcess] = [runtime_process(c, workdir) for c in configs]
    observer = await nats.connect(cluster.urls[2])
    client = await SwarmClient.connect(NatsConfig(url=cluster.url), prefix, sender=f"soak-{name}")
    try:

        async def on_state(msg: Msg) -> None:
            record = TaskRecord.model_validate_json(msg.data)
            if record.state is TaskState.SUCCEEDED:
                phase.completions[record.id].add((record.agent, record.started_at))

        await observer.subscribe(f"$KV.{client.names.tasks_bucket}.task.>", cb=on_state)

        async def all_up() -> bool:
            return len(await client.agents.list(capability="soak")) == len(processes)

        await wait_for(all_up, 60, "both runtimes registered")  # startup is not part of the figures
        start = time.monotonic()
        next_sample, next_storm, i = start, start + 2, 0
        restarted = poisoned = False
        while (now := time.monotonic()) < start + seconds:
            if now >= next_sample:
                phase.rss.append((now - start, sum(rss_mib(p.pid) for p in processes)))
                next_sample += seconds / SAMPLES
            if hostile and now >= next_storm:
                big = "x" * STORM_BYTES
                for _ in range(STORM_BURST):
                    await client.messages.broadcast({"storm": big})
                next_storm += 5
            if hostile and not poisoned and now >= start + seconds / 4:
                await client.conn.js.publish(client.names.task("soak"), b"\x00 not a task")
                phase.events.append(f"{now - start:.0f}s poison message")
                poisoned = True
            if hostile and not restarted and now >= start + seconds / 2:
                cluster.kill(0)
                phase.events.append(f"{now - start:.0f}s NATS node 0 killed")
                await asyncio.to_thread(cluster.restart, 0)
                phase.events.append(f"{time.monotonic() - start:.0f}s NATS node 0 back")
                restarted = True
            task_id = await create_retrying(client, i)
            if task_id is not None:
                phase.created.append(task_id)
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        phase.rss.append((time.monotonic() - start, sum(rss_mib(p.pid) for p in processes)))
        records = await asyncio.gather(*(wait_quietly(client, t) for t in phase.created))
        for record in records:
            if record is None or record.state is not TaskState.SUCCEEDED:
                phase.lost += 1
            elif record.finished_at:
                phase.latencies.append(record.finished_at - record.created_at)
        phase.dead_letters = (await client.conn.js.stream_info(client.names.dlq_stream)).state.messages
        await asyncio.sleep(1)  # the observer's last completions
    finally:
        await client.close()
        await observer.close()
        for process in processes:
            process.stop()
    return phase


async def wait_quietly(client: SwarmClient, task_id: str) -> TaskRecord | None:
    try:
        return await client.tasks.wait(task_id, 120)
    except Exception:
        return None


def report(phases: list[Phase]) -> None:
    for phase in phases:
        print(f"\n== {phase.name}: {len(phase.created)} tasks; events: {', '.join(phase.events) or 'none'}")
        print("   RSS (MiB, 2 runtimes): " + "  ".join(f"{t:.0f}s={r:.0f}" for t, r in phase.rss))
    base, hostile = phases
    rows = [
        ("tasks created", len(base.created), len(hostile.created)),
        ("tasks lost", base.lost, hostile.lost),
        ("tasks completed twice", base.twice, hostile.twice),
        ("dead letters", base.dead_letters, hostile.dead_letters),
        ("p50 latency (ms)", pct(base.latencies, 0.5) * 1000, pct(hostile.latencies, 0.5) * 1000),
        ("p99 latency (ms)", pct(base.latencies, 0.99) * 1000, pct(hostile.latencies, 0.99) * 1000),
        ("RSS first (MiB)", base.rss[0][1], hostile.rss[0][1]),
        ("RSS last (MiB)", base.rss[-1][1], hostile.rss[-1][1]),
        ("RSS max (MiB)", max(r for _, r in base.rss), max(r for _, r in hostile.rss)),
    ]
    print(f"\n{'':24} {'baseline':>10} {'hostile':>10} {'ratio':>7}")
    for label, b, h in rows:
        ratio = f"{h / b:.2f}" if b else "-"
        print(f"{label:24} {b:>10.1f} {h:>10.1f} {ratio:>7}")
    print(
        f"mean RSS drift per phase (MiB): baseline {base.rss[-1][1] - base.rss[0][1]:+.0f}, "
        f"hostile {hostile.rss[-1][1] - hostile.rss[0][1]:+.0f}; latency stdev (ms): "
        f"{statistics.pstdev(base.latencies) * 1000:.0f} / {statistics.pstdev(hostile.latencies) * 1000:.0f}"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="whole run, both phases (default 60)")
    parser.add_argument("--quick", action="store_true", help="a 2-minute run")
    parser.add_argument("--rate", type=float, default=20.0, help="steady tasks per second")
    args = parser.parse_args()
    minutes = 2.0 if args.quick else args.minutes
    with tempfile.TemporaryDirectory() as tmp:
        cluster = NatsCluster(Path(tmp) / "nats").start()
        try:
            phases = []
            for name, hostile in (("baseline", False), ("hostile", True)):
                phases.append(await run_phase(cluster, Path(tmp), name, minutes * 30, args.rate, hostile))
        finally:
            cluster.stop()
    report(phases)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
