"""MCP ingress through the real API server: an Agent's Ingress or HTTPRoute, a Swarm's gateway, IngressReady, endpoint.

The Gateway API CRDs come from the ``sigs.k8s.io/gateway-api`` Go module
(its ``config/crd/standard``), fetched into the test bed's Go module cache
with ``go mod download``; without a Go toolchain the HTTPRoute tests skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Namespace, Operator, until
from tests.e2e.test_operator_swarm import condition
from tests.testbed.cluster import KubeAccess
from tests.testbed.nats import NatsServer

pytestmark = pytest.mark.e2e

# The newest release this Go toolchain can fetch (v1.7 wants Go 1.27); standard channel: HTTPRoute with timeouts.
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"
GATEWAY_API_VERSION = "v1.6.3"
GOMODCACHE = Path.home() / ".cache" / "kubeswarm" / "gomod"
NGINX = "nginx.ingress.kubernetes.io"
OAUTH = "/.well-known/oauth-protected-resource"


@pytest.fixture(scope="module")
def gateway_api(cluster: KubeAccess, tmp_path_factory: pytest.TempPathFactory) -> None:
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain to fetch the Gateway API CRDs")
    env = {**os.environ, "GOMODCACHE": str(GOMODCACHE), "GOFLAGS": "-mod=mod"}
    proc = subprocess.run(
        [go, "mod", "download", "-json", f"{GATEWAY_API_MODULE}@{GATEWAY_API_VERSION}"],
        cwd=tmp_path_factory.mktemp("gomod"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot fetch {GATEWAY_API_MODULE}@{GATEWAY_API_VERSION}: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    crds = Path(json.loads(proc.stdout)["Dir"]) / "config" / "crd" / "standard"
    cluster.kubectl("apply", "--server-side", "-f", str(crds))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/httproutes.gateway.networking.k8s.io")
    until(lambda: cluster.kubectl("get", "httproutes", "-A", check=False).returncode == 0, 30, "HTTPRoute in discovery")


def agent(name: str, **mcp: Any) -> dict[str, Any]:
    # An exposed endpoint needs auth (refused at apply otherwise).
    return {
        "apiVersion": "kubeswarm.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"mcp": {"auth": {"mode": "jwt"}, **mcp}},
    }


def set_status(namespace: Namespace, kind: str, name: str, status: dict[str, Any]) -> None:
    namespace.kubectl("patch", kind, name, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


def ingress_ready(namespace: Namespace, kind: str, name: str, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        cond = condition(namespace.get(kind, name), "IngressReady")
        return cond if cond and cond["status"] == status else None

    return until(probe, 60, f"IngressReady={status} on {kind} {name}")


ACCEPTED = {
    "parents": [
        {
            "parentRef": {"name": "edge"},
            "controllerName": "example.com/gateway",
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "Accepted",
                    "message": "",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    ]
}


def test_agent_ingress_is_sse_safe_and_reports_its_address(operator: Operator, namespace: Namespace) -> None:
    namespace.apply(
        agent(
            "scout",
            timeoutSeconds=900,
            ingress={
                "enabled": True,
                "className": "nginx",
                "host": "scout.example.com",
                "tls": {"secretName": "scout-tls"},
            },
        )
    )
    ingress = until(lambda: namespace.get("ingress", "scout"), 60, "the Agent's Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations[f"{NGINX}/proxy-buffering"] == "off"
    assert annotations[f"{NGINX}/proxy-read-timeout"] == "900"
    assert annotations[f"{NGINX}/proxy-send-timeout"] == "900"
    assert ingress["spec"]["tls"] == [{"hosts": ["scout.example.com"], "secretName": "scout-tls"}]
    assert [p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]] == ["/mcp", OAUTH]

    ingress_ready(namespace, "agent", "scout", "False")
    set_status(namespace, "ingress", "scout", {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}})
    ingress_ready(namespace, "agent", "scout", "True")
    assert namespace.get("agent", "scout")["status"]["endpoint"] == "https://scout.example.com/mcp"  # type: ignore[index]


def test_swarm_gateway_ingress_routes_each_agent(operator: Operator, namespace: Namespace, nats_server: NatsServer) -> None:
    namespace.apply(
        {
            "apiVersion": "kubeswarm.io/v1alpha1",
            "kind": "Swarm",
            "metadata": {"name": "crew"},
            "spec": {
                "nats": {"url": nats_server.url},
                "gateway": {"enabled": True, "host": "crew.example.com", "className": "nginx", "tls": {"secretName": "crew-tls"}},
                "defaults": {"mcp": {"auth": {"mode": "jwt"}}},  # the gateway routes only members with auth
                "agents": [{"name": "alpha"}, {"name": "beta", "template": {"mcp": {"auth": {"mode": "jwt"}, "timeoutSeconds": 7200}}}],
            },
        }
    )
    ingress = until(lambda: namespace.get("ingress", "crew-gateway"), 60, "the gateway Ingress")
    paths = {p["backend"]["service"]["name"]: p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {
        "alpha": r"/(\.well-known/oauth-protected-resource/)?agents/alpha/(mcp.*)",
        "beta": r"/(\.well-known/oauth-protected-resource/)?agents/beta/(mcp.*)",
    }
    annotations = ingress["metadata"]["annotations"]
    assert annotations[f"{NGINX}/rewrite-target"] == "/$1$2"
    assert annotations[f"{NGINX}/proxy-read-timeout"] == "7200"  # the longest member's
    assert ingress["spec"]["tls"][0]["secretName"] == "crew-tls"
    assert [ref["kind"] for ref in ingress["metadata"]["ownerReferences"]] == ["Swarm"]

    ingress_ready(namespace, "swarm", "crew", "False")
    set_status(namespace, "ingress", "crew-gateway", {"loadBalancer": {"ingress": [{"hostname": "lb.example.net"}]}})
    ingress_ready(namespace, "swarm", "crew", "True")
    assert namespace.get("swarm", "crew")["status"]["endpoint"] == "https://crew.example.com"  # type: ignore[index]


def test_agent_httproute(operator: Operator, namespace: Namespace, gateway_api: None) -> None:
    namespace.apply(
        agent(
            "relay",
            timeoutSeconds=600,
            ingress={
                "enabled": True,
                "kind": "HTTPRoute",
                "className": "edge",
                "host": "relay.example.com",
            },
        )
    )
    route = until(lambda: namespace.get("httproute", "relay"), 60, "the Agent's HTTPRoute")
    spec = route["spec"]
    assert spec["parentRefs"][0]["name"] == "edge"
    assert spec["hostnames"] == ["relay.example.com"]
    assert [r["matches"][0]["path"]["value"] for r in spec["rules"]] == ["/mcp", OAUTH]
    assert {r["timeouts"]["request"] for r in spec["rules"]} == {"600s"}
    assert all(r["backendRefs"][0]["name"] == "relay" and r["backendRefs"][0]["port"] == 8080 for r in spec["rules"])
    assert namespace.get("ingress", "relay") is None

    ingress_ready(namespace, "agent", "relay", "False")
    set_status(namespace, "httproute", "relay", ACCEPTED)
    ingress_ready(namespace, "agent", "relay", "True")


def test_swarm_gateway_httproutes_rewrite_to_the_runtime_paths(
    operator: Operator, namespace: Namespace, nats_server: NatsServer, gateway_api: None
) -> None:
    namespace.apply(
        {
            "apiVersion": "kubeswarm.io/v1alpha1",
            "kind": "Swarm",
            "metadata": {"name": "mesh"},
            "spec": {
                "nats": {"url": nats_server.url},
                "gateway": {"enabled": True, "kind": "HTTPRoute", "className": "edge", "host": "mesh.example.com"},
                "defaults": {"mcp": {"auth": {"mode": "jwt"}}},
                "agents": [{"name": "alpha"}],
            },
        }
    )
    route = until(lambda: namespace.get("httproute", "mesh-gateway-alpha"), 60, "the member's gateway HTTPRoute")
    rewrites = {
        r["matches"][0]["path"]["value"]: r["filters"][0]["urlRewrite"]["path"]["replacePrefixMatch"] for r in route["spec"]["rules"]
    }
    assert rewrites == {"/agents/alpha/mcp": "/mcp", f"{OAUTH}/agents/alpha/mcp": f"{OAUTH}/mcp"}
    set_status(namespace, "httproute", "mesh-gateway-alpha", ACCEPTED)
    ingress_ready(namespace, "swarm", "mesh", "True")

    # Gateway off: its routes go.
    namespace.kubectl("patch", "swarm", "mesh", "--type=merge", "-p", json.dumps({"spec": {"gateway": {"enabled": False}}}))
    until(lambda: namespace.get("httproute", "mesh-gateway-alpha") is None, 60, "the gateway's routes to be deleted")
