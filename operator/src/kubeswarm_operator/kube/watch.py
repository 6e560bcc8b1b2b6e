"""List, then watch, the Agents' children: the live views every reconcile compares with.

kopf hands each watch event to a worker of its own, through indexes, cause
detection and handler calls.  Children bring most of the operator's events
(a rollout of 1,000 Agents some 8,000), and each needs only be stored and its
Agent queued, so the operator watches them itself: one paginated listing,
then a watch resumed from the last resourceVersion seen (bookmarks keep it
fresh), a new listing when the server says that version is gone (410), and
the same server and client timeouts as kopf's watches.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from kubeswarm_runtime.resources import GROUP

from .client import ApiError, Kube
from .kinds import Key, Kind, Manifest, key_of
from .owned import MANAGED_BY, MANAGED_BY_LABEL, data_digests
from .workqueue import backoff

log = logging.getLogger(__name__)

# Told of each change after the view is updated: the object's key and view (a deleted object's last one).
Notify = Callable[[Key, Manifest], None]
PAGE_SIZE = 500
RETRY_MAX_SECONDS = 30.0  # a watch's own retries, sooner than a reconcile's: the operator is blind without it


# Annotations that can be large and that no comparison needs (the reconcilers never set them).
UNCOMPARED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", f"{GROUP}/last-handled-configuration")


# Strings up to this long are shared between the views (field names, images, label values, probe paths ...).
SHARED_STRING_LENGTH = 64


def compact(value: Any) -> Any:
    """``value`` with its keys and short strings interned: each watched object is parsed on its own, so without
    this every view holds its own copy of every field name; shared, the views take half the memory."""
    if isinstance(value, dict):
        return {sys.intern(key): compact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [compact(item) for item in value]
    if isinstance(value, str) and len(value) <= SHARED_STRING_LENGTH:
        return sys.intern(value)
    return value


def strip(body: Mapping[str, Any]) -> dict[str, Any]:
    """An object as the reconcilers read it: without managedFields and bulky annotations."""
    meta = {key: value for key, value in body.get("metadata", {}).items() if key != "managedFields"}
    if "annotations" in meta:
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k not in UNCOMPARED_ANNOTATIONS}
    return {**body, "metadata": meta}


def prune(body: Mapping[str, Any]) -> dict[str, Any]:
    """An object kept as dicts (kopf's indexes of Agents and Swarms: thousands of them), stripped and compacted."""
    pruned: dict[str, Any] = compact(strip(body))
    return pruned


def digests_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret or ConfigMap: digests of its data; ours also keep metadata (and ConfigMap data) for comparison."""
    meta = body.get("metadata", {})
    view: dict[str, Any] = {"digests": data_digests({**body.get("data", {}), **body.get("binaryData", {})})}
    if meta.get("labels", {}).get(MANAGED_BY_LABEL) == MANAGED_BY:
        view.update(apiVersion=body["apiVersion"], kind=body["kind"], metadata=strip({"metadata": meta})["metadata"])
        if body["kind"] == "ConfigMap":
            view["data"] = dict(body.get("data", {}))
        if "type" in body:
            view["type"] = body["type"]
    return view


class PackedViews(MutableMapping[Key, Manifest]):
    """The watched views of one kind, each kept as its JSON and read back as a fresh copy.

    As dicts a Deployment's view takes 9.4 KiB even with shared strings, as JSON 3.4 KiB (an Agent's five
    children 23 KiB against 9): the children are the bulk of the operator's memory at thousands of Agents, and
    a reconcile reads each of its children once (some 10 µs to decode one).
    """

    def __init__(self) -> None:
        self._packed: dict[Key, bytes] = {}

    def __getitem__(self, key: Key) -> Manifest:
        view: Manifest = orjson.loads(self._packed[key])
        return view

    def __setitem__(self, key: Key, view: Manifest) -> None:
        # Copied: orjson's own bytes keep the capacity it wrote into (8 KiB for a 3.4 KiB Deployment).
        self._packed[key] = memoryview(orjson.dumps(view)).tobytes()

    def __delitem__(self, key: Key) -> None:
        del self._packed[key]

    def __contains__(self, key: object) -> bool:
        return key in self._packed

    def __iter__(self) -> Iterator[Key]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


class Expired(Exception):
    """The resourceVersion to resume from is no longer served: list again."""


@dataclass
class ChildWatch:
    """One kind in one namespace (or all), kept in ``items`` as the views ``view`` makes of the objects."""

    kube: Kube
    kind: Kind
    namespace: str | None
    label_selector: str | None
    view: Callable[[Manifest], Manifest]
    items: MutableMapping[Key, Manifest]  # shared by the kind's watches of several namespaces
    notify: Notify
    server_timeout: int
    client_timeout: float
    field_selector: str | None = None  # e.g. metadata.name=x: one object (a Secret an Agent references)
    report_first_listing: bool = False  # a watch started late: what its first listing finds is news
    version: str = ""  # empty: list (again) before watching
    listed: bool = False
    # The keys this watch put into ``items`` (several watches share them): only these can vanish from its listing.
    seen: set[Key] = field(default_factory=set)

    def _selector(self) -> list[tuple[str, str]]:
        selectors = [("labelSelector", self.label_selector), ("fieldSelector", self.field_selector)]
        return [(name, value) for name, value in selectors if value]

    async def list(self) -> None:
        """Fill the view from a full listing, a page at a time (never the whole listing's views at once); after the
        first, report what changed or vanished meanwhile."""
        listed: set[Key] = set()
        report = self.listed or self.report_first_listing
        query = [*self._selector(), ("limit", str(PAGE_SIZE))]
        page: Manifest = {}
        while True:
            token = page.get("metadata", {}).get("continue")
            page = await self.kube.list_page(self.kind, self.namespace, query + ([("continue", token)] if token else []))
            for item in page.get("items", []):
                # Items of a list carry no apiVersion and kind; the views are compared with manifests that do.
                item.update(apiVersion=self.kind.api_version, kind=self.kind.kind)
                key, view = key_of(item), self.view(item)
                listed.add(key)
                changed = self.items.get(key) != view
                self.items[key] = view
                if changed and report:
                    self.notify(key, view)
            if not page.get("metadata", {}).get("continue"):
                break
        self.version = page["metadata"]["resourceVersion"]
        for key in self.seen - listed:
            if key in self.items:
                self.notify(key, self.items.pop(key))
        self.seen = listed
        self.listed = True

    async def list_until_done(self) -> None:
        """The first listing, retried until the API server answers (the operator is useless without it)."""
        failures = 0
        while True:
            try:
                await self.list()
                return
            except (aiohttp.ClientError, TimeoutError, ApiError) as error:
                failures += 1
                log.warning("listing %s failed (attempt %d): %s", self.kind.plural, failures, error)
                await asyncio.sleep(backoff(failures, cap=RETRY_MAX_SECONDS))

    async def watch_forever(self) -> None:
        failures = 0
        while True:
            try:
                if not self.version:
                    await self.list()
                await self._watch()
                failures = 0
            except Expired:
                self.version = ""  # list again at once
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                log.warning("watching %s failed (attempt %d): %s", self.kind.plural, failures, error)
                await asyncio.sleep(backoff(failures, base=1.0, cap=RETRY_MAX_SECONDS))

    async def _watch(self) -> None:
        """One watch request, from ``version`` until the server ends it."""
        query = [
            *self._selector(),
            ("resourceVersion", self.version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self.server_timeout)),
        ]
        try:
            async for event in self.kube.watch(self.kind, self.namespace, query, self.client_timeout):
                obj = event["object"]
                if event["type"] == "ERROR":
                    raise ApiError(int(obj.get("code", 500)), str(obj.get("message", "")))
                self.version = obj["metadata"]["resourceVersion"]
                if event["type"] == "BOOKMARK":
                    continue
                key = key_of(obj)
                view = self.view(obj)
                if event["type"] == "DELETED":
                    self.items.pop(key, None)
                    self.seen.discard(key)
                else:
                    self.items[key] = view
                    self.seen.add(key)
                self.notify(key, view)
        except ApiError as error:
            if error.status == 410:
                raise Expired from error
            raise
