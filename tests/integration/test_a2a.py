"""A2A: the official a2a-sdk client against an agent on a real nats-server, through the same JWT auth as MCP.

An A2A task is a kubeswarm task: the ids, states and results the A2A client sees are the ones
the swarm's TaskService (``kubeswarm task``, MCP ``get_task``) and the task metrics see.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
from a2a.client import A2ACardResolver, Client, ClientCallContext, ClientCallInterceptor, ClientConfig, ClientFactory
from a2a.client.auth import AuthInterceptor, CredentialService
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import InvalidParamsError, TaskNotCancelableError, TaskNotFoundError, UnsupportedOperationError
from google.protobuf import json_format
from kubeswarm_runtime.tasks import TaskState

from tests.integration.runtime_helpers import wait_for
from tests.integration.test_mcp_support import Agent, mcp_agent, rpc
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.integration

SWARM_KEY = "a-per-swarm-signing-key-of-32-bytes!"
JWT_AUTH: dict[str, Any] = {"auth": "jwt", "jwt_key": SWARM_KEY, "audience": "kubeswarm", "required_scopes": ["swarm:use"]}


def hs256(sub: str = "alice") -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 300, "aud": "kubeswarm", "scope": "swarm:use"}, SWARM_KEY, "HS256")


class Token(CredentialService):
    """The caller's bearer token, for whatever scheme the card asks it for."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.asked: list[str] = []

    async def get_credentials(self, security_scheme_name: str, context: ClientCallContext | None) -> str | None:
        self.asked.append(security_scheme_name)
        return self.token


@asynccontextmanager
async def a2a_client(agent: Agent, *, streaming: bool, token: str | None = None) -> AsyncIterator[tuple[Client, a2a.AgentCard]]:
    """The SDK's client for the agent, made the SDK's way: card resolved from the base URL, bearer added by its AuthInterceptor."""
    async with httpx.AsyncClient(timeout=30) as http:
        card = await A2ACardResolver(http, agent.url).get_agent_card()
        interceptors: list[ClientCallInterceptor] = [AuthInterceptor(Token(token))] if token else []
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card, interceptors)
        try:
            yield client, card
        finally:
            await client.close()


def text_message(text: str, **metadata: Any) -> a2a.SendMessageRequest:
    message = a2a.Message(message_id=uuid.uuid4().hex, role=a2a.ROLE_USER, parts=[a2a.Part(text=text)])
    if metadata:
        message.metadata.update(metadata)
    return a2a.SendMessageRequest(message=message)


async def responses(client: Client, request: a2a.SendMessageRequest) -> list[a2a.StreamResponse]:
    return [event async for event in client.send_message(request)]


async def test_agent_card_skills_url_and_auth(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url, **JWT_AUTH) as agent, a2a_client(agent, streaming=False) as (_client, card):
        assert card.name == "agent"
        assert [s.id for s in card.skills] == ["echo", "gated"]
        (interface,) = card.supported_interfaces
        assert interface.url == agent.url + "/a2a"
        assert (interface.protocol_binding, interface.protocol_version) == ("JSONRPC", "1.0")
        assert card.capabilities.streaming
        scheme = card.security_schemes["bearer"].http_auth_security_scheme
        assert (scheme.scheme, scheme.bearer_format) == ("Bearer", "JWT")
        assert list(card.security_requirements[0].schemes["bearer"].list) == ["swarm:use"]


async def test_send_message_is_a_swarm_task(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url, **JWT_AUTH) as agent, a2a_client(agent, streaming=False, token=hs256()) as (client, _card):
        request = text_message("hello over A2A")
        (response,) = await responses(client, request)
        task = response.task
        assert task.status.state == a2a.TASK_STATE_COMPLETED
        result = json_format.MessageToDict(task.artifacts[0].parts[0].data)
        assert result["echo"] == "hello over A2A" and result["capability"] == "echo"
        assert task.history[0].parts[0].text == "hello over A2A"
        # The same task in the swarm: TaskService (what MCP get_task and `kubeswarm task` read) and the task metrics.
        record = await agent.runtime.swarm.tasks.get(task.id)
        assert record is not None and record.state is TaskState.SUCCEEDED and record.result == result
        assert agent.runtime.metrics.registry.get_sample_value("kubeswarm_tasks_total", {"capability": "echo", "outcome": "succeeded"}) == 1
        # GetTask reads it back; the same message sent again is the same task (a retried send creates one task).
        fetched = await client.get_task(a2a.GetTaskRequest(id=task.id))
        assert fetched.id == task.id and fetched.status.state == a2a.TASK_STATE_COMPLETED
        (again,) = await responses(client, request)
        assert again.task.id == task.id
        assert len((await agent.runtime.swarm.tasks.list(capability="echo")).tasks) == 1
        # A skill chosen in the message's metadata; data parts in and out.
        data = a2a.SendMessageRequest(message=a2a.Message(message_id=uuid.uuid4().hex, role=a2a.ROLE_USER))
        data.message.parts.add().data.struct_value.update({"n": 3})
        data.message.metadata.update({"skill": "echo", "priority": "high"})
        (answer,) = await responses(client, data)
        assert json_format.MessageToDict(answer.task.artifacts[0].parts[0].data)["echo"] == {"n": 3}
        assert (await agent.runtime.swarm.tasks.get(answer.task.id)).priority.value == "high"  # type: ignore[union-attr]


