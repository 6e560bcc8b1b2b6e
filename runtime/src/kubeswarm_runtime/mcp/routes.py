"""The MCP port's routes, each handler wrapped once, when its route is added, in what every request of the port needs.

No app middleware: aiohttp runs middlewares through a frame of its own per request, and a middleware must find
out per request what the route already says (whether it carries JSON-RPC, which meter counts its refusals).
"""

from __future__ import annotations

import asyncio

import nats
from aiohttp import web
from aiohttp.typedefs import Handler

from .admission import Admission
from .jsonrpc import SERVER_UNAVAILABLE
from .metering import RequestMeter
from .refusal import Refused
from .state import SwarmUnavailable

SWARM_RETRY_AFTER_SECONDS = 1  # short: another replica may be connected, and this one retries NATS with backoff


def serving(handler: Handler, admission: Admission, meter: RequestMeter | None) -> Handler:
    """``handler`` with, outermost, the refusal meter: a request carrying JSON-RPC (``meter`` set) that ends in a
    status >= 400 nothing counted is counted with that final status, the 503 of swarm_unavailable included. Then
    admission, before any work (auth, body, NATS): a refusal there costs nothing that grows with the callers.
    Innermost, no NATS (not yet connected, or down): 503, so clients and load balancers retry elsewhere or later.
    Those refusals are answered as JSON-RPC errors on a route carrying JSON-RPC, else as problems (:mod:`.refusal`).
    """
    answer = Refused.as_problem if meter is None else Refused.as_rpc_error

    async def serve(request: web.Request) -> web.StreamResponse:
        if meter is not None:
            state, token = meter.serving()
        status = 0
        try:
            size = admission.take(request)
            try:
                response = await handler(request)
            except (SwarmUnavailable, nats.errors.Error) as exc:
                description = str(exc) or type(exc).__name__
                raise Refused(
                    web.HTTPServiceUnavailable, "swarm_unavailable", description, SERVER_UNAVAILABLE, SWARM_RETRY_AFTER_SECONDS
                ) from None
            finally:
                admission.release(request, size)
            status = response.status
            return response
        except Refused as refused:
            status = refused.status.status_code
            raise answer(refused) from None
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


class Routes:
    """Adds the port's routes to its app, each handler wrapped in :func:`serving`."""

    def __init__(self, app: web.Application, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    def add_get(self, path: str, handler: Handler, *, meter: RequestMeter | None = None) -> None:
        self.app.router.add_get(path, serving(handler, self.admission, meter))

    def add_post(self, path: str, handler: Handler, *, meter: RequestMeter | None = None) -> None:
        """``meter``: the JSON-RPC requests the route carries, counted there when refused before an answer."""
        self.app.router.add_post(path, serving(handler, self.admission, meter))

    def add_delete(self, path: str, handler: Handler) -> None:
        self.app.router.add_delete(path, serving(handler, self.admission, None))
