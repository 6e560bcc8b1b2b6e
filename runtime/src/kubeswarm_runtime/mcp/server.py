"""Wiring: the agent's MCP and JSON-RPC surface added to the runtime's aiohttp app."""

from __future__ import annotations

from aiohttp import web

from .. import tracing
from ..agent2agent import A2ASurface
from ..agent2agent.surface import PATH as A2A_PATH
from ..app import RUNTIME
from ..webhooks import PATH as WEBHOOK_PATH
from ..webhooks import Webhooks
from .admission import Admission
from .discovery_stream import DiscoveryStream
from .fanout import DiscoveryFanout
from .http import json_response
from .legacy import LegacySse
from .protocol import McpServer
from .routes import Routes
from .rpc import JsonRpc
from .security import WELL_KNOWN_RESOURCE, Guard, StreamSlots
from .state import LegacyRouter, McpState
from .streamable import StreamableHttp
from .tools import ToolRegistry

# The HTTP requests that carry JSON-RPC requests (traced).
JSONRPC_POSTS = frozenset({"/mcp", "/messages", "/rpc"})


def serve_mcp(app: web.Application) -> None:
    """An ``AppExtension``: ``/mcp``, ``/sse`` + ``/messages``, ``/rpc``, ``/ws/mcp``, ``/sse/discoveries``, RFC 9728 metadata, and A2A
    (``/.well-known/agent-card.json``, ``/a2a``).

    Probes and metrics are not touched: they stay unauthenticated.
    """
    runtime = app[RUNTIME]
    config = runtime.config.mcp
    if not config.enabled:
        return
    guard = Guard(config, runtime.config.endpoint)
    admission = Admission(config, lambda: runtime.draining, runtime.metrics.admission_rejected)
    slots = StreamSlots(config.max_streams)
    server = McpServer(runtime, ToolRegistry(page_size=config.tools_page_size))
    state = McpState(runtime, config.session_ttl_seconds)
    router = LegacyRouter(runtime)
    fanout = DiscoveryFanout(runtime)
    routes = Routes(app, admission)
    StreamableHttp(server, state, guard, slots, config, admission).add_routes(routes)
    LegacySse(server, state, router, guard, slots, config, admission).add_routes(routes)
    JsonRpc(server, guard, slots, config, admission).add_routes(routes)
    DiscoveryStream(runtime, fanout, guard, slots, config).add_routes(routes)
    # A2A beside MCP: the same port, guard (auth, rate limit, origin, size) and stream slots.
    A2ASurface(runtime, guard, slots, admission).add_routes(routes)
    hooks = runtime.config.triggers.webhooks
    Webhooks(lambda: runtime.swarm.tasks, hooks, guard).add_routes(routes)

    async def resource_metadata(request: web.Request) -> web.Response:
        return json_response(guard.resource.document(request))

    # RFC 9728: at the root, and with the resource's path appended.
    routes.add_get(WELL_KNOWN_RESOURCE, resource_metadata)
    routes.add_get(WELL_KNOWN_RESOURCE + "/mcp", resource_metadata)

    async def stop(_app: web.Application) -> None:
        await fanout.stop()
        await router.stop()
        await guard.auth.close()

    app.on_shutdown.append(stop)
    if tracing.enabled():
        # The only middleware, when tracing: the span covers the answer, and its status code is the one sent.
        traced = JSONRPC_POSTS | {"/ws/mcp", A2A_PATH} | {WEBHOOK_PATH.format(name=hook.name) for hook in hooks}
        app.middlewares.append(tracing.http_middleware(traced))
