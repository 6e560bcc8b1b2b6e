"""Task throughput with tracing on against off, same run; prints the ratio.

    .venv/bin/python -m bench.bench_tracing [--tasks 5000] [--rounds 5]

Each round measures ``bench_runtime``'s task throughput (echo handler, one replica, steady state) twice, in
alternating order: tracing off (no provider: what an agent without ``OTEL_EXPORTER_OTLP_ENDPOINT`` runs), and
tracing on as an agent with an endpoint runs it: the SDK's ``TracerProvider``, a ``BatchSpanProcessor`` and the
OTLP/HTTP exporter, sending every span (one per run: the tasks are created outside any span) to a sink in
another process that answers each export as a collector does. The ratio printed is the
median of the per-round ratios on / off.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubeswarm_runtime import tracing
from kubeswarm_runtime.app import settle_heap
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bench.bench_runtime import runtime_throughput
from tests.testbed.nats import NatsServer
from tests.testbed.procs import ManagedProcess, free_port, port_accepts


class Sink(BaseHTTPRequestHandler):
    """Takes OTLP/HTTP exports: reads the body, answers 200 with an empty ExportTraceServiceResponse."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


async def traced_throughput(url: str, endpoint: str, count: int, round_no: int) -> tuple[float, int]:
    """Throughput with an exporting provider, and how many spans it exported."""
    exported = 0

    class Counting(OTLPSpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            nonlocal exported
            exported += len(spans)
            return super().export(spans)

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Counting(endpoint=endpoint)))
    tracing.configure(provider)
    try:
        result, _cpu = await runtime_throughput(url, count, round_no)
    finally:
        tracing.configure(None)
        provider.shutdown()
    return result, exported


async def main(count: int, rounds: int) -> None:
    settle_heap()
    ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
        port = free_port()
        sink = ManagedProcess("otlp-sink", [sys.executable, "-m", "bench.bench_tracing", "sink", str(port)], Path(tmp) / "sink.log")
        sink.start()
        server = NatsServer(Path(tmp)).start()
        try:
            sink.wait_until(lambda: port_accepts(port), 30, "accepting exports")
            endpoint = f"http://127.0.0.1:{port}/v1/traces"
            for round_no in range(rounds):
                if round_no % 2:
                    traced, exported = await traced_throughput(server.url, endpoint, count, 1000 + round_no)
                    plain, _cpu = await runtime_throughput(server.url, count, 2000 + round_no)
                else:
                    plain, _cpu = await runtime_throughput(server.url, count, 2000 + round_no)
                    traced, exported = await traced_throughput(server.url, endpoint, count, 1000 + round_no)
                ratios.append(traced / plain)
                print(
                    f"round {round_no + 1}: off {plain:,.0f} tasks/s, on {traced:,.0f} tasks/s ({exported} spans exported), "
                    f"ratio {traced / plain:.2f}",
                    flush=True,
                )
        finally:
            server.stop()
            sink.stop()
    print(f"tracing on / off task throughput (median of {rounds} rounds): {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["sink"]:
        ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Sink).serve_forever()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.rounds))
