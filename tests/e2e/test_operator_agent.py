"""The operator against a real API server: Agents become Ready, stay converged, and clean up."""

from __future__ import annotations

import base64
import signal
from typing import Any

import pytest

from .conftest import Namespace, Operator, until

pytestmark = pytest.mark.e2e

CONVERGE = 30  # the issue's promise: a deleted or hand-edited child is back within 30 s
READY = 60


def agent(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubeswarm.io/v1alpha1", "kind": "Agent", "metadata": {"name": name}, "spec": spec}


def status(ns: Namespace, name: str) -> dict[str, Any]:
    obj = ns.get("agent", name)
    return (obj or {}).get("status") or {}


def condition(ns: Namespace, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in status(ns, name).get("conditions", []) if c["type"] == type_), {})


def wait_ready(ns: Namespace, name: str, replicas: int = 1) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        st = status(ns, name)
        ok = st.get("phase") == "Running" and st.get("readyReplicas") == replicas and st.get("replicas") == replicas
        return st if ok and condition(ns, name, "Ready").get("status") == "True" else None

    return until(ready, READY, f"Agent {name} Running with {replicas} ready replicas")


def template_hash(ns: Namespace, name: str) -> str | None:
    deployment = ns.get("deployment", name)
    return deployment["spec"]["template"]["metadata"]["annotations"]["kubeswarm.io/config-hash"] if deployment else None


def pod_names(ns: Namespace, name: str) -> set[str]:
    pods = ns.get("pods", "-l", f"kubeswarm.io/agent={name}") or {"items": []}
    return {p["metadata"]["name"] for p in pods["items"] if not p["metadata"].get("deletionTimestamp")}


def rolled(ns: Namespace, name: str, before: set[str]) -> bool:
    """New pods are Ready and none of the old ones remain."""
    deployment = ns.get("deployment", name) or {}
    st = deployment.get("status", {})
    done = st.get("updatedReplicas") == st.get("readyReplicas") == deployment.get("spec", {}).get("replicas")
    now = pod_names(ns, name)
    return bool(done and now and not (now & before))


def test_agent_becomes_ready_with_all_children(operator: Operator, namespace: Namespace) -> None:
    namespace.apply(agent("scout", capabilities=["search"]))
    st = wait_ready(namespace, "scout")
    assert st["endpoint"] == f"http://scout.{namespace.name}.svc:8080/mcp"
    assert st["selector"] == "app.kubernetes.io/name=kubeswarm-agent,kubeswarm.io/agent=scout"
    assert condition(namespace, "scout", "SecretsReady")["status"] == "True"
    uid = namespace.must("agent", "scout")["metadata"]["uid"]
    for kind, name in [
        ("deployment", "scout"),
        ("service", "scout"),
        ("configmap", "scout-runtime"),
        ("secret", "scout-credentials"),
        ("networkpolicy", "scout"),
    ]:
        child = namespace.get(kind, name)
        assert child is not None, f"{kind}/{name} missing"
        assert [ref["uid"] for ref in child["metadata"]["ownerReferences"]] == [uid]
    assert namespace.get("poddisruptionbudget", "scout") is None  # one replica: nothing to protect
    agent_obj = namespace.get("agent", "scout")
    assert agent_obj is not None
    assert not agent_obj["metadata"].get("finalizers")  # nothing external to clean up
    assert not any(k.startswith("kopf.zalando.org") for k in agent_obj["metadata"].get("annotations", {}))
    pod = namespace.must("pods", "-l", "kubeswarm.io/agent=scout")["items"][0]
    assert pod["spec"]["containers"][0]["image"] == operator.env["KUBESWARM_RUNTIME_IMAGE"]
    listed = namespace.kubectl("get", "kubeswarm").stdout
    assert "scout" in listed
    assert "Running" in listed
    events = namespace.kubectl("get", "events", "--field-selector", "involvedObject.name=scout").stdout
    assert "Created" in events
    # Like a Deployment: READY ready/wanted; -o wide says what the agent is.
    table = namespace.kubectl("get", "agent", "scout").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "SWARM", "PHASE"] and "READY" in table[0] and "REPLICAS" not in table[0]
    assert "1/1" in table[1].split()
    wide = namespace.kubectl("get", "agent", "scout", "-o", "wide").stdout.splitlines()
    assert [h in wide[0].split() for h in ("ROLE", "CAPABILITIES", "PROVIDER", "MODEL")] == [True] * 4
    assert '["search"]' in wide[1] and "echo" in wide[1].split()
    # Our Events carry lastTimestamp, so `kubectl get events --sort-by=.lastTimestamp` orders them with the rest.
    ours = namespace.must("events", "--field-selector", "involvedObject.name=scout,involvedObject.kind=Agent")["items"]
    assert ours and all(e.get("lastTimestamp") and e.get("eventTime") and e["count"] == 1 for e in ours), ours


