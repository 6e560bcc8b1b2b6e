"""NATS decentralized auth: one operator, one account per swarm, user JWTs in creds files (docs/security.md).

Every key derives from one master secret (HMAC-SHA256 of a label), so the
operator and local mode store nothing but that secret and re-derive the same
operator, system account and swarm accounts on every run. JWTs follow the
nats-io/jwt v2 claims; nats-server verifies them against the operator JWT in
its configuration and the account JWTs its resolver holds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nkeys

from .names import SwarmNames

_JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
# The auth Secret's keys (the NATS servers mount it; the operator keeps the master in it).
MASTER_KEY = "master"
AUTH_CONF_KEY = "auth.conf"
ROUTES_CONF_KEY = "routes.conf"
ROUTE_USER = "route"
# A user JWT lives this long; holders get a fresh one once half of it has passed (rotation).
USER_LIFETIME_SECONDS = 7 * 24 * 3600
# The operator's identity in each swarm's account: manage streams and consumers, read their state, nothing else
# (no publishing into the swarm, no reading a message: STREAM.MSG.GET, DIRECT.GET and CONSUMER.MSG.NEXT are absent).
OPERATOR_PUBLISH = (
    "$JS.API.INFO",
    "$JS.API.STREAM.CREATE.*",
    "$JS.API.STREAM.UPDATE.*",
    "$JS.API.STREAM.DELETE.*",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.CONSUMER.CREATE.>",
    "$JS.API.CONSUMER.DURABLE.CREATE.>",
    "$JS.API.CONSUMER.INFO.>",
    "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.CONSUMER.NAMES.>",
    "$JS.API.CONSUMER.LIST.>",
)
OPERATOR_INBOX = "_INBOX_kubeswarm_operator"
# Swarms get JetStream without account limits (streams' own limits apply); a server's store is shared.
_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}
_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1, "max_ack_pending": -1}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class NKey:
    """An nkey pair held as its seed text (``SO…``, ``SA…``, ``SU…``); kept out of repr."""

    seed: str = field(repr=False)

    @classmethod
    def from_raw(cls, raw: bytes, prefix: int) -> NKey:
        return cls(nkeys.encode_seed(raw, prefix).decode())

    @classmethod
    def new_user(cls) -> NKey:
        return cls.from_raw(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)

    @property
    def public_key(self) -> str:
        pair = nkeys.from_seed(bytearray(self.seed.encode()))
        return str(pair.public_key.decode())

    def sign(self, data: bytes) -> bytes:
        pair = nkeys.from_seed(bytearray(self.seed.encode()))
        return bytes(pair.sign(data))


def encode_jwt(claims: dict[str, Any], signer: NKey) -> str:
    """A NATS JWT: ``claims`` with ``iss`` set to the signer and ``jti`` the hash of the rest (as nats-io/jwt does)."""
    body = {**claims, "iss": signer.public_key, "jti": ""}
    body["jti"] = base64.b32encode(hashlib.new("sha512_256", json.dumps(body, sort_keys=True).encode()).digest()).decode().rstrip("=")
    signing_input = f"{_b64url(json.dumps(_JWT_HEADER).encode())}.{_b64url(json.dumps(body, sort_keys=True).encode())}"
    return f"{signing_input}.{_b64url(signer.sign(signing_input.encode()))}"


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT we issued (not verified: the server verifies; we only read our own issuance back)."""
    try:
        claims: dict[str, Any] = json.loads(_b64url_decode(token.split(".")[1]))
    except (IndexError, ValueError) as exc:
        raise ValueError("not a NATS JWT") from exc
    return claims


def creds_text(user_jwt: str, user: NKey) -> str:
    """A .creds file: the user's JWT and its seed (what nats clients read)."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def creds_jwt(creds: str) -> str:
    """The user JWT of a .creds file's text."""
    lines = creds.splitlines()
    for index, line in enumerate(lines):
        if "BEGIN NATS USER JWT" in line and index + 1 < len(lines):
            return lines[index + 1].strip()
    raise ValueError("not a NATS creds file")


def creds_fresh(creds: str, account: str, now: float) -> bool:
    """A creds file issued in ``account`` with at least half of its life left (else it is re-issued)."""
    try:
        claims = jwt_claims(creds_jwt(creds))
    except ValueError:
        return False
    issued, expires = claims.get("iat", 0), claims.get("exp", 0)
    return bool(claims.get("iss") == account and expires - now > (expires - issued) / 2)


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()

    def claims(self) -> dict[str, Any]:
        return {"pub": {"allow": list(self.publish)}, "sub": {"allow": list(self.subscribe)}}


