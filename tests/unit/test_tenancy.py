"""Tenancy rules that need no cluster: whose subject prefix and AWS secrets are whose, no credentials in NATS URLs."""

from __future__ import annotations

import pytest
from kubeswarm_operator.agent.aws_secrets import AwsSecretError, check_allowed
from kubeswarm_operator.settings import OperatorSettings
from kubeswarm_runtime.resources import AwsSecretsManagerRef, NatsSpec, prefix_owned

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("namespace", "prefix", "owned"),
    [
        ("team-a", "ks.team-a", True),
        ("team-a", "ks.team-a.research", True),
        ("team-a", "ks.team-a.research.deep", True),
        ("team-a", "ks.team-b.research", False),
        ("team-a", "ks.team-ab.research", False),  # a namespace whose name merely begins like ours
        ("team-a", "ks.team", False),
        ("team-a", "acme.research", False),
    ],
)
def test_a_prefix_belongs_to_one_namespace(namespace: str, prefix: str, owned: bool) -> None:
    assert prefix_owned(namespace, prefix) is owned


@pytest.mark.parametrize("url", ["nats://u:p@nats:4222", "tls://token@nats:4222", "nats://a:4222,nats://u:p@b:4222"])
def test_credentials_in_a_nats_url_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="must not carry credentials"):
        NatsSpec(url=url)
    with pytest.raises(ValueError, match="must not carry credentials"):
        OperatorSettings(nats_url=url)


def test_a_nats_url_without_credentials_is_accepted() -> None:
    assert NatsSpec(url="nats://a:4222,tls://b.example:4222").url


@pytest.mark.parametrize(
    ("secret_id", "allowed"),
    [
        ("kubeswarm/team-a/anthropic", True),
        ("arn:aws:secretsmanager:eu-west-1:123456789012:secret:kubeswarm/team-a/anthropic-AbCdEf", True),
        ("kubeswarm/team-b/anthropic", False),
        ("kubeswarm/team-ab/anthropic", False),
        ("arn:aws:secretsmanager:eu-west-1:123456789012:secret:kubeswarm/team-b/anthropic-AbCdEf", False),
        ("prod/anthropic", False),
    ],
)
def test_a_namespace_names_only_its_own_aws_secrets(secret_id: str, allowed: bool) -> None:
    ref = AwsSecretsManagerRef(secret_id=secret_id, region="eu-west-1")
    if allowed:
        check_allowed(ref, "kubeswarm/{namespace}/", "team-a")
    else:
        with pytest.raises(AwsSecretError, match="SecretNotAllowed"):
            check_allowed(ref, "kubeswarm/{namespace}/", "team-a")
    check_allowed(ref, "", "team-a")  # no prefix configured: any secret
