"""Who may call the agent's HTTP surface and how much: origin check, bearer auth, rate limit, size and stream caps.

Auth modes (``mcp.auth``): ``none``; ``jwt`` (HS256 with the swarm's key);
``oidc`` (the issuer's JWKS, audience checked). Refusals follow RFC 6750 and
the MCP authorization spec: 401 with ``WWW-Authenticate: Bearer
resource_metadata=...`` pointing at the RFC 9728 document, 403 for a
missing scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from ..config import McpConfig
from ..resources import AuthMode
from .jsonrpc import INVALID_REQUEST, RATE_LIMITED, RpcError
from .refusal import Refused, problem

if TYPE_CHECKING:
    # PyJWT (and the cryptography it loads, ~9 MiB) is imported only when a token is checked:
    # an agent with auth "none" never loads it.
    import jwt

log = logging.getLogger(__name__)

WELL_KNOWN_RESOURCE = "/.well-known/oauth-protected-resource"
JWKS_REFRESH_MIN_SECONDS = 30.0
ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
RATE_BUCKETS_SWEEP_AT = 10_000


class Caller(NamedTuple):
    """Who calls (one per request: a named tuple, the cheapest immutable record to build)."""

    key: str  # rate-limit identity: the token subject, else the peer address
    subject: str | None = None  # authenticated principal; sessions are bound to it
    scopes: frozenset[str] = frozenset()


class ProtectedResource:
    """RFC 9728 metadata of this agent's MCP endpoint."""

    def __init__(self, config: McpConfig, endpoint: str | None) -> None:
        self.config = config
        self.endpoint = endpoint

    def resource(self, request: web.Request) -> str:
        return self.endpoint or f"{request.scheme}://{request.host}/mcp"

    def metadata_url(self, request: web.Request) -> str:
        parts = urlsplit(self.resource(request))
        return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN_RESOURCE}"

    def document(self, request: web.Request) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "resource": self.resource(request),
            "authorization_servers": [self.config.issuer] if self.config.issuer else [],
            "bearer_methods_supported": ["header"],
            "scopes_supported": list(self.config.required_scopes),
        }
        return doc

    def challenge(self, request: web.Request, error: str | None = None, description: str = "", scope: str = "") -> str:
        params = [f'resource_metadata="{self.metadata_url(request)}"']
        if error:
            params.append(f'error="{error}"')
            params.append(f'error_description="{description}"')
        if scope:
            params.append(f'scope="{scope}"')
        return "Bearer " + ", ".join(params)


