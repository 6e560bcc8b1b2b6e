"""API keys from AWS Secrets Manager, kept in a Kubernetes Secret owned by the Agent.

boto3 is blocking, so every call runs in a worker thread; it is imported on
first use (some 30 MiB), so an operator with no AWS-backed Agent never loads it.  Credentials come
from the operator's environment (or IRSA through it); the endpoint can be
overridden (``KUBESWARM_AWS_ENDPOINT_URL``, for tests against moto).  Errors
carry the AWS error code and the secret's id, never its value.
"""

from __future__ import annotations

import asyncio
import base64
import json

from kubeswarm_runtime.resources import Agent, AwsSecretsManagerRef, Condition

from ..kube.conditions import condition
from ..kube.kinds import SECRET, Manifest
from ..kube.owned import owned
from .children import AWS_SYNCED_KEY, aws_synced_secret_name, child_labels, owner_reference


class AwsSecretError(Exception):
    def __init__(self, code: str, ref: AwsSecretsManagerRef, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.ref = ref
        self.detail = detail


def _read(ref: AwsSecretsManagerRef, endpoint_url: str | None) -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    # A session per call: boto3's default session is not safe to share across threads.
    client = boto3.session.Session().client("secretsmanager", region_name=ref.region, endpoint_url=endpoint_url)
    try:
        response = client.get_secret_value(SecretId=ref.secret_id)
    except ClientError as error:
        raise AwsSecretError(error.response.get("Error", {}).get("Code", "ClientError"), ref) from None
    except BotoCoreError as error:
        # e.g. no credentials, endpoint unreachable: the class name is the code; the text holds no secret.
        raise AwsSecretError(type(error).__name__, ref, str(error)) from None
    if "SecretString" not in response:
        raise AwsSecretError("BinarySecretUnsupported", ref, "the secret holds binary data; store the key as a string")
    text: str = response["SecretString"]
    if ref.key is None:
        return text
    try:
        document = json.loads(text)
    except ValueError:
        raise AwsSecretError("NotJson", ref, f"key {ref.key!r} given but the secret string is not a JSON object") from None
    if not isinstance(document, dict) or not isinstance(document.get(ref.key), str):
        raise AwsSecretError("KeyNotFound", ref, f"the secret's JSON object has no string key {ref.key!r}")
    return str(document[ref.key])


def secret_name(secret_id: str) -> str:
    """The name in a secret id: itself, or the part of an ARN after ``:secret:`` (with AWS's 6-character suffix)."""
    _, marker, name = secret_id.partition(":secret:")
    return name if marker else secret_id


def allowed_prefix(template: str, namespace: str) -> str:
    return template.replace("{namespace}", namespace)


def check_allowed(ref: AwsSecretsManagerRef, template: str, namespace: str) -> None:
    """AwsSecretError unless the secret's name begins with the namespace's prefix: the operator's AWS identity
    reads for every namespace, so each may name only its own secrets (an empty template allows any)."""
    prefix = allowed_prefix(template, namespace)
    if not secret_name(ref.secret_id).startswith(prefix):
        detail = f"this namespace may read only secrets whose name begins with {prefix!r} (operator setting aws_secret_prefix)"
        raise AwsSecretError("SecretNotAllowed", ref, detail)


async def read_secret(ref: AwsSecretsManagerRef, endpoint_url: str | None) -> str:
    """The API key held in AWS Secrets Manager, or AwsSecretError."""
    return await asyncio.to_thread(_read, ref, endpoint_url)


def synced_data(value: str) -> dict[str, str]:
    return {AWS_SYNCED_KEY: base64.b64encode(value.encode()).decode()}


def build_synced_secret(agent: Agent, value: str) -> Manifest:
    """The Agent-owned Secret the pods read the key from (deleted with the Agent)."""
    return owned(
        SECRET,
        aws_synced_secret_name(agent),
        agent.metadata.namespace,
        labels=child_labels(agent),
        owner=owner_reference(agent),
        body={"type": "Opaque", "data": synced_data(value)},
        hashed=False,  # it holds the value
    )


def failure_condition(error: AwsSecretError) -> Condition:
    where = f"secret {error.ref.secret_id!r} in {error.ref.region}"
    message = f"AWS Secrets Manager: {error.code} reading {where}" + (f": {error.detail}" if error.detail else "")
    return condition("SecretsReady", False, error.code, message)


def synced_condition(agent: Agent) -> Condition:
    ref = agent.spec.model.aws_secrets_manager
    assert ref is not None
    message = f"API key synced from AWS secret {ref.secret_id!r} into Secret {aws_synced_secret_name(agent)!r}"
    return condition("SecretsReady", True, "SyncedFromAws", message)
