"""The operator's one door to the Kubernetes API, on a plain aiohttp session.

Every request the operator makes, the children's watches included, goes
through :class:`Kube`, so all are counted in the same metrics and share the
same login.  Requests carry plain dicts (no generated model classes), so one
code path serves every kind (server-side apply, create, delete).  Credentials are
kopf's own: the service account in a pod, else the current KUBECONFIG
context; a 401 (a rotated service-account token) logs in again once.
The operator does not import a Kubernetes client library: the generated
models of one cost some 70 MiB of memory.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import kopf

from .. import metrics
from .kinds import KINDS_BY_NAME, SECRET, Kind, Manifest

log = logging.getLogger(__name__)
# core/v1, not events.k8s.io/v1: only core Events may carry lastTimestamp, which `kubectl get events
# --sort-by=.lastTimestamp` and the LAST SEEN column read.
EVENTS_PATH = "/api/v1/namespaces/{namespace}/events"
# Per connect and per silence, not in all: a request waiting for one of the pooled connections is not failed for it
# (the work queue bounds how many wait).
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
HAND_OVER_ATTEMPTS = 5


FieldsTree = dict[str, Any]


def field_paths(tree: FieldsTree, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The leaves of a managedFields ``fieldsV1`` tree (``"."``, "the map itself", left out)."""
    paths: set[tuple[str, ...]] = set()
    for key, child in tree.items():
        if key == ".":
            continue
        paths |= field_paths(child, (*prefix, key)) if child else {(*prefix, key)}
    return paths


def merged_fields(one: FieldsTree, other: FieldsTree) -> FieldsTree:
    """The union of two ``fieldsV1`` trees."""
    out = dict(one)
    for key, child in other.items():
        out[key] = merged_fields(out[key], child) if key in out else child
    return out


def handed_to_apply(managed: list[Manifest], manager: str, not_applied: frozenset[str]) -> list[Manifest] | None:
    """``managed`` with the fields only ``manager``'s ``Update`` entry holds moved to its ``Apply`` entry (but the
    top-level ones named in ``not_applied``); None where there are none (nothing a later apply would fail to remove).
    """

    def ours(entry: Manifest, operation: str) -> bool:
        return entry.get("manager") == manager and entry.get("operation") == operation and not entry.get("subresource")

    updated = next((entry for entry in managed if ours(entry, "Update")), None)
    applied = next((entry for entry in managed if ours(entry, "Apply")), None)
    if updated is None or applied is None:
        return None
    tree = updated.get("fieldsV1") or {}
    moved = {key: child for key, child in tree.items() if key.removeprefix("f:") not in not_applied}
    kept = {key: child for key, child in tree.items() if key not in moved}
    if not field_paths(moved) - field_paths(applied.get("fieldsV1") or {}):
        return None
    out: list[Manifest] = []
    for entry in managed:
        if entry is applied:
            out.append({**entry, "fieldsV1": merged_fields(entry.get("fieldsV1") or {}, moved)})
        elif entry is not updated:
            out.append(entry)
        elif kept:
            out.append({**entry, "fieldsV1": kept})
    return out


class ApiError(Exception):
    """The API server answered with an error status; ``reason`` is the start of its response body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"({status}) {reason}")
        self.status = status
        self.reason = reason


class KindNotInstalled(ApiError):
    """The API server does not serve this kind (e.g. the Gateway API CRDs are not installed)."""


def collection_path(kind: Kind, namespace: str | None) -> str:
    """The kind's objects in one namespace, or in all (``namespace=None``)."""
    base = "/api/v1" if kind.group == "" else f"/apis/{kind.api_version}"
    return f"{base}/namespaces/{namespace}/{kind.plural}" if namespace else f"{base}/{kind.plural}"


def kind_path(kind: Kind, namespace: str, name: str | None = None) -> str:
    path = collection_path(kind, namespace)
    return f"{path}/{name}" if name else path


def namespace_terminating(error: ApiError) -> bool:
    """The namespace is being deleted: nothing can be created in it, and nothing needs to be."""
    return error.status == 403 and "NamespaceTerminating" in str(error.reason)