async def test_refusals_are_a2a_errors(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url, **JWT_AUTH) as agent:
        # No token: the same 401 as MCP, with the challenge.
        async with httpx.AsyncClient() as http:
            response = await http.post(agent.url + "/a2a", json=rpc("GetTask", {"id": "x"}), headers={"A2A-Version": "1.0"})
            assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer ")
        async with a2a_client(agent, streaming=False, token=hs256()) as (client, _card):
            with pytest.raises(TaskNotFoundError):
                await client.get_task(a2a.GetTaskRequest(id="no-such-task"))
            with pytest.raises(InvalidParamsError, match="skill"):
                await responses(client, text_message("x", skill="unknown"))
            (done,) = await responses(client, text_message("finished"))
            with pytest.raises(TaskNotCancelableError):
                await client.cancel_task(a2a.CancelTaskRequest(id=done.task.id))
        # A client speaking 0.3 (no A2A-Version header) is told which version this is.
        async with httpx.AsyncClient() as http:
            headers = {"Authorization": f"Bearer {hs256()}"}
            body = rpc("GetTask", {"id": "x"}) | {"id": "1"}
            reply = (await http.post(agent.url + "/a2a", json=body, headers=headers)).json()
            assert reply["error"]["code"] == -32009 and "A2A-Version: 1.0" in reply["error"]["message"]
            status, bad = await post_a2a(http, agent, {"jsonrpc": "2.0", "id": 2, "method": "SendMessage", "params": {"message": 5}})
            assert status == 200 and bad["error"]["code"] == -32602
        assert agent.runtime.metrics.registry.get_sample_value(
            "kubeswarm_a2a_requests_total", {"method": "GetTask", "outcome": "error", "code": "-32001"}
        )


async def post_a2a(http: httpx.AsyncClient, agent: Agent, body: dict[str, Any]) -> tuple[int, Any]:
    response = await http.post(agent.url + "/a2a", json=body, headers={"Authorization": f"Bearer {hs256()}", "A2A-Version": "1.0"})
    return response.status_code, response.json()


async def test_streaming_follows_the_task_and_cancel_ends_it(nats_server: NatsServer) -> None:
    async with mcp_agent(nats_server.url, **JWT_AUTH) as agent, a2a_client(agent, streaming=True, token=hs256()) as (client, _card):
        # A task that finishes: submitted, then its result as an artifact, then completed.
        events = await responses(client, text_message("streamed"))
        assert events[0].task.status.state == a2a.TASK_STATE_SUBMITTED
        assert events[-2].artifact_update.artifact.parts[0].data.struct_value["echo"] == "streamed"
        assert events[-1].status_update.status.state == a2a.TASK_STATE_COMPLETED
        # A task held at the gate: the stream shows it working; CancelTask (another client) ends the stream as canceled.
        stream = client.send_message(text_message("held", skill="gated"))
        first = await anext(stream)
        task_id = first.task.id
        await asyncio.wait_for(agent.handler.entered.wait(), 10)
        async with a2a_client(agent, streaming=False, token=hs256()) as (other, _card):
            canceled = await other.cancel_task(a2a.CancelTaskRequest(id=task_id))
        assert canceled.status.state == a2a.TASK_STATE_CANCELED
        states = [e.status_update.status.state async for e in stream if e.HasField("status_update")]
        assert states[-1] == a2a.TASK_STATE_CANCELED

        async def cancelled_in_swarm() -> bool:
            record = await agent.runtime.swarm.tasks.get(task_id)
            return record is not None and record.state is TaskState.CANCELLED

        await wait_for(cancelled_in_swarm, what="the A2A cancel to reach the swarm's task")


async def test_subscribe_to_a_task_created_over_mcp_tools(nats_server: NatsServer) -> None:
    """A task created by the swarm (as MCP create_task does) is followed over A2A: one task, whichever door."""
    async with mcp_agent(nats_server.url, **JWT_AUTH) as agent, a2a_client(agent, streaming=True, token=hs256()) as (client, _card):
        record = await agent.runtime.swarm.tasks.create("gated", "from MCP")
        events = client.subscribe(a2a.SubscribeToTaskRequest(id=record.id))
        first = await anext(events)
        assert first.task.id == record.id and first.task.history[0].parts[0].text == "from MCP"
        await asyncio.wait_for(agent.handler.entered.wait(), 10)
        agent.handler.gate.set()
        rest = [e async for e in events]
        assert rest[-1].status_update.status.state == a2a.TASK_STATE_COMPLETED
        with pytest.raises(UnsupportedOperationError):
            await anext(client.subscribe(a2a.SubscribeToTaskRequest(id=record.id)))  # ended: nothing to follow
