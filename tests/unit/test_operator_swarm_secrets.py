"""The AWS Secrets Manager sync's reading and reporting, against moto's in-process mock (no values in errors)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from kubeswarm_operator.agent.aws_secrets import AwsSecretError, build_synced_secret, failure_condition, read_secret
from kubeswarm_operator.agent.children import api_key_ref, referenced_objects
from kubeswarm_runtime.resources import Agent, AwsSecretsManagerRef
from moto import mock_aws

REGION = "eu-west-1"
VALUE = "sk-unit-0123456789"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


def ref(secret_id: str, key: str | None = None) -> AwsSecretsManagerRef:
    return AwsSecretsManagerRef(secret_id=secret_id, region=REGION, key=key)


def read(reference: AwsSecretsManagerRef) -> str:
    return asyncio.run(read_secret(reference, None))


def test_whole_string_or_one_json_key(aws: Any) -> None:
    aws.create_secret(Name="plain", SecretString=VALUE)
    aws.create_secret(Name="doc", SecretString=json.dumps({"apiKey": VALUE, "other": "x"}))
    assert read(ref("plain")) == VALUE
    assert read(ref("doc", "apiKey")) == VALUE


@pytest.mark.parametrize(
    ("secret_id", "key", "code"),
    [("missing", None, "ResourceNotFoundException"), ("plain", "apiKey", "NotJson"), ("doc", "nope", "KeyNotFound")],
)
def test_errors_carry_a_code_and_never_the_value(aws: Any, secret_id: str, key: str | None, code: str) -> None:
    aws.create_secret(Name="plain", SecretString=VALUE)
    aws.create_secret(Name="doc", SecretString=json.dumps({"apiKey": VALUE}))
    with pytest.raises(AwsSecretError) as caught:
        read(ref(secret_id, key))
    assert caught.value.code == code
    cond = failure_condition(caught.value)
    assert (cond.type, cond.status, cond.reason) == ("SecretsReady", "False", code)
    assert VALUE not in cond.message and VALUE not in str(caught.value)


def test_the_pods_read_the_synced_secret_and_roll_with_it() -> None:
    agent = Agent.model_validate(
        {
            "metadata": {"name": "writer", "namespace": "ns", "uid": "u"},
            "spec": {"model": {"provider": "anthropic", "name": "m", "awsSecretsManager": {"secretId": "s", "region": REGION}}},
        }
    )
    assert api_key_ref(agent) is not None
    assert api_key_ref(agent).name == "writer-aws-api-key"  # type: ignore[union-attr]
    assert ("Secret", "writer-aws-api-key") in referenced_objects(agent)
    secret = build_synced_secret(agent, VALUE)
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "Agent"
    assert base64.b64decode(secret["data"]["api-key"]).decode() == VALUE
