"""NATS identities as pure functions: JWTs signed and shaped as nats-server checks them, creds kept or renewed."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubeswarm_operator.agent.children import NATS_CREDS_KEY, NATS_IDENTITY_ANNOTATION, NATS_RENEW_AFTER_ANNOTATION
from kubeswarm_operator.agent.reconciler import nats_identity
from kubeswarm_operator.jetstream.connections import NatsPool
from kubeswarm_operator.jetstream.identity import NatsIdentities
from kubeswarm_runtime.names import SwarmNames
from kubeswarm_runtime.natsauth import USER_LIFETIME_SECONDS, NatsAuthority, agent_permissions, creds_fresh, creds_jwt, jwt_claims
from kubeswarm_runtime.resources import Agent
from nacl.signing import VerifyKey

pytestmark = pytest.mark.unit

MASTER = bytes(range(32))


def _verify(token: str) -> dict[str, Any]:
    header, payload, signature = token.split(".")
    claims = jwt_claims(token)
    raw_key = base64.b32decode(claims["iss"] + "=" * (-len(claims["iss"]) % 8))[1:33]  # prefix byte, key, crc16
    VerifyKey(raw_key).verify(f"{header}.{payload}".encode(), base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"typ": "JWT", "alg": "ed25519-nkey"}
    return claims


def test_keys_derive_from_the_master_and_differ_per_swarm() -> None:
    one, again = NatsAuthority(MASTER), NatsAuthority(MASTER)
    assert one.operator.public_key == again.operator.public_key and one.operator.public_key.startswith("O")
    assert one.account("a", "s").public_key == again.account("a", "s").public_key
    assert len({one.account("a", "s").public_key, one.account("b", "s").public_key, one.account("a", "t").public_key}) == 3
    assert NatsAuthority.generate().operator.public_key != one.operator.public_key
    # The server files render the same from the same master: the Secret is not rewritten on restart.
    files = one.server_files(resolver_dir="/data/jwt", routes=["nats-0.nats:6222"])
    assert files == again.server_files(resolver_dir="/data/jwt", routes=["nats-0.nats:6222"])
    assert NatsAuthority.from_files(files).master == MASTER
    assert f"route:{one.route_password}@nats-0.nats:6222" in files["routes.conf"]


def test_jwts_are_signed_by_their_issuer_in_the_v2_shape() -> None:
    authority = NatsAuthority(MASTER)
    account = authority.account("lab", "research")
    operator = _verify(authority.operator_jwt())
    assert operator["iss"] == operator["sub"] == authority.operator.public_key
    assert operator["nats"]["system_account"] == authority.system_account.public_key
    claims = _verify(authority.account_jwt(account))
    assert claims["iss"] == authority.operator.public_key and claims["sub"] == account.public_key
    assert claims["nats"]["limits"]["disk_storage"] == -1  # JetStream on
    assert authority.account_jwt(account) == authority.account_jwt(account)  # pushing it again is a no-op
    creds = authority.user_creds(account, "lab/research/scout", agent_permissions(SwarmNames("ks.lab.research")), now=1000)
    user = _verify(creds_jwt(creds))
    assert user["iss"] == account.public_key and user["exp"] == 1000 + USER_LIFETIME_SECONDS
    assert "ks.lab.research.>" in user["nats"]["pub"]["allow"] and ">" not in user["nats"]["sub"]["allow"]


def test_creds_are_fresh_for_their_account_until_half_their_life() -> None:
    authority = NatsAuthority(MASTER)
    account = authority.account("lab", "research")
    creds = authority.user_creds(account, "u", agent_permissions(SwarmNames("ks.lab.research")), now=0, lifetime=100)
    assert creds_fresh(creds, account.public_key, 49)
    assert not creds_fresh(creds, account.public_key, 51)
    assert not creds_fresh(creds, authority.account("lab", "other").public_key, 1)
    assert not creds_fresh("", account.public_key, 1)


def test_an_agent_keeps_its_creds_until_due_or_moved() -> None:
    identities = NatsIdentities(NatsAuthority(MASTER), "nats://nats:4222", NatsPool(1))
    agent = Agent.model_validate({"metadata": {"name": "scout", "namespace": "lab"}, "spec": {"swarm": "research"}})
    first = nats_identity(identities, agent, "ks.lab.research", None, now=1000)
    assert first.new_creds is not None
    assert int(first.annotations[NATS_RENEW_AFTER_ANNOTATION]) == 1000 + USER_LIFETIME_SECONDS // 2
    live = {"digests": {NATS_CREDS_KEY: "d"}, "metadata": {"annotations": first.annotations}}
    kept = nats_identity(identities, agent, "ks.lab.research", live, now=2000)
    assert kept.new_creds is None and kept.annotations == first.annotations
    assert nats_identity(identities, agent, "ks.lab.research", live, now=1000 + USER_LIFETIME_SECONDS).new_creds is not None
    assert nats_identity(identities, agent, "ks.lab.other", live, now=2000).new_creds is not None
    moved = agent.model_copy(update={"spec": agent.spec.model_copy(update={"swarm": "other"})})
    assert nats_identity(identities, moved, "ks.lab.research", live, now=2000).new_creds is not None
    assert NATS_IDENTITY_ANNOTATION in kept.annotations
