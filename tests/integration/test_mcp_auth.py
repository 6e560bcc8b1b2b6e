"""Auth of the agent's HTTP surface: HS256 with the swarm key, OIDC against a local issuer (discovery + JWKS)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx2
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from kubeswarm_runtime.mcp.tools import SWARM_TOOLS
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.integration.test_mcp_support import initialize, mcp_agent, modern_call, rpc, session_headers
from tests.testbed.nats import NatsServer
from tests.testbed.procs import free_port

pytestmark = pytest.mark.integration

SWARM_KEY = "a-per-swarm-signing-key-of-32-bytes!"


def hs256(sub: str = "alice", *, key: str = SWARM_KEY, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 300, "aud": "kubeswarm", "scope": "swarm:use", **claims}, key, "HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_jwt_auth(nats_server: NatsServer) -> None:
    settings: dict[str, Any] = {"auth": "jwt", "jwt_key": SWARM_KEY, "audience": "kubeswarm", "required_scopes": ["swarm:use"]}
    async with mcp_agent(nats_server.url, **settings) as agent, aiohttp.ClientSession() as http:
        body, headers = modern_call("tools/list")
        async with http.post(agent.mcp, json=body, headers=headers) as response:
            assert response.status == 401
            challenge = response.headers["WWW-Authenticate"]
            assert challenge.startswith("Bearer ")
            assert f'resource_metadata="{agent.url}/.well-known/oauth-protected-resource"' in challenge
        for token in ("not-a-jwt", hs256(key="another-key-that-is-long-enough-32b"), hs256(exp=int(time.time()) - 10), hs256(aud="other")):
            async with http.post(agent.mcp, json=body, headers={**headers, **bearer(token)}) as response:
                assert response.status == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        async with http.post(agent.mcp, json=body, headers={**headers, **bearer(hs256(scope="read"))}) as response:
            assert response.status == 403
            assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
            assert 'scope="swarm:use"' in response.headers["WWW-Authenticate"]
        async with http.post(agent.mcp, json=body, headers={**headers, **bearer(hs256())}) as response:
            assert response.status == 200 and len((await response.json())["result"]["tools"]) == len(SWARM_TOOLS)
        async with http.post(agent.url + "/rpc", json=rpc("list_tools")) as response:
            assert response.status == 401
        for probe in ("/healthz", "/readyz", "/.well-known/oauth-protected-resource"):
            async with http.get(agent.url + probe) as response:
                assert response.status == 200, probe
        async with http.get(agent.url + "/.well-known/oauth-protected-resource/mcp") as response:
            document = await response.json()
            assert document["resource"] == agent.mcp and document["scopes_supported"] == ["swarm:use"]

        # A session belongs to the subject that opened it.
        http.headers.update(bearer(hs256("alice")))
        session_id = await initialize(http, agent.mcp)
        as_bob = {**session_headers(session_id), **bearer(hs256("bob"))}
        async with http.post(agent.mcp, json=rpc("tools/list"), headers=as_bob) as response:
            assert response.status == 404

        # The SDK client, with the token on its HTTP client.
        async with (
            httpx2.AsyncClient(headers=bearer(hs256())) as authorized,
            Client(streamable_http_client(agent.mcp, http_client=authorized)) as client,
        ):
            assert not (await client.call_tool("get_agent_info", {})).is_error


@asynccontextmanager
async def issuer() -> AsyncIterator[tuple[str, rsa.RSAPrivateKey]]:
    """A local OpenID provider: discovery document and JWKS of one RSA key (kid k1)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())) | {"kid": "k1", "alg": "RS256", "use": "sig"}

    async def discovery(_request: web.Request) -> web.Response:
        return web.json_response({"issuer": url, "jwks_uri": f"{url}/jwks"})

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield url, key
    finally:
        await runner.cleanup()


async def test_oidc_auth(nats_server: NatsServer) -> None:
    async with issuer() as (issuer_url, key):

        def token(*, signer: rsa.RSAPrivateKey = key, kid: str = "k1", **claims: Any) -> str:
            payload = {"iss": issuer_url, "aud": "agent-api", "sub": "carol", "exp": int(time.time()) + 300, "scope": "mcp", **claims}
            return jwt.encode(payload, signer, "RS256", headers={"kid": kid})

        settings: dict[str, Any] = {"auth": "oidc", "issuer": issuer_url, "audience": "agent-api", "required_scopes": ["mcp"]}
        async with mcp_agent(nats_server.url, **settings) as agent, aiohttp.ClientSession() as http:
            body, headers = modern_call("tools/list")
            async with http.post(agent.mcp, json=body, headers={**headers, **bearer(token())}) as response:
                assert response.status == 200
            stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            for bad in (token(aud="someone-else"), token(iss="http://127.0.0.1:1"), token(kid="k9"), token(signer=stranger)):
                async with http.post(agent.mcp, json=body, headers={**headers, **bearer(bad)}) as response:
                    assert response.status == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]
            async with http.post(agent.mcp, json=body, headers={**headers, **bearer(token(scope="other"))}) as response:
                assert response.status == 403
            async with http.get(agent.url + "/.well-known/oauth-protected-resource") as response:
                assert (await response.json())["authorization_servers"] == [issuer_url]