class JwksKeys:
    """The issuer's signing keys, fetched through its discovery document and refreshed on an unknown key id."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer.rstrip("/")
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -math.inf
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None

    async def key(self, kid: str | None) -> jwt.PyJWK:
        import jwt

        if (found := self._pick(kid)) is not None:
            return found
        async with self._lock:
            if (found := self._pick(kid)) is None and time.monotonic() - self._fetched_at >= JWKS_REFRESH_MIN_SECONDS:
                await self._fetch()
                found = self._pick(kid)
        if found is None:
            raise jwt.InvalidTokenError("token signed with a key the issuer does not publish")
        return found

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values()), None) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        import jwt

        self._fetched_at = time.monotonic()
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._http.get(f"{self.issuer}/.well-known/openid-configuration") as response:
                response.raise_for_status()
                jwks_uri = (await response.json(content_type=None))["jwks_uri"]
            async with self._http.get(jwks_uri) as response:
                response.raise_for_status()
                key_set = jwt.PyJWKSet.from_dict(await response.json(content_type=None))
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError, jwt.PyJWTError) as exc:
            log.warning("could not fetch the signing keys of %s: %s", self.issuer, exc)
            return
        self._keys = {key.key_id or f"#{i}": key for i, key in enumerate(key_set.keys)}

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


class Authenticator:
    """Turns a request into a Caller, or raises 401/403."""

    def __init__(self, config: McpConfig, resource: ProtectedResource) -> None:
        self.config = config
        self.resource = resource
        self.jwks = JwksKeys(config.issuer) if config.auth is AuthMode.OIDC and config.issuer else None
        self.open = config.auth is AuthMode.NONE  # no token asked for
        if config.auth is AuthMode.JWT and config.jwt_key is None:
            raise ValueError("mcp.auth=jwt needs mcp.jwt_key (KUBESWARM_MCP__JWT_KEY)")
        if config.auth is AuthMode.OIDC and not config.issuer:
            raise ValueError("mcp.auth=oidc needs mcp.issuer (KUBESWARM_MCP__ISSUER)")

    @staticmethod
    def peer(request: web.Request) -> Caller:
        """An unauthenticated caller, known by its address."""
        return Caller(f"peer:{request.remote}")

    async def authenticate(self, request: web.Request) -> Caller:
        if self.open:
            return self.peer(request)
        import jwt

        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise problem(
                web.HTTPUnauthorized,
                "invalid_request",
                "a bearer token is required",
                {"WWW-Authenticate": self.resource.challenge(request)},
            )
        try:
            claims = await self._verify(token.strip(), request)
        except jwt.PyJWTError as exc:
            description = str(exc).replace('"', "'")
            raise problem(
                web.HTTPUnauthorized,
                "invalid_token",
                description,
                {"WWW-Authenticate": self.resource.challenge(request, "invalid_token", description)},
            ) from None
        scopes = _scopes(claims)
        if missing := [s for s in self.config.required_scopes if s not in scopes]:
            wanted = " ".join(self.config.required_scopes)
            description = f"the token lacks scope {' '.join(missing)}"
            raise problem(
                web.HTTPForbidden,
                "insufficient_scope",
                description,
                {"WWW-Authenticate": self.resource.challenge(request, "insufficient_scope", description, wanted)},
            )
        subject = str(claims.get("sub") or claims.get("client_id") or "token")
        return Caller(key=f"sub:{subject}", subject=subject, scopes=frozenset(scopes))

    async def _verify(self, token: str, request: web.Request) -> dict[str, Any]:
        import jwt

        cfg = self.config
        options = {"require": ["exp"], "verify_aud": cfg.audience is not None or cfg.auth is AuthMode.OIDC}
        if cfg.auth is AuthMode.JWT:
            assert cfg.jwt_key is not None
            key: Any = cfg.jwt_key.get_secret_value()
            algorithms = ["HS256"]
        else:
            assert self.jwks is not None
            signing = await self.jwks.key(jwt.get_unverified_header(token).get("kid"))
            key, algorithms = signing, [signing.algorithm_name] if signing.algorithm_name in ASYMMETRIC_ALGORITHMS else []
        # oidc without a configured audience: the token must be meant for this resource (RFC 8707).
        audience = cfg.audience or (self.resource.resource(request) if cfg.auth is AuthMode.OIDC else None)
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=algorithms, audience=audience, issuer=cfg.issuer, options=options)  # type: ignore[arg-type]
        return claims

    async def close(self) -> None:
        if self.jwks is not None:
            await self.jwks.close()


def _scopes(claims: dict[str, Any]) -> set[str]:
    value = claims.get("scope", claims.get("scp", ""))
    return set(value.split()) if isinstance(value, str) else {str(s) for s in value} if isinstance(value, list) else set()


class RateLimiter:
    """A token bucket per caller: ``rate`` requests a second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def wait_seconds(self, key: str, requests: int = 1) -> float:
        """0 and ``requests`` tokens taken if the caller may go on now; else how long until it may."""
        if self.rate <= 0 or requests <= 0:
            return 0.0
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < requests:
            self._buckets[key] = (tokens, now)
            return (requests - tokens) / self.rate
        self._buckets[key] = (tokens - requests, now)
        if len(self._buckets) > RATE_BUCKETS_SWEEP_AT:
            self._sweep(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        # A bucket that would be full again carries no state worth keeping.
        refill = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}


