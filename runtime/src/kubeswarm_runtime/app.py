"""HTTP of an agent pod: probes (and, in a later layer, MCP) on one app; Prometheus on its own port.

Other layers add routes to the app ``build_app`` returns, e.g.
``app.router.add_post("/mcp", handler)``, reading the runtime from ``app[RUNTIME]``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import tracing
from .config import RuntimeConfig
from .metrics import RuntimeMetrics
from .processes import ServingProcesses, exposition
from .runtime import AgentRuntime

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", AgentRuntime)
# Called with the app before it starts: how later layers (MCP) add their routes.
AppExtension = Callable[[web.Application], None]


# Allocations between two collections of the youngest generation (CPython's default: 700).
YOUNG_COLLECTION_THRESHOLD = 5000


def settle_heap() -> None:
    """Take what the process holds so far (imports, schemas, a started runtime) out of the garbage collector's scans.

    A full collection otherwise walks those hundreds of thousands of long-lived objects every
    time (tens of milliseconds, stalling every task and request in flight); after this it
    walks only what was allocated since. Objects frozen here are still freed by reference
    counting; only cycles among them are never collected. Call it once a process is set up.

    The youngest generation is then collected every ``YOUNG_COLLECTION_THRESHOLD`` allocations rather than
    every 700: a task or a request allocates dozens of objects that live for a few milliseconds (its
    delivery, its model, its asyncio task), and at 700 they were walked by a collection or two each
    before being freed: about 2 us of every task's 24 (docs/runtime.md). Garbage that only a collection
    frees (cycles) waits at most that many allocations longer.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


def leave_with_first_process(stop: asyncio.Event) -> None:
    """A serving process stops when its stdin (a pipe from the replica's first process) closes: that process is gone."""
    loop = asyncio.get_running_loop()

    def readable() -> None:
        if not os.read(sys.stdin.fileno(), 4096):
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), readable)


def run_process(main: Coroutine[Any, Any, None]) -> None:
    """Run a runtime process on uvloop: libuv's socket reads and writes cost less than those of asyncio's own loop,
    and they are much of what an MCP request costs (docs/runtime.md, Hot path)."""
    uvloop.run(main)


def build_app(runtime: AgentRuntime) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[RUNTIME] = runtime

    async def healthz(_request: web.Request) -> web.Response:
        if runtime.worker_died:
            return web.json_response({"status": "the task worker stopped"}, status=503)
        if runtime.conn.closed_unexpectedly:
            return web.json_response({"status": "the NATS connection closed (e.g. its credentials expired)"}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        ready = await runtime.ready()
        body = {"ready": ready, "nats": runtime.conn.connected, "draining": runtime.draining}
        return web.json_response(body, status=200 if ready else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def build_metrics_app(metrics: RuntimeMetrics, serving: ServingProcesses | None = None) -> web.Application:
    """``/metrics``: this process's metrics, and those of its serving processes when it has some."""

    async def scrape(_request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry) if serving is None else exposition(metrics.registry, await serving.scrape())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


async def _serve(app: web.Application, site: Callable[[web.AppRunner], web.BaseSite]) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await site(runner).start()
    return runner


async def run_agent(config: RuntimeConfig, *, extensions: tuple[AppExtension, ...] = (), serving: tuple[int, int] | None = None) -> None:
    """Run one agent until SIGTERM/SIGINT, then shut down gracefully.

    With ``mcp.processes`` > 1 its MCP port is shared (SO_REUSEPORT) with serving processes it starts; ``serving``
    (their number, and the socket of their metrics) makes this process one of those (kubeswarm_runtime.serving).
    """
    endpoint = f"http://{config.replica_id}:{config.mcp.port}/mcp" if config.mcp.enabled else None
    traces = tracing.setup_from_env(
        f"kubeswarm-{config.agent}",
        {"service.namespace": config.namespace, "service.instance.id": config.replica_id, "kubeswarm.swarm": config.swarm},
    )
    runtime = AgentRuntime(config, endpoint=config.endpoint or endpoint)
    app = build_app(runtime)
    for extend in extensions:
        extend(app)
    # Probes answer from the first moment (liveness), readiness once NATS is usable.
    host, port = config.listen_host, config.mcp.port
    shared = config.mcp.enabled and config.mcp.processes > 1
    others = ServingProcesses(config) if shared and serving is None else None
    runners: list[web.AppRunner] = []

    async def serve_port() -> None:
        runners.append(await _serve(app, lambda runner: web.TCPSite(runner, host, port, reuse_port=shared)))

    if serving is None:
        await serve_port()
    metrics_app = build_metrics_app(runtime.metrics, others)
    if serving is None:
        runners.append(await _serve(metrics_app, lambda runner: web.TCPSite(runner, host, config.metrics_port)))
    else:
        metrics_socket = socket.socket(fileno=serving[1])
        runners.append(await _serve(metrics_app, lambda runner: web.SockSite(runner, metrics_socket)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if serving is not None:
        leave_with_first_process(stop)
    if others is not None:
        others.start()
    starting = asyncio.create_task(runtime.start() if serving is None else runtime.start_serving())
    await asyncio.wait([starting, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
    elif starting.exception() is None:
        if serving is not None:
            await serve_port()  # only once it can answer: a probe never meets a serving process not yet ready
        settle_heap()
        await stop.wait()
    log.info("stopping: finishing in-flight tasks for up to %.0fs", config.shutdown_grace_seconds)
    try:
        if others is not None:
            await asyncio.gather(runtime.stop(), others.stop(config.shutdown_grace_seconds))
        else:
            await runtime.stop()
    finally:
        for runner in runners:
            await runner.cleanup()
        if traces is not None:
            await asyncio.to_thread(traces.shutdown)  # the spans still batched go out (a slow collector must not stall the loop)
    if starting.done() and not starting.cancelled() and (exc := starting.exception()) is not None:
        raise exc