def test_mcp_allow_from_opens_the_mcp_port_to_those_peers(operator: Operator, namespace: Namespace) -> None:
    def mcp_peers(name: str) -> list[dict[str, Any]] | None:
        policy = namespace.get("networkpolicy", name)
        return policy["spec"]["ingress"][0]["from"] if policy else None

    namespace.apply(agent("near"))
    # Unset: the Agent's own namespace, so status.endpoint works for its neighbours.
    assert {"podSelector": {}} in until(lambda: mcp_peers("near"), CONVERGE, "the NetworkPolicy of near")
    tools = {"namespaceSelector": {"matchLabels": {"team": "tools"}}, "podSelector": {"matchLabels": {"app": "client"}}}
    namespace.apply(agent("far", mcp={"allowFrom": [tools]}))
    peers = until(lambda: mcp_peers("far"), CONVERGE, "the NetworkPolicy of far")
    assert tools in peers
    assert {"podSelector": {}} not in peers


def test_scale_subresource(operator: Operator, namespace: Namespace) -> None:
    namespace.apply(agent("crowd"))
    wait_ready(namespace, "crowd")
    namespace.kubectl("scale", "agent/crowd", "--replicas=3")
    wait_ready(namespace, "crowd", replicas=3)
    pdb = until(lambda: namespace.get("poddisruptionbudget", "crowd"), CONVERGE, "a PDB once replicas > 1")
    assert pdb["spec"]["maxUnavailable"] == 1
    namespace.kubectl("scale", "agent/crowd", "--replicas=1")
    wait_ready(namespace, "crowd", replicas=1)
    until(lambda: namespace.get("poddisruptionbudget", "crowd") is None, CONVERGE, "the PDB removed at one replica")


def test_spec_change_rolls_pods(operator: Operator, namespace: Namespace) -> None:
    namespace.apply(agent("shifty", role="researcher"))
    wait_ready(namespace, "shifty")
    before = pod_names(namespace, "shifty")
    old_hash = template_hash(namespace, "shifty")
    namespace.apply(agent("shifty", role="critic"))
    until(lambda: rolled(namespace, "shifty", before), READY, "pods replaced after spec.role changed")
    assert template_hash(namespace, "shifty") != old_hash
    config = namespace.get("configmap", "shifty-runtime")
    assert config is not None
    assert "critic" in config["data"].values()
    until(lambda: status(namespace, "shifty").get("observedGeneration") == 2, CONVERGE, "observedGeneration 2")


