"""The few Kubernetes API calls the reconciler makes, on kubernetes_asyncio's authenticated client.

Requests go through ``ApiClient.call_api`` with plain dicts: no generated
model classes, so one code path serves every child kind (server-side apply,
create, delete) and responses stay cheap to handle.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import uuid
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from . import metrics
from .children import KINDS_BY_NAME, Kind

Manifest = dict[str, Any]
log = logging.getLogger(__name__)
AGENT_PATH = "/apis/kubeswarm.io/v1alpha1/namespaces/{namespace}/agents/{name}"
EVENTS_PATH = "/apis/events.k8s.io/v1/namespaces/{namespace}/events"


def kind_path(kind: Kind, namespace: str, name: str | None = None) -> str:
    base = "/api/v1" if kind.group == "" else f"/apis/{kind.api_version}"
    path = f"{base}/namespaces/{namespace}/{kind.plural}"
    return f"{path}/{name}" if name else path


def namespace_terminating(error: ApiException) -> bool:
    """The namespace is being deleted: nothing can be created in it, and nothing needs to be."""
    return error.status == 403 and "NamespaceTerminating" in str(error.reason)


async def load_config() -> None:
    """In a pod, the service account; outside, the current KUBECONFIG context."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()


class Kube:
    def __init__(self, field_manager: str, api: client.ApiClient | None = None) -> None:
        self.field_manager = field_manager
        self.api = api or client.ApiClient()
        self.instance = socket.gethostname()

    async def close(self) -> None:
        await self.api.close()

    async def _call(
        self,
        verb: str,
        what: str,
        path: str,
        *,
        body: object = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Manifest:
        metrics.API_REQUESTS.labels(verb, what).inc()
        try:
            response = await self.api.call_api(
                path,
                verb,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
            raw = await response.read()
            # Without preloading, the client leaves the status check to us.
            if not 200 <= response.status <= 299:
                raise ApiException(status=response.status, reason=raw.decode(errors="replace")[:1000])
            data: Manifest = json.loads(raw)
            return data
        except ApiException as error:
            metrics.API_ERRORS.labels(verb, what, str(error.status)).inc()
            raise

    async def apply(self, obj: Manifest) -> Manifest:
        """Server-side apply under our field manager; force takes fields back from hand edits."""
        kind = KINDS_BY_NAME[obj["kind"]]
        path = kind_path(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        query = [("fieldManager", self.field_manager), ("force", "true")]
        return await self._call("PATCH", kind.kind, path, body=obj, query=query, content_type="application/apply-patch+yaml")

    async def create(self, obj: Manifest) -> Manifest | None:
        """Create, or None if it already exists (then nothing is overwritten)."""
        path = kind_path(KINDS_BY_NAME[obj["kind"]], obj["metadata"]["namespace"])
        try:
            return await self._call("POST", obj["kind"], path, body=obj, query=[("fieldManager", self.field_manager)])
        except ApiException as error:
            if error.status == 409:
                return None
            raise

    async def merge_patch(self, kind: Kind, namespace: str, name: str, patch: Manifest) -> Manifest:
        return await self._call(
            "PATCH",
            kind.kind,
            kind_path(kind, namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
            query=[("fieldManager", self.field_manager)],
        )

    async def delete(self, kind: Kind, namespace: str, name: str) -> None:
        try:
            await self._call("DELETE", kind.kind, kind_path(kind, namespace, name))
        except ApiException as error:
            if error.status != 404:
                raise

    async def patch_agent_status(self, namespace: str, name: str, status: Manifest) -> None:
        path = AGENT_PATH.format(namespace=namespace, name=name) + "/status"
        await self._call(
            "PATCH",
            "Agent",
            path,
            body={"status": status},
            content_type="application/merge-patch+json",
            query=[("fieldManager", self.field_manager)],
        )

    async def post_event(self, regarding: Manifest, type_: str, reason: str, message: str, action: str) -> None:
        """A Kubernetes Event on ``regarding`` (an object reference); failures are counted, not raised."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # Named like client-go's recorder does: the object's name and a unique suffix.
            "metadata": {"name": f"{regarding['name']}.{uuid.uuid4().hex[:16]}", "namespace": regarding["namespace"]},
            "regarding": regarding,
            "type": type_,
            "reason": reason,
            "note": message[:1024],
            "action": action,
            "eventTime": now,
            "reportingController": f"kubeswarm.io/{self.field_manager}",
            "reportingInstance": self.instance[:128],
        }
        try:
            await self._call("POST", "Event", EVENTS_PATH.format(namespace=regarding["namespace"]), body=event)
        except ApiException as error:
            # An event is not worth failing a reconcile for.
            if not namespace_terminating(error):
                log.warning("posting event %s on %s failed: %s", reason, regarding["name"], error.reason)
