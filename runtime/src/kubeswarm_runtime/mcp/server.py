"""Wiring: the agent's MCP and JSON-RPC surface added to the runtime's aiohttp app."""

from __future__ import annotations

import asyncio

import nats
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .. import tracing
from ..agent2agent import A2AEndpoint
from ..agent2agent.endpoint import PATH as A2A_PATH
from ..app import RUNTIME
from ..webhooks import PATH as WEBHOOK_PATH
from ..webhooks import Webhooks
from .admission import Admission
from .discovery_stream import DiscoveryStream
from .fanout import DiscoveryFanout
from .http import json_response
from .legacy import LegacySse
from .metering import RequestMeter
from .protocol import McpServer
from .rpc import JsonRpc
from .security import WELL_KNOWN_RESOURCE, Guard, StreamSlots, problem
from .state import LegacyRouter, McpState, SwarmUnavailable
from .streamable import StreamableHttp
from .tools import ToolRegistry

# The HTTP requests that carry JSON-RPC requests: metered (kubeswarm_mcp_requests_total) even when refused.
JSONRPC_POSTS = frozenset({"/mcp", "/messages", "/rpc"})


def serving_middleware(mcp: RequestMeter, a2a: RequestMeter, admission: Admission) -> Middleware:
    """The one middleware of the MCP port (one per request, not one per concern: each costs a coroutine frame per call).

    Outermost, the refusal meter: a request carrying JSON-RPC (MCP's, else A2A's) that ends in a status >= 400
    nothing counted is counted with that final status, the 503 of swarm_unavailable included. Then admission,
    before any work (auth, body, NATS): a refusal there costs nothing that grows with the callers. Innermost, no
    NATS (not yet connected, or down): 503, so clients and load balancers retry elsewhere or later.
    """

    @web.middleware
    async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if (request.method == "POST" and path in JSONRPC_POSTS) or path == "/ws/mcp":
            meter: RequestMeter | None = mcp
        else:
            meter = a2a if path == A2A_PATH else None
        if meter is not None:
            state, token = meter.serving()
        status = 0
        try:
            size = admission.take(request)
            try:
                response = await handler(request)
            except (SwarmUnavailable, nats.errors.Error) as exc:
                raise problem(
                    web.HTTPServiceUnavailable, "swarm_unavailable", str(exc) or type(exc).__name__, {"Retry-After": "1"}
                ) from None
            finally:
                admission.release(request, size)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            raise  # the client left: nothing was answered
        except Exception:
            status = 500  # what aiohttp answers
            raise
        finally:
            if meter is not None:
                meter.served(state, token, status)

    return serve


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
    StreamableHttp(server, state, guard, slots, config, admission).add_routes(app)
    LegacySse(server, state, router, guard, slots, config, admission).add_routes(app)
    JsonRpc(server, guard, slots, config, admission).add_routes(app)
    DiscoveryStream(runtime, fanout, guard, slots, config).add_routes(app)
    # A2A beside MCP: the same port, guard (auth, rate limit, origin, size) and stream slots.
    a2a = A2AEndpoint(runtime, guard, slots, admission)
    a2a.add_routes(app)
    hooks = runtime.config.triggers.webhooks
    Webhooks(lambda: runtime.swarm.tasks, hooks, guard).add_routes(app)

    async def resource_metadata(request: web.Request) -> web.Response:
        return json_response(guard.resource.document(request))

    # RFC 9728: at the root, and with the resource's path appended.
    app.router.add_get(WELL_KNOWN_RESOURCE, resource_metadata)
    app.router.add_get(WELL_KNOWN_RESOURCE + "/mcp", resource_metadata)

    async def stop(_app: web.Application) -> None:
        await fanout.stop()
        await router.stop()
        await guard.auth.close()

    app.on_shutdown.append(stop)
    app.middlewares.append(serving_middleware(server.meter, a2a.meter, admission))
    if tracing.enabled():
        # Innermost: the span covers the answer, and its status code is the one sent.
        traced = JSONRPC_POSTS | {"/ws/mcp", A2A_PATH} | {WEBHOOK_PATH.format(name=hook.name) for hook in hooks}
        app.middlewares.append(tracing.http_middleware(traced))