def login() -> kopf.ConnectionInfo:
    """In a pod, the service account; outside, the current KUBECONFIG context (as kopf's watches log in)."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no service account and no kubeconfig to log in with")
    return info


class Kube:
    def __init__(self, field_manager: str, connect: Callable[[], kopf.ConnectionInfo] = login, *, connections: int = 100) -> None:
        """``connections``: at most this many at once (0: no limit, for long watch requests)."""
        self.field_manager = field_manager
        self.instance = socket.gethostname()
        self._connect = connect
        self._connections = connections
        self._server = ""
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            info = self._connect()
            self._server = info.server.rstrip("/")
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context(), limit=self._connections),
                headers={**info.as_http_headers(), "Accept": "application/json", "User-Agent": "kubeswarm-operator"},
                timeout=TIMEOUT,
                trust_env=info.trust_env,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(
        self,
        verb: str,
        what: str,
        path: str,
        *,
        body: object = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        parse: bool = True,
    ) -> Manifest:
        """The answer parsed; ``parse=False``: read (the connection is reused) but not parsed, an empty dict returned."""
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        async with self._response(
            verb, what, verb, path, params=query or None, data=data, headers={"Content-Type": content_type}
        ) as response:
            answer = await response.read()
        # Most writes' answers are never read: a whole object, managedFields included, not worth parsing.
        result: Manifest = json.loads(answer) if parse else {}
        return result

    @contextlib.asynccontextmanager
    async def _response(self, label: str, what: str, method: str, path: str, **request: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        """A successful response, counted under ``label`` and ``what``; a 401 (a rotated token) logs in again once.

        Any other status outside 2xx is counted and raised as :class:`ApiError`.
        """
        metrics.API_REQUESTS.labels(label, what).inc()
        for attempt in (1, 2):
            session = self._open()
            async with session.request(method, self._server + path, **request) as response:
                if response.status == 401 and attempt == 1:
                    await session.close()
                    continue
                if not 200 <= response.status <= 299:
                    metrics.API_ERRORS.labels(label, what, str(response.status)).inc()
                    raise ApiError(response.status, (await response.read()).decode(errors="replace")[:1000])
                yield response
                return

    async def list_page(self, kind: Kind, namespace: str | None, query: list[tuple[str, str]]) -> Manifest:
        """One page of a listing (``limit`` and ``continue`` in ``query``)."""
        return await self._call("GET", kind.kind, collection_path(kind, namespace), query=query)

    async def watch(self, kind: Kind, namespace: str | None, query: list[tuple[str, str]], read_timeout: float) -> AsyncIterator[Manifest]:
        """The events of one watch request, parsed, until the server ends it.

        ``read_timeout``: the longest silence tolerated (a stalled connection
        otherwise hangs forever); bookmarks keep a healthy one talking.
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT.sock_connect, sock_read=read_timeout)
        params = [*query, ("watch", "true")]
        async with self._response("WATCH", kind.kind, "GET", collection_path(kind, namespace), params=params, timeout=timeout) as response:
            # One JSON document per line; a line can outgrow any chunk (a large Secret), so lines are cut here.
            buffer = bytearray()
            async for chunk in response.content.iter_any():
                buffer.extend(chunk)
                start = 0
                while (end := buffer.find(b"\n", start)) >= 0:
                    if end > start:
                        yield json.loads(buffer[start:end])
                    start = end + 1
                del buffer[:start]

    async def apply(self, obj: Manifest, field_manager: str | None = None, *, not_applied: frozenset[str] = frozenset()) -> Manifest:
        """Server-side apply under ``field_manager`` (default: ours); force takes fields back from hand edits.

        An object we created (a POST: an ``Update`` entry of our manager) keeps, in that entry, fields the apply no
        longer sets; they are handed to the apply (as kubectl does when it moves an object to server-side apply)
        and applied again, so that they go. ``not_applied``: top-level fields (``data`` of a Secret) we write by
        other means, left where they are.
        """
        kind = KINDS_BY_NAME[obj["kind"]]
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        path = kind_path(kind, namespace, name)
        manager = field_manager or self.field_manager
        query = [("fieldManager", manager), ("force", "true")]
        content_type = "application/apply-patch+yaml"
        try:
            applied = await self._call("PATCH", kind.kind, path, body=obj, query=query, content_type=content_type)
        except ApiError as error:
            # An apply creates what is missing, so a 404 means the kind itself is unknown.
            if error.status == 404 and kind.optional:
                message = f"the cluster does not serve {kind.kind} ({kind.api_version}); install its CRDs"
                raise KindNotInstalled(error.status, message) from None
            raise
        current: Manifest | None = applied
        for _ in range(HAND_OVER_ATTEMPTS):
            meta = current.get("metadata", {}) if current is not None else {}
            handed = handed_to_apply(meta.get("managedFields") or [], manager, not_applied)
            if handed is None:
                return applied
            # Replaced as read: a write in between (a controller's status) fails the test (422); read again.
            patch = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
                {"op": "replace", "path": "/metadata/managedFields", "value": handed},
            ]
            try:
                await self._call("PATCH", kind.kind, path, body=patch, content_type="application/json-patch+json", parse=False)
            except ApiError as error:
                if error.status != 422:
                    raise
                current = await self.get(kind, namespace, name)
                continue
            return await self._call("PATCH", kind.kind, path, body=obj, query=query, content_type=content_type)
        raise ApiError(409, f"{kind.kind} {namespace}/{name} kept changing while its fields were handed to the apply")

    async def create(self, obj: Manifest) -> bool:
        """Create (POST): False, writing nothing, if an object of that name exists (ours or not).

        Cheaper on the API server than a create by apply (about half the time); a later :meth:`apply` takes the
        fields over.
        """
        path = kind_path(KINDS_BY_NAME[obj["kind"]], obj["metadata"]["namespace"])
        try:
            await self._call("POST", obj["kind"], path, body=obj, query=[("fieldManager", self.field_manager)], parse=False)
        except ApiError as error:
            if error.status == 409:
                return False
            raise
        return True

    async def get(self, kind: Kind, namespace: str, name: str) -> Manifest | None:
        """The object, or None if it (or its kind) does not exist."""
        try:
            return await self._call("GET", kind.kind, kind_path(kind, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list_selected(self, kind: Kind, namespace: str, label_selector: str) -> list[Manifest]:
        """Objects of a kind in a namespace matching the selector; none if the kind is not served."""
        try:
            found = await self._call("GET", kind.kind, kind_path(kind, namespace), query=[("labelSelector", label_selector)])
        except ApiError as error:
            if error.status == 404:
                return []
            raise
        items: list[Manifest] = found.get("items", [])
        return items

    async def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One decoded value of a Secret, or None if the Secret or key is missing."""
        secret = await self.get(SECRET, namespace, name)
        encoded = (secret or {}).get("data", {}).get(key)
        return base64.b64decode(encoded).decode() if encoded is not None else None

    async def merge_patch(
        self, kind: Kind, namespace: str, name: str, patch: Manifest, subresource: str = "", *, parse: bool = True
    ) -> Manifest:
        """A JSON merge patch of the object or of one of its subresources (``status``, ``scale``)."""
        path = kind_path(kind, namespace, name) + (f"/{subresource}" if subresource else "")
        content_type, query = "application/merge-patch+json", [("fieldManager", self.field_manager)]
        return await self._call("PATCH", kind.kind, path, body=patch, content_type=content_type, query=query, parse=parse)

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Manifest) -> None:
        await self.merge_patch(kind, namespace, name, {"status": status}, subresource="status", parse=False)

    async def scale(self, kind: Kind, namespace: str, name: str, replicas: int) -> None:
        """Set replicas through the scale subresource, as an HPA does."""
        await self.merge_patch(kind, namespace, name, {"spec": {"replicas": replicas}}, subresource="scale")

    async def delete(self, kind: Kind, namespace: str, name: str) -> None:
        try:
            await self._call("DELETE", kind.kind, kind_path(kind, namespace, name))
        except ApiError as error:
            if error.status != 404:
                raise

    async def post_event(self, regarding: Manifest, type_: str, reason: str, message: str, action: str) -> None:
        """A Kubernetes Event on ``regarding`` (an object reference); failures are counted, not raised."""
        now = dt.datetime.now(dt.UTC)
        seconds = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            # Named like client-go's recorder does: the object's name and a unique suffix.
            "metadata": {"name": f"{regarding['name']}.{uuid.uuid4().hex[:16]}", "namespace": regarding["namespace"]},
            "involvedObject": regarding,
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "action": action,
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "firstTimestamp": seconds,
            "lastTimestamp": seconds,
            "count": 1,
            "source": {"component": f"kubeswarm.io/{self.field_manager}"},
            "reportingComponent": f"kubeswarm.io/{self.field_manager}",
            "reportingInstance": self.instance[:128],
        }
        try:
            await self._call("POST", "Event", EVENTS_PATH.format(namespace=regarding["namespace"]), body=event, parse=False)
        except ApiError as error:
            # An event is not worth failing a reconcile for.
            if not namespace_terminating(error):
                log.warning("posting event %s on %s failed: %s", reason, regarding["name"], error.reason)
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("posting event %s on %s failed: %r", reason, regarding["name"], error)
