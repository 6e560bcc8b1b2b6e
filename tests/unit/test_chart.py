"""The Helm chart rendered by the real helm: lint, Kubernetes schemas, values schema, wiring.

The render helpers here are also what the e2e chart test installs with.
"""

from __future__ import annotations

import filecmp
import functools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # no stubs; used as validate(doc, version)
import pytest
import yaml
from kubeswarm_operator.agent.children import APP_NAME
from kubeswarm_operator.kube.owned import MANAGED_BY, MANAGED_BY_LABEL
from kubeswarm_operator.settings import OperatorSettings
from kubeswarm_runtime.natsauth import NatsAuthority

from tests.testbed import build
from tests.testbed.procs import wheel_binary

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubeswarm"
KUBE_VERSION = build.pins()["kubernetes"].lstrip("v")
NAMESPACE = "kubeswarm-system"
Manifest = dict[str, Any]

# Value sets that together switch every template branch on.
EVERYTHING: Manifest = {
    "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
    "dashboards": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "kubeswarm"}},
    "operator": {"verbose": True, "extraEnv": [{"name": "AWS_REGION", "value": "eu-west-1"}]},
    "runtime": {"env": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability.svc:4318"}},
    "nats": {"networkPolicy": {"monitorFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}},
}
NAMESPACED: Manifest = {"operator": {"watchNamespaces": ["team-a", "team-b"]}}
EXTERNAL_NATS: Manifest = {"nats": {"enabled": False, "url": "nats://nats.messaging.svc:4222"}, "crds": {"keep": False}}
VALUE_SETS = {"defaults": {}, "everything": EVERYTHING, "namespaced": NAMESPACED, "external-nats": EXTERNAL_NATS}
# Kinds of the Prometheus Operator: no Kubernetes schema covers them.
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor"}
# A cluster that serves them, as `helm template` is told (the chart refuses the monitors on one that does not).
WITH_PROMETHEUS_OPERATOR = [f"--api-versions=monitoring.coreos.com/v1/{kind}" for kind in sorted(PROMETHEUS_OPERATOR_KINDS)]


@functools.cache
def helm_binary() -> Path:
    return build.build(next(c for c in build.COMPONENTS if c.name == "helm")) / "helm"


def helm(*args: str, check: bool = True, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [str(helm_binary()), *args]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def values_args(values: Manifest, tmp: Path) -> list[str]:
    path = tmp / f"values-{len(list(tmp.glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["--values", str(path)]


def render(values: Manifest, tmp: Path, release: str = "ks", namespace: str = NAMESPACE) -> list[Manifest]:
    """Every object `helm install` would create, hooks (the helm test pod) included."""
    argv = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION, *WITH_PROMETHEUS_OPERATOR]
    out = helm(*argv, *values_args(values, tmp))
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def find(docs: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def operator_env(docs: list[Manifest]) -> dict[str, str]:
    """The environment the chart gives the operator container."""
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def pod_specs(docs: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for doc in docs:
        if doc["kind"] == "Pod":
            yield doc["metadata"]["name"], doc["spec"]
        elif "template" in doc.get("spec", {}):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    tmp = tmp_path_factory.mktemp("chart")
    return {name: render(values, tmp) for name, values in VALUE_SETS.items()}


# -- the chart as a whole


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_is_clean(value_set: str, tmp_path: Path) -> None:
    # helm lint cannot be told the cluster serves the monitors' kinds: they are left to the template tests.
    values = {**VALUE_SETS[value_set], "metrics": {"serviceMonitor": {"enabled": False}, "podMonitor": {"enabled": False}}}
    proc = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *values_args(values, tmp_path))
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_objects_match_the_kubernetes_schemas(value_set: str, rendered: dict[str, list[Manifest]]) -> None:
    checked = 0
    for doc in rendered[value_set]:
        if doc["kind"] in PROMETHEUS_OPERATOR_KINDS:
            continue
        # Strict schemas: an unknown field (a typo in a template) is an error too.
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        checked += 1
    assert checked >= 10


def test_crds_are_the_generated_ones() -> None:
    generated = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    copied = sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml"))
    assert copied == generated, "run `make chart` to copy crds/ into the chart"
    _, mismatch, errors = filecmp.cmpfiles(REPO / "crds", CHART / "files" / "crds", generated, shallow=False)
    assert not mismatch and not errors, f"charts/kubeswarm/files/crds differs from crds/ in {mismatch + errors}: run `make chart`"


def test_crds_are_installed_and_kept_unless_asked(rendered: dict[str, list[Manifest]]) -> None:
    generated = {yaml.safe_load(p.read_text())["metadata"]["name"]: yaml.safe_load(p.read_text()) for p in (REPO / "crds").glob("*.yaml")}
    for value_set, keep in [("defaults", True), ("external-nats", False)]:
        crds = {d["metadata"]["name"]: d for d in find(rendered[value_set], "CustomResourceDefinition")}
        assert crds.keys() == generated.keys()
        for name, crd in crds.items():
            assert crd["spec"] == generated[name]["spec"]
            assert (crd["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep") is keep


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nats": {"enabled": False}}, "at '/nats/url'"),
        ({"nats": {"enabled": False, "url": "http://nats:4222"}}, "at '/nats/url'"),
        ({"operator": {"watchNamespaces": ["Team_A"]}}, "at '/operator/watchNamespaces/0'"),
        ({"operator": {"imag": {"tag": "1"}}}, "additional properties 'imag' not allowed"),
        ({"nats": {"replicas": 0}}, "at '/nats/replicas'"),
        ({"nats": {"jetstream": {"fileStore": {"size": "ten gigs"}}}}, "at '/nats/jetstream/fileStore/size'"),
        ({"operator": {"image": {"pullPolicy": "Sometimes"}}}, "at '/operator/image/pullPolicy'"),
        ({"operator": {"healthPort": 0}}, "at '/operator/healthPort'"),
        ({"crds": {"keep": "yes"}}, "at '/crds/keep'"),
        # JetStream needs a majority: 2 servers survive no loss (the description says so, the schema too).
        ({"nats": {"replicas": 2}}, "at '/nats/replicas': minimum: got 2, want 3"),
    ],
)
def test_wrong_values_fail_with_the_path_of_the_value(values: Manifest, message: str, tmp_path: Path) -> None:
    proc = helm("template", "ks", str(CHART), "--kube-version", KUBE_VERSION, *values_args(values, tmp_path), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


# -- the operator


def test_operator_runs_alone_with_restricted_security(rendered: dict[str, list[Manifest]]) -> None:
    deployment = one(rendered["defaults"], "Deployment")
    # Standalone kopf: two operators must never run at once, not even during an upgrade.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "kubeswarm_operator"]
    env = operator_env(rendered["defaults"])
    health = next(p for p in container["ports"] if p["name"] == container["livenessProbe"]["httpGet"]["port"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert str(health["containerPort"]) == env["KUBESWARM_HEALTH_PORT"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_operator_env_names_are_operator_settings(rendered: dict[str, list[Manifest]]) -> None:
    """Every KUBESWARM_* variable the chart sets is one the operator reads."""
    prefix = OperatorSettings.model_config.get("env_prefix", "")
    known = {f"{prefix}{name}".upper() for name in OperatorSettings.model_fields}
    for value_set, docs in rendered.items():
        ours = {name for name in operator_env(docs) if name.startswith("KUBESWARM_")}
        assert ours <= known, f"{value_set}: the operator reads none of {sorted(ours - known)}"
        # And they parse: the operator reads them from its environment as it would in the pod.
        with pytest.MonkeyPatch.context() as env:
            for name, value in operator_env(docs).items():
                env.setenv(name, value)
            settings = OperatorSettings()
        assert settings.nats_url == operator_env(docs)["KUBESWARM_NATS_URL"]


def test_agent_env_reaches_the_operator_as_json(rendered: dict[str, list[Manifest]]) -> None:
    assert "KUBESWARM_AGENT_ENV" not in operator_env(rendered["defaults"])
    env = json.loads(operator_env(rendered["everything"])["KUBESWARM_AGENT_ENV"])
    assert env == {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability.svc:4318"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBESWARM_AGENT_ENV", json.dumps(env))
        assert OperatorSettings().agent_env == env
        patch.setenv("KUBESWARM_AGENT_ENV", json.dumps({"KUBESWARM_AGENT": "x"}))
        with pytest.raises(ValueError, match="KUBESWARM_AGENT"):
            OperatorSettings()


def test_operator_is_told_the_nats_url_and_namespaces(rendered: dict[str, list[Manifest]]) -> None:
    assert operator_env(rendered["defaults"])["KUBESWARM_NATS_URL"] == f"nats://ks-kubeswarm-nats.{NAMESPACE}.svc:4222"
    assert operator_env(rendered["defaults"])["KUBESWARM_NAMESPACES"] == ""
    assert operator_env(rendered["external-nats"])["KUBESWARM_NATS_URL"] == "nats://nats.messaging.svc:4222"
    assert operator_env(rendered["namespaced"])["KUBESWARM_NAMESPACES"] == "team-a,team-b"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_meets_the_restricted_pod_security_standard(value_set: str, rendered: dict[str, list[Manifest]]) -> None:
    specs = dict(pod_specs(rendered[value_set]))
    assert specs
    for name, spec in specs.items():
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["readOnlyRootFilesystem"] is True, name


def rules_by_kind(rules: list[Manifest]) -> dict[tuple[str, str], set[str]]:
    return {(group, resource): set(rule["verbs"]) for rule in rules for group in rule["apiGroups"] for resource in rule["resources"]}


def test_cluster_wide_rbac_is_one_cluster_role(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["defaults"]
    assert not find(docs, "Role") and not find(docs, "RoleBinding")
    role = rules_by_kind(one(docs, "ClusterRole", "ks-kubeswarm-operator")["rules"])
    assert role[("kubeswarm.io", "agents/status")] == {"get", "patch"}
    assert role[("kubeswarm.io", "agents/scale")] == {"get", "patch"}  # the backlog autoscaler
    assert role[("autoscaling", "horizontalpodautoscalers")] == {"get", "list", "watch"}  # read only: never fight an HPA
    assert role[("", "events")] == {"create"}
    assert not any("*" in verbs for verbs in role.values()) and ("", "pods") not in role
    binding = one(docs, "ClusterRoleBinding", "ks-kubeswarm-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ks-kubeswarm-operator", "namespace": NAMESPACE}]
    discovery = rules_by_kind(one(docs, "ClusterRole", "ks-kubeswarm-operator-discovery")["rules"])
    assert discovery == {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}


def test_namespaced_rbac_is_a_role_per_namespace(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["namespaced"]
    cluster_wide = one(rendered["defaults"], "ClusterRole", "ks-kubeswarm-operator")["rules"]
    roles = find(docs, "Role", "ks-kubeswarm-operator")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(r["rules"] == cluster_wide for r in roles)
    assert sorted(b["metadata"]["namespace"] for b in find(docs, "RoleBinding", "ks-kubeswarm-operator")) == ["team-a", "team-b"]
    # The release namespace is not watched: the NATS auth Secret, and nothing else there, by name.
    auth = one(docs, "Role", "ks-kubeswarm-operator-nats-auth")
    assert auth["metadata"]["namespace"] == NAMESPACE
    assert auth["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ks-kubeswarm-nats-auth"], "verbs": ["get", "patch"]}
    ]
    assert one(docs, "RoleBinding", "ks-kubeswarm-operator-nats-auth")["roleRef"]["name"] == "ks-kubeswarm-operator-nats-auth"
    # Cluster-scoped: only reading CRDs and namespaces.
    assert [r["metadata"]["name"] for r in find(docs, "ClusterRole")] == ["ks-kubeswarm-operator-discovery"]
    discovery = rules_by_kind(one(docs, "ClusterRole")["rules"])
    assert discovery == {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}, ("", "namespaces"): {"list", "watch"}}


# -- NATS


def nats_config(docs: list[Manifest]) -> str:
    config: str = one(docs, "ConfigMap", "ks-kubeswarm-nats-config")["data"]["nats.conf"]
    return config


def write_nats_files(docs: list[Manifest], root: Path, resolver_dir: Path) -> Path:
    """The chart's nats.conf and the auth files the operator writes (as its settings from the chart say), laid out as
    the pods mount them (/etc/nats-config, /etc/nats-auth) under ``root``; returns the config's path."""
    settings = OperatorSettings.model_validate({k.removeprefix("KUBESWARM_").lower(): v for k, v in operator_env(docs).items()})
    assert settings.nats_auth_secret == one(docs, "Secret", "ks-kubeswarm-nats-auth")["metadata"]["name"]
    files = NatsAuthority.generate().server_files(resolver_dir=str(resolver_dir), routes=settings.nats_routes)
    (root / "nats-auth").mkdir(parents=True)
    for key in ("auth.conf", "routes.conf"):
        (root / "nats-auth" / key).write_text(files[key])
    config = root / "nats-config" / "nats.conf"
    config.parent.mkdir(parents=True)
    config.write_text(nats_config(docs))
    return config


def test_nats_config_is_accepted_by_nats_server(rendered: dict[str, list[Manifest]], tmp_path: Path) -> None:
    config = write_nats_files(rendered["defaults"], tmp_path, tmp_path / "jwt")
    proc = subprocess.run(
        [str(wheel_binary("nats-server")), "--config", str(config), "-t"],
        env={"SERVER_NAME": "ks-kubeswarm-nats-0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_nats_cluster_routes_reach_every_server(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["defaults"]
    statefulset = one(docs, "StatefulSet")
    headless = one(docs, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    config = nats_config(docs)
    routes = operator_env(docs)["KUBESWARM_NATS_ROUTES"].split(",")
    assert routes == [
        f"ks-kubeswarm-nats-{i}.ks-kubeswarm-nats-headless.{NAMESPACE}.svc:6222" for i in range(statefulset["spec"]["replicas"])
    ]
    assert 'include "../nats-auth/routes.conf"' in config and 'include "../nats-auth/auth.conf"' in config
    mounts = {m["name"]: m["mountPath"] for m in statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert (mounts["config"], mounts["auth"]) == ("/etc/nats-config", "/etc/nats-auth")
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "store_dir: /data" in config


def test_nats_probes_and_lame_duck_follow_the_official_chart(rendered: dict[str, list[Manifest]]) -> None:
    spec = one(rendered["defaults"], "StatefulSet")["spec"]["template"]["spec"]
    nats = spec["containers"][0]
    assert nats["image"] == "nats:2.15.1-alpine"
    assert nats["startupProbe"]["httpGet"] == {"path": "/healthz?js-enabled-only=true", "port": "monitor"}
    assert nats["readinessProbe"]["httpGet"] == {"path": "/healthz?js-server-only=true", "port": "monitor"}
    assert nats["livenessProbe"]["httpGet"] == {"path": "/healthz?js-enabled-only=true", "port": "monitor"}
    assert nats["lifecycle"]["preStop"]["exec"]["command"] == ["nats-server", "--signal", "ldm=/var/run/nats/nats.pid"]
    assert "pid_file: /var/run/nats/nats.pid" in nats_config(rendered["defaults"])
    assert spec["terminationGracePeriodSeconds"] > 30  # lame duck (30s) finishes before the kill
    assert one(rendered["defaults"], "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_nats_ports_are_fenced_by_a_network_policy(rendered: dict[str, list[Manifest]]) -> None:
    """Clients authenticate, so 4222 is open; routes only between the servers; monitoring (no auth) only nearby."""
    nats_pods = one(rendered["defaults"], "StatefulSet")["spec"]["selector"]["matchLabels"]
    for value_set, monitor_peers in (
        ("defaults", [{"podSelector": {}}]),
        ("everything", [{"podSelector": {}}, *EVERYTHING["nats"]["networkPolicy"]["monitorFrom"]]),
    ):
        policy = one(rendered[value_set], "NetworkPolicy")
        assert policy["spec"]["podSelector"]["matchLabels"] == nats_pods
        rules = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["spec"]["ingress"]}
        assert rules == {"client": None, "cluster": [{"podSelector": {"matchLabels": nats_pods}}], "monitor": monitor_peers}


def test_external_nats_renders_no_nats_objects(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["external-nats"]
    assert not find(docs, "StatefulSet") and not find(docs, "PodDisruptionBudget")
    assert not any("nats" in d["metadata"]["name"] for d in docs)


# -- monitoring


def test_pod_monitor_selects_the_operators_agent_pods(rendered: dict[str, list[Manifest]], tmp_path: Path) -> None:
    monitor = one(rendered["everything"], "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": APP_NAME, MANAGED_BY_LABEL: MANAGED_BY}
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    namespaced = render({**NAMESPACED, "metrics": {"podMonitor": {"enabled": True}}}, tmp_path)
    assert one(namespaced, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


@pytest.mark.parametrize("value", ["serviceMonitor", "podMonitor"])
def test_a_monitor_without_its_crd_fails_saying_what_to_do(value: str, tmp_path: Path) -> None:
    values = values_args({"metrics": {value: {"enabled": True}}}, tmp_path)
    proc = helm("template", "ks", str(CHART), "--kube-version", KUBE_VERSION, *values, check=False)
    kind = value[0].upper() + value[1:]
    assert proc.returncode != 0
    assert f"metrics.{value}.enabled=true needs the Prometheus Operator's {kind} CRD" in proc.stderr, proc.stderr
    assert f"leave metrics.{value}.enabled false" in proc.stderr


def test_service_monitor_scrapes_the_operator_metrics_port(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["everything"]
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", "ks-kubeswarm-operator")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port = next(p for p in service["spec"]["ports"] if p["name"] == monitor["spec"]["endpoints"][0]["port"])
    assert str(port["port"]) == operator_env(docs)["KUBESWARM_METRICS_PORT"]


def test_dashboards_are_config_maps_for_the_grafana_sidecar(rendered: dict[str, list[Manifest]]) -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert files
    maps = [d for d in rendered["everything"] if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(maps) == len(files)
    for config_map, path in zip(sorted(maps, key=lambda m: next(iter(m["data"]))), files, strict=True):
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "kubeswarm"}
        assert json.loads(config_map["data"][path.name]) == json.loads(path.read_text())
    assert not [d for d in rendered["defaults"] if d["metadata"].get("labels", {}).get("grafana_dashboard")]


def test_helm_test_hook_checks_the_operator_and_nats(rendered: dict[str, list[Manifest]]) -> None:
    job = one(rendered["defaults"], "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    urls = job["spec"]["template"]["spec"]["containers"][0]["args"][1:]
    assert urls == [
        f"http://ks-kubeswarm-operator.{NAMESPACE}.svc:9091/metrics",
        f"http://ks-kubeswarm-nats-headless.{NAMESPACE}.svc:8222/healthz?js-enabled-only=true",
    ]
    assert one(rendered["external-nats"], "Job")["spec"]["template"]["spec"]["containers"][0]["args"][1:] == urls[:1]


# -- the development loop


def test_skaffold_builds_the_dockerfile_targets_and_deploys_dev_values(tmp_path: Path) -> None:
    skaffold = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    targets = {a["image"]: a["docker"]["target"] for a in skaffold["build"]["artifacts"]}
    assert targets == {"kubeswarm/runtime": "runtime", "kubeswarm/operator": "operator"}
    dockerfile = (REPO / "Dockerfile").read_text()
    assert all(f" AS {target}\n" in dockerfile for target in targets.values())
    (chart_release,) = skaffold["deploy"]["helm"]["releases"]
    assert REPO / chart_release["chartPath"] == CHART
    # What skaffold would pass, with the template fields filled in as skaffold does.
    values = yaml.safe_load((REPO / chart_release["valuesFiles"][0]).read_text())
    built = {"operator": "dev-operator:abc123", "runtime": "dev-runtime:abc123"}
    for key, template in chart_release["setValueTemplates"].items():
        part, field = key.split(".")[0], key.split(".")[-1]
        assert template.startswith("{{.IMAGE_") and part in built
        values.setdefault(part, {}).setdefault("image", {})[field] = built[part].split(":")[0 if field == "repository" else 1]
    docs = render(values, tmp_path)
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == built["operator"]
    assert operator_env(docs)["KUBESWARM_RUNTIME_IMAGE"] == built["runtime"]
    assert one(docs, "StatefulSet")["spec"]["replicas"] == 1


# -- packaging


def test_make_chart_packages_with_a_helm_on_path_and_builds_nothing_else(tmp_path: Path) -> None:
    fake = tmp_path / "helm"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    plan = subprocess.run(["make", "-n", "chart"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert f"{fake} package charts/kubeswarm" in plan
    assert "testbed" not in plan  # no test bed (Kubernetes) build to get a helm