def agent_permissions(names: SwarmNames) -> Permissions:
    """An agent's (and a CLI user's): its swarm's subjects and buckets, the JetStream API, its replies.

    The account already walls the swarm off; these lists also refuse a prefix (or a bucket) the swarm does not own,
    should a mistake ever put two swarms in one account.
    """
    buckets = (names.agents_bucket, names.tasks_bucket, names.mcp_sessions_bucket)
    return Permissions(
        publish=(f"{names.prefix}.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "_INBOX.>", *(f"$KV.{b}.>" for b in buckets)),
        subscribe=(f"{names.prefix}.>", "_INBOX.>", f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{names.tasks_stream}.>"),
    )


OPERATOR_PERMISSIONS = Permissions(publish=OPERATOR_PUBLISH, subscribe=(f"{OPERATOR_INBOX}.>",))
# The operator's user in the system account: looks up and pushes account JWTs, nothing else.
SYSTEM_PERMISSIONS = Permissions(publish=("$SYS.REQ.CLAIMS.UPDATE", "$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP"), subscribe=(f"{OPERATOR_INBOX}.>",))


@dataclass(frozen=True)
class SwarmAccount:
    """The NATS account of one swarm (namespace + swarm name)."""

    namespace: str
    swarm: str
    key: NKey

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.swarm}"

    @property
    def public_key(self) -> str:
        return self.key.public_key


@dataclass(frozen=True)
class NatsAuthority:
    """The key hierarchy derived from one master secret: operator, system account, and an account per swarm."""

    master: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> NatsAuthority:
        return cls(secrets.token_bytes(32))

    def _derive(self, label: str, prefix: int) -> NKey:
        return NKey.from_raw(hmac.new(self.master, f"kubeswarm/nats/{label}".encode(), hashlib.sha256).digest(), prefix)

    @property
    def operator(self) -> NKey:
        return self._derive("operator", nkeys.PREFIX_BYTE_OPERATOR)

    @property
    def system_account(self) -> NKey:
        return self._derive("account/$SYS", nkeys.PREFIX_BYTE_ACCOUNT)

    @property
    def route_password(self) -> str:
        """The password servers of one cluster present to each other on their route port."""
        return hmac.new(self.master, b"kubeswarm/nats/routes", hashlib.sha256).hexdigest()

    def account(self, namespace: str, swarm: str) -> SwarmAccount:
        return SwarmAccount(namespace, swarm, self._derive(f"account/{namespace}/{swarm}", nkeys.PREFIX_BYTE_ACCOUNT))

    def operator_jwt(self) -> str:
        # No iat: the same master always renders the same server configuration.
        operator = self.operator
        claims = {
            "name": "kubeswarm",
            "sub": operator.public_key,
            "nats": {"system_account": self.system_account.public_key, "type": "operator", "version": 2},
        }
        return encode_jwt(claims, operator)

    def system_account_jwt(self) -> str:
        return self._account_jwt("SYS", self.system_account.public_key, jetstream=False)

    def account_jwt(self, account: SwarmAccount) -> str:
        """The swarm's account JWT; the same every time (no iat), so pushing it again changes nothing."""
        return self._account_jwt(account.name, account.public_key, jetstream=True)

    def _account_jwt(self, name: str, subject: str, *, jetstream: bool) -> str:
        limits = _UNLIMITED | (_JETSTREAM if jetstream else {})
        claims: dict[str, Any] = {
            "name": name,
            "sub": subject,
            "nats": {"limits": limits, "default_permissions": {"pub": {}, "sub": {}}, "type": "account", "version": 2},
        }
        return encode_jwt(claims, self.operator)

    def user_creds(
        self,
        account: SwarmAccount,
        name: str,
        permissions: Permissions,
        *,
        now: float | None = None,
        lifetime: float = USER_LIFETIME_SECONDS,
    ) -> str:
        """A fresh user of ``account`` (new key), valid ``lifetime`` seconds, as a .creds file's text."""
        return self._user_creds(account.key, name, permissions, now, lifetime)

    def system_user_creds(self, name: str, *, now: float | None = None) -> str:
        """A user of the system account: pushes account JWTs to the servers' resolver."""
        return self._user_creds(self.system_account, name, SYSTEM_PERMISSIONS, now, USER_LIFETIME_SECONDS)

    def _user_creds(self, account: NKey, name: str, permissions: Permissions, now: float | None, lifetime: float) -> str:
        issued = int(time.time() if now is None else now)
        user = NKey.new_user()
        claims = {
            "name": name,
            "sub": user.public_key,
            "iat": issued,
            "exp": issued + int(lifetime),
            "nats": {**permissions.claims(), "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2},
        }
        return creds_text(encode_jwt(claims, account), user)

    def routes_config(self, routes: Sequence[str]) -> str:
        """The nats.conf fragment inside a ``cluster`` block: route auth, and the routes (host:port) with it."""
        password = self.route_password
        urls = "".join(f"\n  nats-route://{ROUTE_USER}:{password}@{route}" for route in routes)
        return f"authorization {{ user: {ROUTE_USER}, password: {password} }}\nroutes: [{urls}\n]\n"

    def server_files(self, *, resolver_dir: str, routes: Sequence[str]) -> dict[str, str]:
        """The auth Secret's files a NATS server includes: the master (to re-derive), auth.conf, routes.conf."""
        return {
            MASTER_KEY: self.master.hex(),
            AUTH_CONF_KEY: self.server_config(resolver_dir=resolver_dir),
            ROUTES_CONF_KEY: self.routes_config(routes),
        }

    @classmethod
    def from_files(cls, files: Mapping[str, str]) -> NatsAuthority:
        return cls(bytes.fromhex(files[MASTER_KEY].strip()))

    def server_config(self, *, resolver_dir: str | None, accounts: dict[str, str] | None = None) -> str:
        """The nats.conf fragment of operator mode.

        ``resolver_dir``: a full resolver keeping the account JWTs the operator pushes there
        (``$SYS.REQ.CLAIMS.UPDATE``); None: a memory resolver holding only ``accounts``
        (public key -> JWT) preloaded, for a server whose swarms are known at start (local mode).
        """
        preload = {self.system_account.public_key: self.system_account_jwt()} | (accounts or {})
        lines = [
            f"operator: {self.operator_jwt()}",
            f"system_account: {self.system_account.public_key}",
            f'resolver: {{ type: full, dir: "{resolver_dir}", allow_delete: false, interval: "2m" }}'
            if resolver_dir
            else "resolver: MEMORY",
            "resolver_preload: {",
            *(f"  {key}: {token}" for key, token in preload.items()),
            "}",
        ]
        return "\n".join(lines) + "\n"
