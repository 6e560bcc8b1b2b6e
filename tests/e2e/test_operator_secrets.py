"""API keys from AWS Secrets Manager (moto in server mode): sync, rotation rolls the pods, errors by code, no value leaks."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from typing import Any

import boto3
import pytest
from kubeswarm_runtime.render import MODEL_API_KEY_ENV

from tests.e2e.conftest import MotoServer, Namespace, Operator, until
from tests.e2e.test_operator_swarm import condition

pytestmark = pytest.mark.e2e

REGION = "eu-west-1"
CONFIG_HASH = "kubeswarm.io/config-hash"


@pytest.fixture
def secretsmanager(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in moto_server.client_env.items():
        monkeypatch.setenv(key, value)
    return boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto_server.url)


def aws_agent(name: str, secret_id: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeswarm.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "provider": "anthropic",
                "name": "claude-sonnet-4-5",
                "awsSecretsManager": {"secretId": secret_id, "region": REGION, "key": "apiKey"},
            }
        },
    }


def synced_value(namespace: Namespace, agent: str) -> str | None:
    secret = namespace.get("secret", f"{agent}-aws-api-key")
    encoded = (secret or {}).get("data", {}).get("api-key")
    return base64.b64decode(encoded).decode() if encoded else None


def pod_config_hash(namespace: Namespace, agent: str) -> str | None:
    deployment = namespace.get("deployment", agent) or {}
    value = deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {}).get(CONFIG_HASH)
    return str(value) if value is not None else None


def test_sync_rotation_failure_and_no_leaks(operator: Operator, namespace: Namespace, secretsmanager: Any) -> None:
    secret_id = f"kubeswarm/{namespace.name}/{uuid.uuid4().hex[:8]}-anthropic"
    first, second = f"sk-first-{secrets.token_hex(12)}", f"sk-second-{secrets.token_hex(12)}"
    secretsmanager.create_secret(Name=secret_id, SecretString=json.dumps({"apiKey": first}))

    namespace.apply(aws_agent("writer", secret_id))
    until(lambda: synced_value(namespace, "writer") == first, 60, "the AWS value synced into the Agent's Secret")
    secret = namespace.get("secret", "writer-aws-api-key")
    assert secret is not None
    assert [ref["kind"] for ref in secret["metadata"]["ownerReferences"]] == ["Agent"]
    # Until the watch shows the synced Secret, a reconcile may still report it missing: wait for the settled reason.
    until(
        lambda: (condition(namespace.must("agent", "writer"), "SecretsReady") or {}).get("reason") == "SyncedFromAws",
        60,
        "SecretsReady=SyncedFromAws",
    )

    deployment = until(lambda: namespace.get("deployment", "writer"), 60, "the Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": MODEL_API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": "writer-aws-api-key", "key": "api-key"}}} in env
    before = until(lambda: pod_config_hash(namespace, "writer"), 30, "the pods' config hash")

    # Rotation in AWS: the timer picks it up, the Secret changes, the pods roll.
    secretsmanager.put_secret_value(SecretId=secret_id, SecretString=json.dumps({"apiKey": second}))
    until(lambda: synced_value(namespace, "writer") == second, 60, "the rotated value synced")
    until(lambda: pod_config_hash(namespace, "writer") not in (None, before), 60, "the pods to roll on rotation")

    # A secret that does not exist: a condition with AWS's error code.
    namespace.apply(aws_agent("orphan", f"kubeswarm/{namespace.name}/{uuid.uuid4().hex[:8]}-missing"))

    def failed() -> dict[str, Any] | None:
        # Until the first sync has run the synced Secret is merely absent (SecretNotFound);
        # the sync then reports what AWS said.
        cond = condition(namespace.get("agent", "orphan"), "SecretsReady")
        return cond if cond and cond["status"] == "False" and cond["reason"] == "ResourceNotFoundException" else None

    cond = until(failed, 60, "SecretsReady=False with AWS's error code for the missing AWS secret")
    assert cond["message"].startswith("AWS Secrets Manager: ResourceNotFoundException reading")

    # The values never show outside Secrets: operator log, events, statuses, ConfigMaps.
    places = {
        "operator log": operator.log.read_text(errors="replace"),
        "events": namespace.kubectl("get", "events", "-o", "json").stdout,
        "agent statuses": namespace.kubectl("get", "agents", "-o", "jsonpath={.items[*].status}").stdout,
        "configmaps": namespace.kubectl("get", "configmaps", "-o", "json").stdout,
        "describe": namespace.kubectl("describe", "agents").stdout,
    }
    for value in (first, second):
        for place, text in places.items():
            assert value not in text, f"a secret value leaked into the {place}"


def test_a_namespace_reads_only_its_own_aws_secrets(
    operator: Operator, namespace: Namespace, other_namespace: Namespace, secretsmanager: Any
) -> None:
    theirs = f"kubeswarm/{other_namespace.name}/anthropic"
    value = f"sk-theirs-{secrets.token_hex(12)}"
    arn = secretsmanager.create_secret(Name=theirs, SecretString=json.dumps({"apiKey": value}))["ARN"]
    namespace.apply(aws_agent("thief", theirs))
    namespace.apply(aws_agent("arn-thief", arn))

    for agent in ("thief", "arn-thief"):

        def refused(agent: str = agent) -> dict[str, Any] | None:
            cond = condition(namespace.get("agent", agent), "SecretsReady")
            return cond if cond and cond["reason"] == "SecretNotAllowed" else None

        cond = until(refused, 60, f"SecretsReady=False SecretNotAllowed on {agent}")
        assert cond["status"] == "False" and f"kubeswarm/{namespace.name}/" in cond["message"]
        assert synced_value(namespace, agent) is None
    # The owner's own Agent reads it.
    other_namespace.apply(aws_agent("owner", theirs))
    until(lambda: synced_value(other_namespace, "owner") == value, 60, "the owner's Agent synced its own secret")
