"""Webhook triggers (``spec.triggers.webhooks``): ``POST /hooks/<name>``, a signed call becomes a task (docs/triggers.md).

The call carries ``X-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` (GitHub's ``X-Hub-Signature-256``
too); the body (JSON, else text) is the task input; 202 with the task id. A bad or missing signature is 401
and creates nothing; an ``Idempotency-Key`` (or ``X-GitHub-Delivery``) header makes a retried call one task.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
from collections.abc import Callable

from aiohttp import web

from .codec import DecodeError, decode_json
from .config import WebhookConfig
from .mcp.http import json_response
from .mcp.refusal import problem
from .mcp.routes import Routes
from .mcp.security import Authenticator, Guard
from .tasks import TaskService

log = logging.getLogger(__name__)

SIGNATURE_HEADERS = ("X-Signature-256", "X-Hub-Signature-256")
IDEMPOTENCY_HEADERS = ("Idempotency-Key", "X-GitHub-Delivery")
PATH = "/hooks/{name}"


class Webhooks:
    """``POST /hooks/<name>``: a signed call becomes a task."""

    def __init__(self, tasks: Callable[[], TaskService], hooks: list[WebhookConfig], guard: Guard) -> None:
        self.tasks = tasks
        self.guard = guard
        self.hooks = {hook.name: hook for hook in hooks}
        # Read once: a key that is missing leaves its hook refusing every call (never unsigned).
        self.keys = {hook.name: os.environ.get(hook.key_env, "").encode() for hook in hooks}
        for name, key in self.keys.items():
            if not key:
                log.error("webhook %s has no key (%s is empty): it refuses every call", name, self.hooks[name].key_env)

    def add_routes(self, routes: Routes) -> None:
        if self.hooks:
            routes.add_post(PATH, self.post)

    async def post(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hook = self.hooks.get(name)
        if hook is None:
            raise problem(web.HTTPNotFound, "no_such_webhook", f"this agent has no webhook {name!r}")
        self.guard.admit_messages(Authenticator.peer(request), 1)
        key = self.keys[name]
        if not key:
            raise problem(web.HTTPServiceUnavailable, "webhook_without_key", "this webhook has no key configured", {"Retry-After": "60"})
        body = await self.guard.read_body(request)
        signature = next((request.headers[h] for h in SIGNATURE_HEADERS if h in request.headers), "")
        expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.strip().encode(), expected.encode()):
            reason = "the X-Signature-256 header is missing" if not signature else "the signature does not match the body"
            raise problem(web.HTTPUnauthorized, "invalid_signature", f"{reason}: send sha256=<hex HMAC-SHA256 of the body with the key>")
        task_input = webhook_input(body)
        delivery = next((request.headers[h] for h in IDEMPOTENCY_HEADERS if h in request.headers), None)
        task_id = f"hook-{name}-{hashlib.sha256(delivery.encode()).hexdigest()[:32]}" if delivery else None
        record = await self.tasks().create(hook.capability, task_input, task_id=task_id)
        return json_response({"task_id": record.id, "state": record.state.value}, status=202)


def webhook_input(body: bytes) -> object:
    """A call's body as a task input: its JSON value, else its text; an empty body is null."""
    if not body.strip():
        return None
    with contextlib.suppress(DecodeError):
        return decode_json(body)
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise problem(web.HTTPBadRequest, "invalid_body", "the body is neither JSON nor UTF-8 text") from None
