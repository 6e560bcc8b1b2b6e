"""The operator's own watches of an Agent's children, against the real API server.

A listing fills the view, a watch keeps it current and reports each change,
a label selector keeps others' objects out, a new listing reports what
changed meanwhile, and a resourceVersion compacted away (410) leads to one.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubeswarm_operator.kube.client import Kube
from kubeswarm_operator.kube.kinds import CONFIG_MAP, Key, Kind, Manifest
from kubeswarm_operator.kube.owned import MANAGED_SELECTOR
from kubeswarm_operator.kube.watch import ChildWatch, PackedViews, strip

from tests.e2e.conftest import Namespace
from tests.testbed.cluster import Cluster, KubeAccess

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
    return json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace, "labels": labels}, "data": data}
    )


@pytest.fixture
async def kube(cluster: KubeAccess, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CountingKube]:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    client = CountingKube()
    yield client
    await client.close()


def make_watch(kube: Kube, namespace: str, reports: Reports) -> ChildWatch:
    return ChildWatch(
        kube, CONFIG_MAP, namespace, MANAGED_SELECTOR, view=strip, items=PackedViews(), notify=reports, server_timeout=30, client_timeout=60
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
    """What a 410 leads to, for a cached kind (ConfigMaps, label-selected), called directly."""
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


# Events are the one kind the API server keeps no watch cache for: a watch of them reads etcd,
# so a compacted resourceVersion really is gone (any other kind's cache would still serve it).
EVENTS = Kind("v1", "Event", "events")


def compact_etcd(cluster: Cluster, revision: str) -> None:
    """Forget every etcd revision before ``revision``, as the API server does every few minutes."""
    body = json.dumps({"revision": revision, "physical": True}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{cluster.etcd_port}/v3/kv/compaction", data=body)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def event(namespace: str, name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": namespace},
            "reason": "Test",
            "message": name,
        }
    )


async def test_a_compacted_version_answered_410_leads_to_a_new_listing(
    cluster: KubeAccess, kube: CountingKube, namespace: Namespace
) -> None:
    if not isinstance(cluster, Cluster):
        pytest.skip("compacts the test bed's etcd")
    ns = namespace.name
    namespace.kubectl("create", "-f", "-", input=event(ns, "first"))
    reports = Reports()
    watch = ChildWatch(kube, EVENTS, ns, None, view=strip, items={}, notify=reports, server_timeout=30, client_timeout=60)
    await watch.list()
    # Two writes after the listing: compacting at the newest then removes the revision right after the listing's.
    for name in ("second", "third"):
        namespace.kubectl("create", "-f", "-", input=event(ns, name))
    newest = json.loads(cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{ns}/events?limit=1").stdout)["metadata"]["resourceVersion"]
    compact_etcd(cluster, newest)  # the listing's version, where the watch would resume, is gone
    task = asyncio.create_task(watch.watch_forever())
    try:
        await reports.until(lambda: {(ns, "second"), (ns, "third")} <= watch.items.keys(), "the events made while nobody watched")
        assert kube.listings == 2, "the 410 led to a second listing"
        assert sorted(key[1] for key, _ in reports.seen) == ["second", "third"], "the new listing reports what changed, once"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_watch_of_one_name_sees_only_it_and_a_relisting_keeps_what_other_watches_hold(
    kube: CountingKube, namespace: Namespace
) -> None:
    """How the operator watches a Secret an Agent references: by name, beside the watch of its own objects."""
    ns = namespace.name
    for name, labels in (("ours", OURS), ("referenced", {}), ("unrelated", {})):
        namespace.kubectl("apply", "-f", "-", input=config_map(ns, name, labels, v="1"))
    items = PackedViews()
    reports = Reports()
    managed = ChildWatch(
        kube, CONFIG_MAP, ns, MANAGED_SELECTOR, view=strip, items=items, notify=reports, server_timeout=30, client_timeout=60
    )
    by_name = ChildWatch(
        kube,
        CONFIG_MAP,
        ns,
        None,
        field_selector="metadata.name=referenced",
        report_first_listing=True,
        view=strip,
        items=items,
        notify=reports,
        server_timeout=30,
        client_timeout=60,
    )
    await managed.list()
    await by_name.list()
    assert set(items) == {(ns, "ours"), (ns, "referenced")}, "the unrelated object is never held"
    assert [key for key, _ in reports.seen] == [(ns, "referenced")], "a watch started late reports what it found"
    await managed.list()  # a relisting of the managed objects
    assert (ns, "referenced") in items, "one watch's relisting does not drop what another holds"
    namespace.kubectl("delete", "configmap", "referenced")
    await by_name.list()
    assert set(items) == {(ns, "ours")}
