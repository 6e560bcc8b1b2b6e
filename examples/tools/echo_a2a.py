"""An A2A agent built with the official a2a-sdk server, for the A2A tool example and tests: it shouts what it is sent.

    python -m examples.tools.echo_a2a --port 8600 [--token SECRET]

Serves its Agent Card at /.well-known/agent-card.json and the JSON-RPC binding at /. With --token, every request
must carry ``Authorization: Bearer SECRET`` (401 otherwise), and the card says so.
"""

from __future__ import annotations

import argparse

import uvicorn
from a2a.helpers.proto_helpers import get_message_text, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes.agent_card_routes import create_agent_card_routes
from a2a.server.routes.jsonrpc_routes import create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2 as a2a
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class Shouter(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None and context.context_id is not None and context.message is not None
        if context.current_task is None:  # the protocol's order: the Task first, then its updates
            task = new_task_from_user_message(context.message)
            task.id, task.context_id = context.task_id, context.context_id
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        text = get_message_text(context.message)
        if text == "fail":
            await updater.failed(updater.new_agent_message([new_text_part("asked to fail")]))
            return
        await updater.add_artifact([new_text_part(text.upper() + "!")], name="shout")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        return None


def card(port: int, token: str | None) -> a2a.AgentCard:
    agent_card = a2a.AgentCard(
        name="shouter",
        description="Repeats what it is sent, louder.",
        version="1.0.0",
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        capabilities=a2a.AgentCapabilities(streaming=False),
        skills=[a2a.AgentSkill(id="shout", name="shout", description="upper-cases the message", tags=["text"])],
        supported_interfaces=[a2a.AgentInterface(url=f"http://127.0.0.1:{port}/", protocol_binding="JSONRPC", protocol_version="1.0")],
    )
    if token:
        agent_card.security_schemes["bearer"].http_auth_security_scheme.scheme = "Bearer"
        agent_card.security_requirements.add().schemes["bearer"].list.extend([])
    return agent_card


def build_app(port: int, token: str | None) -> Starlette:
    agent_card = card(port, token)
    handler = DefaultRequestHandler(agent_executor=Shouter(), task_store=InMemoryTaskStore(), agent_card=agent_card)
    app = Starlette(routes=[*create_agent_card_routes(agent_card), *create_jsonrpc_routes(handler, "/")])
    if token:

        async def bearer(request: Request, call_next: RequestResponseEndpoint) -> Response:
            if request.url.path != "/.well-known/agent-card.json" and request.headers.get("Authorization") != f"Bearer {token}":
                return JSONResponse({"error": "a bearer token is required"}, status_code=401)
            return await call_next(request)

        app.add_middleware(BaseHTTPMiddleware, dispatch=bearer)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--token")
    args = parser.parse_args()
    uvicorn.run(build_app(args.port, args.token), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
