"""The operator issues NATS identities on its own NATS (docs/security.md), against the API server and a real nats-server.

The operator creates the auth Secret (a new master); the host nats-server starts from the auth.conf in it, as the
chart's NATS pods do. Two Swarms in two namespaces: the operator pushes each one's account and provisions its streams
as its own limited user; each member Agent's credentials Secret holds creds the pods get as a mounted file. Those
creds work in their swarm and reach nothing of the other; a client without creds cannot connect.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.config import NatsConfig
from kubeswarm_runtime.names import SwarmNames
from nats.js.errors import NotFoundError

from tests.e2e.conftest import OPERATOR_ENV, Namespace, Operator, install_crds, until
from tests.testbed.cluster import KubeAccess
from tests.testbed.nats import NatsNode

from .test_operator_agent import condition

pytestmark = pytest.mark.e2e

AUTH_SECRET = "kubeswarm-nats-auth"


@dataclass
class Secured:
    nats: NatsNode
    operator: Operator
    system_namespace: str


@pytest.fixture(scope="module")
def secured(cluster: KubeAccess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """An operator issuing identities for a NATS that starts from the Secret the operator made (as the chart's pods)."""
    install_crds(cluster)
    workdir = tmp_path_factory.mktemp("nats-identities")
    system_namespace = f"e2e-sys-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", system_namespace)
    node = NatsNode("nats-0", workdir / "nats-0")
    env = {
        **OPERATOR_ENV,
        "KUBESWARM_NATS_URL": node.url,
        "KUBESWARM_NATS_AUTH_SECRET": AUTH_SECRET,
        "KUBESWARM_NATS_AUTH_NAMESPACE": system_namespace,
        "KUBESWARM_NATS_RESOLVER_DIR": str(workdir / "jwt"),
    }
    operator = Operator(cluster.kubeconfig, workdir / "operator.log", env=env).start()
    try:
        secret = until(lambda: Namespace(cluster, system_namespace).get("secret", AUTH_SECRET), 30, "the auth Secret")
        node.config = base64.b64decode(secret["data"]["auth.conf"]).decode()
        node.start()
        try:
            yield Secured(node, operator, system_namespace)
        finally:
            node.stop()
    finally:
        operator.stop()
        cluster.kubectl("delete", "namespace", system_namespace, "--wait=false", check=False)


def swarm(name: str) -> dict[str, Any]:
    member = {"name": "worker", "template": {"capabilities": ["work"]}}
    return {"apiVersion": "kubeswarm.io/v1alpha1", "kind": "Swarm", "metadata": {"name": name}, "spec": {"agents": [member]}}


def provisioned(ns: Namespace, name: str) -> dict[str, Any] | None:
    body = ns.get("swarm", name)
    status = (body or {}).get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c["type"] == "NatsReady"), None)
    return body if ready and ready["status"] == "True" and status.get("streams") else None


def creds_of(ns: Namespace, agent: str) -> str | None:
    secret = ns.get("secret", f"{agent}-credentials")
    data = (secret or {}).get("data") or {}
    return base64.b64decode(data["nats.creds"]).decode() if "nats.creds" in data else None


async def _cross_checks(url: str, own: Path, other: Path, own_prefix: str, other_prefix: str) -> dict[str, Any]:
    """What the owner of ``own`` creds can and cannot do: its swarm's work flows, the other swarm is out of reach."""
    results: dict[str, Any] = {}
    client = await SwarmClient.connect(NatsConfig(url=url, creds_file=own), own_prefix, sender="e2e")
    try:
        task = await client.tasks.create("work", {"prompt": "queued"})
        results["own_task"] = task.id
        results["own_stream_messages"] = (await client.conn.js.stream_info(SwarmNames(own_prefix).tasks_stream)).state.messages
    finally:
        await client.close()
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    intruder = await nats.connect(url, user_credentials=str(other), error_cb=on_error, allow_reconnect=False)
    try:
        js = intruder.jetstream()
        theirs = SwarmNames(own_prefix)
        await intruder.subscribe(f"{theirs.prefix}.>")
        await intruder.publish(theirs.task("work"), b"{}")
        await intruder.flush()
        for _ in range(100):
            if len(errors) >= 2:
                break
            await asyncio.sleep(0.05)
        results["intruder_errors"] = list(errors)
        try:
            await js.stream_info(theirs.tasks_stream)
            results["intruder_sees_stream"] = True
        except NotFoundError:
            results["intruder_sees_stream"] = False
    finally:
        await intruder.close()
    try:
        await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)
        results["anonymous"] = "connected"
    except nats.errors.Error as exc:
        results["anonymous"] = str(exc)
    return results


