"""HTTP of an agent pod: probes (and, in a later layer, MCP) on one app; Prometheus on its own port.

Other layers add routes to the app ``build_app`` returns, e.g.
``app.router.add_post("/mcp", handler)``, reading the runtime from ``app[RUNTIME]``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import tracing
from .config import RuntimeConfig
from .metrics import RuntimeMetrics
from .runtime import AgentRuntime

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", AgentRuntime)
# Called with the app before it starts: how later layers (MCP) add their routes.
AppExtension = Callable[[web.Application], None]


def settle_heap() -> None:
    """Take what the process holds so far (imports, schemas, a started runtime) out of the garbage collector's scans.

    A full collection otherwise walks those hundreds of thousands of long-lived objects every
    time (tens of milliseconds, stalling every task and request in flight); after this it
    walks only what was allocated since. Objects frozen here are still freed by reference
    counting; only cycles among them are never collected. Call it once a process is set up.
    """
    gc.collect()
    gc.freeze()


def build_app(runtime: AgentRuntime) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[RUNTIME] = runtime

    async def healthz(_request: web.Request) -> web.Response:
        if runtime.started and not runtime.worker.alive:
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


def build_metrics_app(metrics: RuntimeMetrics) -> web.Application:
    async def scrape(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


async def _serve(app: web.Application, port: int, host: str) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_agent(config: RuntimeConfig, *, extensions: tuple[AppExtension, ...] = ()) -> None:
    """Run one agent until SIGTERM/SIGINT, then shut down gracefully."""
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
    host = config.listen_host
    runners = [await _serve(app, config.mcp.port, host), await _serve(build_metrics_app(runtime.metrics), config.metrics_port, host)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(runtime.start())
    await asyncio.wait([starting, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
    elif starting.exception() is None:
        settle_heap()
        await stop.wait()
    log.info("stopping: finishing in-flight tasks for up to %.0fs", config.shutdown_grace_seconds)
    try:
        await runtime.stop()
    finally:
        for runner in runners:
            await runner.cleanup()
        if traces is not None:
            await asyncio.to_thread(traces.shutdown)  # the spans still batched go out (a slow collector must not stall the loop)
    if starting.done() and not starting.cancelled() and (exc := starting.exception()) is not None:
        raise exc