def test_secret_change_rolls_pods(operator: Operator, namespace: Namespace) -> None:
    spec = {"model": {"provider": "anthropic", "name": "claude", "apiKeySecretRef": {"name": "llm", "key": "api-key"}}}
    namespace.apply(agent("keyed", **spec))
    until(
        lambda: condition(namespace, "keyed", "SecretsReady").get("message") == 'secret "llm" not found',
        CONVERGE,
        "SecretsReady=False naming the missing Secret",
    )
    assert condition(namespace, "keyed", "SecretsReady")["reason"] == "SecretNotFound"
    namespace.kubectl("create", "secret", "generic", "llm", "--from-literal=other=x")
    until(
        lambda: condition(namespace, "keyed", "SecretsReady").get("message") == 'secret "llm" has no key "api-key"',
        CONVERGE,
        "SecretsReady=False naming the missing key",
    )
    namespace.kubectl("patch", "secret", "llm", "--type=merge", "-p", '{"stringData": {"api-key": "one"}}')
    # Ready only once the key is there, even where pods run without it (kwok's do).
    wait_ready(namespace, "keyed")
    assert condition(namespace, "keyed", "SecretsReady")["status"] == "True"
    before = pod_names(namespace, "keyed")
    old_hash = template_hash(namespace, "keyed")
    namespace.kubectl("patch", "secret", "llm", "--type=merge", "-p", '{"stringData": {"api-key": "two"}}')
    until(lambda: rolled(namespace, "keyed", before), READY, "pods replaced after the API key Secret changed")
    assert template_hash(namespace, "keyed") != old_hash
    # The value reaches the pod by reference only: never in the ConfigMap or the status.
    config = namespace.get("configmap", "keyed-runtime")
    assert config is not None
    assert "two" not in config["data"].values()
    assert "two" not in str(status(namespace, "keyed"))


def test_deleted_children_are_recreated(operator: Operator, namespace: Namespace) -> None:
    namespace.apply(agent("phoenix"))
    wait_ready(namespace, "phoenix")
    uids = {
        kind: namespace.must(kind, name)["metadata"]["uid"]
        for kind, name in [
            ("deployment", "phoenix"),
            ("service", "phoenix"),
            ("configmap", "phoenix-runtime"),
            ("networkpolicy", "phoenix"),
        ]
    }
    key = namespace.must("secret", "phoenix-credentials")["data"]["jwt-key"]
    namespace.kubectl("delete", "deployment/phoenix", "service/phoenix", "configmap/phoenix-runtime", "networkpolicy/phoenix")

    def back() -> bool:
        names = {"deployment": "phoenix", "service": "phoenix", "configmap": "phoenix-runtime", "networkpolicy": "phoenix"}
        objs = {kind: namespace.get(kind, name) for kind, name in names.items()}
        return all(obj is not None and obj["metadata"]["uid"] != uids[kind] for kind, obj in objs.items())

    until(back, CONVERGE, "every deleted child recreated")
    wait_ready(namespace, "phoenix")
    # The signing key is generated once and never rotated by reconciles.
    assert namespace.must("secret", "phoenix-credentials")["data"]["jwt-key"] == key


def test_hand_edits_are_reverted(operator: Operator, namespace: Namespace) -> None:
    namespace.apply(agent("stubborn"))
    wait_ready(namespace, "stubborn")
    namespace.kubectl("set", "image", "deployment/stubborn", "runtime=evil:latest")
    namespace.kubectl("patch", "service", "stubborn", "--type=json", "-p", '[{"op": "replace", "path": "/spec/ports/0/port", "value": 1}]')
    namespace.kubectl("patch", "configmap", "stubborn-runtime", "--type=merge", "-p", '{"data": {"KUBESWARM_ROLE": "hijacked"}}')

    def reverted() -> bool:
        deployment, service, config = (
            namespace.get("deployment", "stubborn"),
            namespace.get("service", "stubborn"),
            namespace.get("configmap", "stubborn-runtime"),
        )
        return bool(
            deployment
            and service
            and config
            and deployment["spec"]["template"]["spec"]["containers"][0]["image"] == operator.env["KUBESWARM_RUNTIME_IMAGE"]
            and service["spec"]["ports"][0]["port"] == 8080
            and "hijacked" not in config["data"].values()
        )

    until(reverted, CONVERGE, "hand edits of the Deployment, Service and ConfigMap reverted")