def test_each_swarm_gets_its_own_identity_and_reaches_nothing_of_the_other(
    secured: Secured, namespace: Namespace, other_namespace: Namespace, tmp_path: Path
) -> None:
    namespace.apply(swarm("alpha"))
    other_namespace.apply(swarm("beta"))
    # The operator pushed each account and provisioned the streams as its own user in it.
    until(lambda: provisioned(namespace, "alpha"), 90, "alpha's streams provisioned")
    until(lambda: provisioned(other_namespace, "beta"), 90, "beta's streams provisioned")

    alpha_creds = until(lambda: creds_of(namespace, "worker"), 60, "alpha's worker creds")
    beta_creds = until(lambda: creds_of(other_namespace, "worker"), 60, "beta's worker creds")
    assert alpha_creds != beta_creds
    # Mounted as a file, named by the env; never in the ConfigMap.
    deployment = until(lambda: namespace.get("deployment", "worker"), 60, "alpha's worker Deployment")
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "nats-creds")
    items = [{"key": "nats.creds", "path": "nats.creds"}]
    assert volume["secret"] == {"secretName": "worker-credentials", "items": items, "defaultMode": 0o440}
    container = pod["containers"][0]
    assert {"name": "KUBESWARM_NATS__CREDS_FILE", "value": "/var/run/kubeswarm/nats/nats.creds"} in container["env"]
    assert any(m["name"] == "nats-creds" and m["readOnly"] for m in container["volumeMounts"])
    config_map = namespace.must("configmap", "worker-runtime")
    assert "BEGIN NATS USER JWT" not in str(config_map)

    own, other = tmp_path / "alpha.creds", tmp_path / "beta.creds"
    own.write_text(alpha_creds)
    other.write_text(beta_creds)
    alpha_prefix, beta_prefix = f"ks.{namespace.name}.alpha", f"ks.{other_namespace.name}.beta"
    results = asyncio.run(_cross_checks(secured.nats.url, own, other, alpha_prefix, beta_prefix))
    assert results["own_stream_messages"] >= 1
    assert len(results["intruder_errors"]) >= 2 and all("permissions violation" in e.lower() for e in results["intruder_errors"])
    assert results["intruder_sees_stream"] is False
    assert "Authorization Violation" in results["anonymous"]


def test_the_operator_keeps_the_auth_secret_it_made(secured: Secured, cluster: KubeAccess) -> None:
    """A restarted operator reads the master back (same server files), it does not make a new one."""
    system = Namespace(cluster, secured.system_namespace)
    before = system.must("secret", AUTH_SECRET)["data"]
    secured.operator.stop()
    secured.operator.start()
    assert system.must("secret", AUTH_SECRET)["data"] == before


def test_a_swarm_on_another_nats_gives_its_agents_its_own_credentials(secured: Secured, namespace: Namespace) -> None:
    """spec.nats.credentialsSecretRef reaches the member pods as the creds file; no identity of ours goes there."""
    external = swarm("outside")
    external["spec"]["nats"] = {
        "url": "nats://nats.elsewhere.svc:4222",
        "credentialsSecretRef": {"name": "outside-nats", "key": "user.creds"},
    }
    namespace.apply(external)

    # The Secret the Swarm names is missing: the member says so (its pods would wait for the volume).
    until(
        lambda: condition(namespace, "worker", "SecretsReady").get("message") == 'secret "outside-nats" not found',
        60,
        "SecretsReady=False naming the missing creds Secret",
    )
    namespace.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "outside-nats"}, "stringData": {"user.creds": "theirs"}})
    until(lambda: condition(namespace, "worker", "SecretsReady").get("status") == "True", 60, "SecretsReady=True once it exists")
    pod = namespace.must("deployment", "worker")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "nats-creds")
    assert volume["secret"]["secretName"] == "outside-nats" and volume["secret"]["items"] == [{"key": "user.creds", "path": "nats.creds"}]
    assert {"name": "KUBESWARM_NATS__CREDS_FILE", "value": "/var/run/kubeswarm/nats/nats.creds"} in pod["containers"][0]["env"]
    assert "nats.creds" not in (namespace.must("secret", "worker-credentials").get("data") or {})
