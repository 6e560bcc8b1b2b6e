"""The operator's own watches of an Agent's children, against the real API server.

A listing fills the view, a watch keeps it current and reports each change,
a label selector keeps others' objects out, and a new listing (what a 410
leads to) reports what changed meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubeswarm_operator.children import CONFIG_MAP, MANAGED_SELECTOR, Kind
from kubeswarm_operator.handlers import prune
from kubeswarm_operator.kube import Kube, Manifest
from kubeswarm_operator.signals import Key
from kubeswarm_operator.watching import ChildWatch

from tests.e2e.conftest import Namespace
from tests.testbed.cluster import KubeAccess

OURS = {"app.kubernetes.io/managed-by": "kubeswarm-operator"}


class CountingKube(Kube):
    """The real client, counting its listings (to tell a relist from a resumed watch)."""

    def __init__(self) -> None:
        super().__init__("watch-test", connections=0)
        self.listings = 0

    async def list_page(self, kind: Kind, namespace: str | None, query: list[tuple[str, str]]) -> Manifest:
        self.listings += 1
        return await super().list_page(kind, namespace, query)


class Reports:
    """What a watch reported, and a wake-up for whoever waits on its view."""

    def __init__(self) -> None:
        self.seen: list[tuple[Key, Any]] = []
        self.changed = asyncio.Event()

    def __call__(self, key: Key, view: Manifest) -> None:
        self.seen.append((key, view.get("data")))
        self.changed.set()

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        """Wait (at most ``timeout``) for the view to meet ``condition``, looking again after each report."""
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}") from None


def config_map(namespace: str, name: str, labels: dict[str, str], **data: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace, "labels": labels},
                       "data": data})


@pytest.fixture
async def kube(cluster: KubeAccess, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CountingKube]:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    client = CountingKube()
    yield client
    await client.close()


def make_watch(kube: Kube, namespace: str, reports: Reports) -> ChildWatch:
    return ChildWatch(
        kube, CONFIG_MAP, namespace, MANAGED_SELECTOR, view=prune, items={}, notify=reports, server_timeout=30, client_timeout=60
    )


async def test_listing_then_watch_keeps_the_view_and_reports_each_change(kube: CountingKube, namespace: Namespace) -> None:
    ns = namespace.name
    namespace.kubectl("apply", "-f", "-", input=config_map(ns, "before", OURS, v="1"))
    namespace.kubectl("apply", "-f", "-", input=config_map(ns, "theirs", {"app": "other"}, v="1"))
    reports = Reports()
    seen = reports.seen
    watch = make_watch(kube, ns, reports)
    await watch.list()
    assert set(watch.items) == {(ns, "before")}, "the listing holds our object only (label selector)"
    assert watch.items[(ns, "before")]["kind"] == "ConfigMap", "listed items are typed like watched ones"
    assert "managedFields" not in watch.items[(ns, "before")]["metadata"]
    assert seen == [], "the first listing reports nothing: every Agent is reconciled at start anyway"

    task = asyncio.create_task(watch.watch_forever())
    try:
        namespace.kubectl("apply", "-f", "-", input=config_map(ns, "after", OURS, v="1"))
        await reports.until(lambda: (ns, "after") in watch.items, "an added object in the view")
        namespace.kubectl("apply", "-f", "-", input=config_map(ns, "after", OURS, v="2"))
        await reports.until(lambda: watch.items[(ns, "after")]["data"] == {"v": "2"}, "a changed object in the view")
        # Changed before the deletion: had it passed the selector, it would be reported before the deletion is.
        namespace.kubectl("apply", "-f", "-", input=config_map(ns, "theirs", {"app": "other"}, v="2"))
        namespace.kubectl("delete", "configmap", "before")
        await reports.until(lambda: (ns, "before") not in watch.items, "a deleted object gone from the view")
        assert ((ns, "after"), {"v": "1"}) in seen and ((ns, "after"), {"v": "2"}) in seen
        assert ((ns, "before"), {"v": "1"}) in seen, "a deletion is reported with the object's last view"
        assert all(key[1] != "theirs" for key, _ in seen), "objects outside the selector are never reported"
        assert kube.listings == 1, "the watch resumed from the listing, no second listing"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_new_listing_reports_what_changed_since_the_last(kube: CountingKube, namespace: Namespace) -> None:
    """What a 410 (the version to resume from compacted away) leads to; the API server's watch cache
    serves any recent version, so the relisting is called here directly."""
    ns = namespace.name
    namespace.kubectl("apply", "-f", "-", input=config_map(ns, "kept", OURS, v="1"))
    namespace.kubectl("apply", "-f", "-", input=config_map(ns, "removed", OURS, v="1"))
    reports = Reports()
    seen = reports.seen
    watch = make_watch(kube, ns, reports)
    await watch.list()
    # While nobody watched: one object deleted, one added, one unchanged.
    namespace.kubectl("delete", "configmap", "removed")
    namespace.kubectl("apply", "-f", "-", input=config_map(ns, "new", OURS, v="1"))
    await watch.list()
    assert set(watch.items) == {(ns, "kept"), (ns, "new")}
    assert sorted(key[1] for key, _ in seen) == ["new", "removed"], "only what changed is reported, not the unchanged"
    task = asyncio.create_task(watch.watch_forever())
    try:
        namespace.kubectl("apply", "-f", "-", input=config_map(ns, "kept", OURS, v="2"))
        await reports.until(lambda: watch.items[(ns, "kept")]["data"] == {"v": "2"}, "watching from the new listing's version")
        assert kube.listings == 2, "the watch resumed from the second listing"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
