"""The A2A routes, added at start without the A2A SDK: the endpoint, and the SDK with it (its protobuf types, some
3 MiB of an idle agent's memory), is loaded by the first request to them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..mcp.admission import Admission
from ..mcp.metering import RequestMeter
from ..mcp.routes import Routes
from ..mcp.security import Guard, StreamSlots
from ..runtime import AgentRuntime

if TYPE_CHECKING:
    from .endpoint import A2AEndpoint

PATH = "/a2a"
# The SDK's AGENT_CARD_WELL_KNOWN_PATH, and the A2A 1.0 methods the endpoint serves (tests hold both to the endpoint's).
CARD_PATH = "/.well-known/agent-card.json"
METHODS = (
    "SendMessage",
    "SendStreamingMessage",
    "GetTask",
    "ListTasks",
    "CancelTask",
    "SubscribeToTask",
    "CreateTaskPushNotificationConfig",
    "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs",
    "DeleteTaskPushNotificationConfig",
    "GetExtendedAgentCard",
)


class A2ASurface:
    def __init__(self, runtime: AgentRuntime, guard: Guard, slots: StreamSlots, admission: Admission) -> None:
        self._parts = (runtime, guard, slots, admission)
        self._endpoint: A2AEndpoint | None = None
        self.meter = RequestMeter(runtime.metrics.a2a_requests, METHODS)

    def endpoint(self) -> A2AEndpoint:
        if self._endpoint is None:
            from .endpoint import A2AEndpoint

            self._endpoint = A2AEndpoint(*self._parts, meter=self.meter)
        return self._endpoint

    def add_routes(self, routes: Routes) -> None:
        routes.add_get(CARD_PATH, self.card)
        routes.add_post(PATH, self.post, meter=self.meter)

    async def card(self, request: web.Request) -> web.Response:
        return await self.endpoint().card(request)

    async def post(self, request: web.Request) -> web.StreamResponse:
        return await self.endpoint().post(request)