def test_deleting_the_agent_collects_its_children(operator: Operator, namespace: Namespace) -> None:
    namespace.apply(agent("mayfly", replicas=2))
    wait_ready(namespace, "mayfly", replicas=2)
    namespace.kubectl("delete", "agent", "mayfly", "--wait=true", "--timeout=30s")

    def gone() -> bool:
        listed = namespace.kubectl(
            "get",
            "deployments,services,configmaps,secrets,networkpolicies,poddisruptionbudgets",
            "-l",
            "kubeswarm.io/agent=mayfly",
            "-o",
            "name",
        ).stdout
        return not listed.strip()

    until(gone, 60, "the garbage collector removing every child")


def test_operator_restart_midway_leaves_no_duplicates_or_orphans(operator: Operator, namespace: Namespace) -> None:
    namespace.apply(agent("survivor", replicas=2))
    until(lambda: namespace.get("deployment", "survivor"), CONVERGE, "the Deployment created")
    key = until(lambda: (namespace.get("secret", "survivor-credentials") or {}).get("data", {}).get("jwt-key"), CONVERGE, "the key")
    operator.stop(signal.SIGKILL)
    namespace.apply(agent("survivor", replicas=3))  # changed while nobody watches
    namespace.apply(agent("latecomer"))  # created while nobody watches
    operator.start()
    wait_ready(namespace, "survivor", replicas=3)
    wait_ready(namespace, "latecomer")
    for name in ("survivor", "latecomer"):
        for kind in ("deployments", "services", "configmaps", "secrets", "networkpolicies"):
            listed = namespace.kubectl("get", kind, "-l", f"kubeswarm.io/agent={name}", "-o", "name").stdout.split()
            assert len(listed) == 1, f"{kind} of {name}: {listed}"
    assert namespace.must("secret", "survivor-credentials")["data"]["jwt-key"] == key
    assert base64.b64decode(key)


def writes(op: Operator) -> float:
    return sum(
        v for series, v in op.metrics().items() if series.startswith("kubeswarm_operator_api_requests_total") and 'verb="GET"' not in series
    )


def test_unchanged_resync_writes_nothing(operator: Operator, namespace: Namespace) -> None:
    namespace.apply(agent("idle"))
    wait_ready(namespace, "idle")
    # Let the writes of the creation settle: the status and events stop changing.
    until(lambda: condition(namespace, "idle", "NatsReady").get("status") == "True", CONVERGE, "NatsReady")
    # Other tests' namespaces may still be terminating (their children vanishing): wait them out.
    until(lambda: "Terminating" not in namespace.cluster.kubectl("get", "namespaces").stdout, 120, "earlier namespaces gone")
    baseline = writes(operator)
    reconciles = operator.metrics().get('kubeswarm_operator_reconciles_total{kind="Agent",outcome="unchanged"}', 0)
    # Two full resync periods (10 s each in the e2e settings) must pass without a single write.
    until(
        lambda: operator.metrics().get('kubeswarm_operator_reconciles_total{kind="Agent",outcome="unchanged"}', 0) >= reconciles + 2,
        CONVERGE,
        "two resyncs of the idle Agent",
    )
    assert writes(operator) == baseline


def test_what_the_agent_no_longer_asks_for_leaves_its_children(operator: Operator, namespace: Namespace) -> None:
    # The children were created by POST: a later apply must still remove what the Agent dropped.
    namespace.apply(agent("shedding", env=[{"name": "EXTRA", "value": "1"}], podAnnotations={"team": "a"}))
    until(lambda: namespace.get("deployment", "shedding"), CONVERGE, "the Deployment")
    namespace.apply(agent("shedding"))

    def shed() -> bool:
        template = (namespace.get("deployment", "shedding") or {}).get("spec", {}).get("template", {})
        container = template.get("spec", {}).get("containers", [{}])[0]
        env = [item["name"] for item in container.get("env") or []]
        return "EXTRA" not in env and "team" not in template.get("metadata", {}).get("annotations", {})

    until(shed, CONVERGE, "the env entry and the pod annotation removed from the Deployment")
