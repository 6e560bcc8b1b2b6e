"""No confused deputy: a Swarm that names a NATS URL never gets the operator's own credentials sent there.

The operator here has a NATS identity of its own (user and password); the NATS a Swarm names is a
server that would accept exactly that identity. The operator must connect there anonymously (the
Swarm gave no credentials of its own), so the server refuses it and never sees the operator's user.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed.cluster import KubeAccess
from tests.testbed.nats import NatsServer
from tests.testbed.procs import free_port

from .conftest import OPERATOR_ENV, Namespace, Operator, install_crds, until
from .test_operator_swarm import condition

pytestmark = pytest.mark.e2e

OPERATOR_USER, OPERATOR_PASSWORD = "kubeswarm-operator", "the-operators-own-password"


@pytest.fixture(scope="module")
def deputy(cluster: KubeAccess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator with a NATS identity of its own, for its own NATS (which these tests never name)."""
    install_crds(cluster)
    env = {
        **OPERATOR_ENV,
        "KUBESWARM_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "KUBESWARM_NATS_USER": OPERATOR_USER,
        "KUBESWARM_NATS_PASSWORD": OPERATOR_PASSWORD,
    }
    op = Operator(cluster.kubeconfig, tmp_path_factory.mktemp("deputy") / "operator.log", env=env).start()
    yield op
    op.stop()


@pytest.fixture
def harvester(tmp_path: Path) -> Iterator[NatsServer]:
    """A NATS a Swarm author controls, which accepts the operator's identity if it is ever sent."""
    config = f'authorization {{ users = [{{user: "{OPERATOR_USER}", password: "{OPERATOR_PASSWORD}"}}] }}\n'
    server = NatsServer(tmp_path / "harvester", config=config).start()
    yield server
    server.stop()


def connected_users(server: NatsServer) -> list[str]:
    url = f"http://127.0.0.1:{server.node.monitor_port}/connz?auth=true"
    with urllib.request.urlopen(url, timeout=5) as response:
        connz: dict[str, Any] = json.load(response)
    return [str(c.get("authorized_user", "")) for c in connz.get("connections") or []]


def test_a_swarm_naming_a_nats_url_does_not_get_the_operators_credentials(
    deputy: Operator, namespace: Namespace, harvester: NatsServer
) -> None:
    namespace.apply(
        {"apiVersion": "kubeswarm.io/v1alpha1", "kind": "Swarm", "metadata": {"name": "bait"}, "spec": {"nats": {"url": harvester.url}}}
    )
    nats_ready = until(lambda: condition(namespace.get("swarm", "bait"), "NatsReady"), 60, "the Swarm's NatsReady")
    assert nats_ready["status"] == "False", nats_ready
    assert OPERATOR_USER not in connected_users(harvester)
    assert OPERATOR_PASSWORD not in deputy.log.read_text(errors="replace")