class StreamSlots:
    """A cap on concurrent long-lived connections (SSE, WebSocket)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self.open >= self.limit:
            raise problem(
                web.HTTPServiceUnavailable,
                "too_many_streams",
                f"this agent serves at most {self.limit} streams at once",
                {"Retry-After": "1"},
            )
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


class SessionWork:
    """Requests a replica is answering per session, at most ``limit`` each (their work may outlive the client's connection)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running: dict[str, int] = {}

    def start(self, session_id: str) -> bool:
        """Count one more request of the session; False (nothing counted) when it already has ``limit`` running."""
        running = self._running.get(session_id, 0)
        if running >= self.limit:
            return False
        self._running[session_id] = running + 1
        return True

    def finished(self, session_id: str) -> None:
        left = self._running.pop(session_id) - 1
        if left:
            self._running[session_id] = left


class Guard:
    """Every request of the MCP surface passes here first: origin, authentication, rate limit."""

    def __init__(self, config: McpConfig, endpoint: str | None) -> None:
        self.config = config
        self.resource = ProtectedResource(config, endpoint)
        self.auth = Authenticator(config, self.resource)
        self.limiter = RateLimiter(config.rate_limit_per_second, config.rate_limit_burst)
        self.allowed_origins = frozenset(o.rstrip("/") for o in config.allowed_origins)
        self.allowed_hosts = frozenset(h.lower().rstrip(".") for h in config.allowed_hosts)

    async def admit(self, request: web.Request) -> Caller:
        if self.allowed_hosts and not self._host_allowed(request.host):
            raise problem(web.HTTPMisdirectedRequest, "forbidden_host", f"this endpoint does not answer to host {request.host!r}")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request):
            raise problem(web.HTTPForbidden, "forbidden_origin", f"origin {origin!r} may not call this endpoint")
        auth = self.auth
        caller = auth.peer(request) if auth.open else await auth.authenticate(request)
        self.admit_messages(caller, 1)
        return caller

    def admit_messages(self, caller: Caller, messages: int) -> None:
        """Take ``messages`` JSON-RPC messages from the caller's bucket, or 429: every message of a batch counts."""
        if (refused := self.rate_limited(caller, messages)) is not None:
            raise refused

    def rate_limited(self, caller: Caller, messages: int) -> Refused | None:
        """Take ``messages`` from the caller's bucket; None when it had them, else the refusal (none taken)."""
        wait = self.limiter.wait_seconds(caller.key, messages)
        if wait <= 0:
            return None
        return Refused(web.HTTPTooManyRequests, "rate_limited", "too many requests from this caller", RATE_LIMITED, retry_after(wait))

    def check_batch(self, size: int) -> None:
        """A batch larger than the burst could never be admitted: refuse it as invalid rather than ask for a retry."""
        if self.limiter.rate > 0 and size > self.limiter.burst:
            raise RpcError(
                INVALID_REQUEST, f"Invalid request: a batch holds at most {int(self.limiter.burst)} messages (the rate limit burst)"
            )

    def _host_allowed(self, host: str) -> bool:
        # DNS rebinding defence: a page of a name that now resolves here sends that name as Host; a name
        # must be one of ours. An address literal cannot be rebound, so callers by IP (probes, tools) pass.
        if not self.allowed_hosts:
            return True
        name = (urlsplit(f"//{host}").hostname or "").rstrip(".")
        if name in self.allowed_hosts or name == "localhost":
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def _origin_allowed(self, origin: str, request: web.Request) -> bool:
        # DNS rebinding defence: a browser page may call only from this host or a configured origin.
        return origin.rstrip("/") in self.allowed_origins or urlsplit(origin).netloc == request.host

    async def read_body(self, request: web.Request) -> bytes:
        """The request body, or 413 past the size limit / 408 for a client too slow to send it."""
        limit = self.config.max_request_bytes
        length = request.content_length  # parsed from the header on each read
        if length is not None and length > limit:
            raise _too_large(limit, length)
        if request.content.is_eof():  # the usual small request: already all here
            return request.content.read_nowait()
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.config.request_read_timeout_seconds):
                async for chunk in request.content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit, size)
                    chunks.append(chunk)
        except TimeoutError:
            raise problem(web.HTTPRequestTimeout, "request_timeout", "the request body did not arrive in time") from None
        return b"".join(chunks)


def retry_after(wait_seconds: float) -> int:
    """A Retry-After value: whole seconds, at least 1."""
    return max(1, math.ceil(wait_seconds))


def _too_large(limit: int, size: int) -> web.HTTPException:
    return problem(
        web.HTTPRequestEntityTooLarge, "request_too_large", f"requests are limited to {limit} bytes", max_size=limit, actual_size=size
    )
