"""External access builders and IngressReady, without a cluster."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubeswarm_operator.agent.children import build_ingress
from kubeswarm_operator.agent.ingress import Exposure, agent_route_body, ingress_ready
from kubeswarm_operator.kube.kinds import HTTP_ROUTE, INGRESS
from kubeswarm_operator.swarm.gateway import build_gateway, gateway_route_body
from kubeswarm_runtime.resources import Agent, Swarm

pytestmark = pytest.mark.unit

OAUTH = "/.well-known/oauth-protected-resource"


def agent(name: str = "scout", **mcp: Any) -> Agent:
    return Agent.model_validate(
        {"metadata": {"name": name, "namespace": "ns", "uid": "u"}, "spec": {"mcp": {"auth": {"mode": "jwt"}, **mcp}}}
    )


def team(**gateway: Any) -> Swarm:
    return Swarm.model_validate({"metadata": {"name": "crew", "namespace": "ns", "uid": "s"}, "spec": {"gateway": gateway}})


def test_agent_ingress_forwards_the_oauth_metadata_path() -> None:
    ingress = build_ingress(agent(ingress={"enabled": True, "host": "a.example.com"}))
    assert ingress is not None
    assert [p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]] == ["/mcp", OAUTH]


def test_agent_httproute_attaches_to_the_gateway_with_long_timeouts() -> None:
    route = {"enabled": True, "kind": "HTTPRoute", "className": "edge", "host": "a.example.com"}
    body = agent_route_body(agent(timeoutSeconds=900, ingress=route))
    assert body is not None
    spec = body["spec"]
    assert spec["parentRefs"] == [{"name": "edge"}]
    assert spec["hostnames"] == ["a.example.com"]
    assert [(r["matches"][0]["path"]["value"], r["timeouts"]["request"]) for r in spec["rules"]] == [("/mcp", "900s"), (OAUTH, "900s")]
    assert spec["rules"][0]["backendRefs"] == [{"name": "scout", "port": 8080}]
    assert build_ingress(agent(ingress=route)) is None


def test_no_route_unless_asked() -> None:
    assert agent_route_body(agent()) is None
    assert agent_route_body(agent(enabled=False, ingress={"enabled": True, "kind": "HTTPRoute", "className": "e", "host": "h"})) is None


def test_gateway_ingress_rewrites_each_agent_and_its_metadata_path() -> None:
    members = [agent("beta", timeoutSeconds=7200), agent("alpha"), agent("quiet", enabled=False)]
    objects = build_gateway(team(enabled=True, host="crew.example.com", className="nginx", tls={"secretName": "t"}), members)
    (((kind, name), ingress),) = objects.items()
    assert (kind, name) == (INGRESS, "crew-gateway")
    paths = [(p["path"], p["backend"]["service"]["name"]) for p in ingress["spec"]["rules"][0]["http"]["paths"]]
    assert paths == [
        (r"/(\.well-known/oauth-protected-resource/)?agents/alpha/(mcp.*)", "alpha"),
        (r"/(\.well-known/oauth-protected-resource/)?agents/beta/(mcp.*)", "beta"),
    ]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/rewrite-target"] == "/$1$2"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "7200"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["crew.example.com"], "secretName": "t"}]
    assert ingress["metadata"]["ownerReferences"][0]["kind"] == "Swarm"


def test_gateway_httproutes_one_per_member_rewritten_to_the_runtime_paths() -> None:
    gateway = team(enabled=True, kind="HTTPRoute", className="edge", host="crew.example.com")
    objects = build_gateway(gateway, [agent("alpha"), agent("beta")])
    assert list(objects) == [(HTTP_ROUTE, "crew-gateway-alpha"), (HTTP_ROUTE, "crew-gateway-beta")]
    rules = gateway_route_body(gateway.spec.gateway, agent("alpha"))["spec"]["rules"]
    rewrites = [(r["matches"][0]["path"]["value"], r["filters"][0]["urlRewrite"]["path"]["replacePrefixMatch"]) for r in rules]
    assert rewrites == [("/agents/alpha/mcp", "/mcp"), (f"{OAUTH}/agents/alpha/mcp", f"{OAUTH}/mcp")]


def test_gateway_off_wants_nothing() -> None:
    assert build_gateway(team(), [agent()]) == {}


def test_ingress_ready_follows_load_balancer_and_route_acceptance() -> None:
    waiting = Exposure(INGRESS, "i", {"status": {"loadBalancer": {}}})
    served = Exposure(INGRESS, "i", {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}})
    accepted = Exposure(HTTP_ROUTE, "r", {"status": {"parents": [{"conditions": [{"type": "Accepted", "status": "True"}]}]}})
    pending = Exposure(HTTP_ROUTE, "r", {"status": {}})
    assert ingress_ready([waiting]).reason == "AwaitingAddress"
    assert ingress_ready([pending]).reason == "AwaitingAddress"
    assert ingress_ready([Exposure(HTTP_ROUTE, "r", None)]).reason == "IngressMissing"
    assert ingress_ready([Exposure(HTTP_ROUTE, "r", None, "no Gateway API")]).reason == "Unsupported"
    ready = ingress_ready([served, accepted])
    assert (ready.status, ready.reason) == ("True", "AddressAssigned")
    assert "203.0.113.1" in ready.message


@pytest.mark.parametrize("kind", ["Ingress", "HTTPRoute"])
def test_the_gateway_routes_members_without_auth_only_when_allowed(kind: str) -> None:
    open_door = Agent.model_validate({"metadata": {"name": "open", "namespace": "ns", "uid": "o"}, "spec": {}})
    members = [agent("guarded"), open_door]

    def routed(**extra: Any) -> str:
        gateway = team(enabled=True, kind=kind, className="edge", host="crew.example.com", **extra)
        return json.dumps(list(build_gateway(gateway, members).values()))

    assert "guarded" in routed() and '"open"' not in routed() and "gateway-open" not in routed()
    assert '"open"' in routed(allowAnonymous=True) or "gateway-open" in routed(allowAnonymous=True)
