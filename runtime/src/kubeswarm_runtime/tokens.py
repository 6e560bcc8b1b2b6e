"""Bearer tokens for an agent's MCP endpoint in ``mcp.auth: {mode: jwt}``: what ``kubeswarm token`` mints.

The signing key is the agent's: in a cluster the ``jwt-key`` of the Secret ``<agent>-credentials`` the
operator generates (read with kubectl, so the user's own rights apply), in local mode the key file
``kubeswarm up`` writes. Tokens are HS256 with ``sub``, ``iat``, ``exp`` and, when asked, ``scope``
(space-separated, as RFC 8693 and the runtime's scope check read it) and ``aud``.
"""

from __future__ import annotations

import base64
import binascii
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .render import CREDENTIALS_SECRET_SUFFIX, JWT_SECRET_KEY

LOCAL_KEYS_DIR = "jwt"


def local_key_file(state_dir: Path, agent: str) -> Path:
    """Where local mode keeps an agent's signing key."""
    return state_dir / LOCAL_KEYS_DIR / f"{agent}.key"


def mint(key: str, *, subject: str, scopes: Sequence[str] = (), ttl_seconds: int = 3600, audience: str | None = None) -> str:
    import jwt

    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    if scopes:
        claims["scope"] = " ".join(scopes)
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, key, algorithm="HS256")


def key_from_cluster(agent: str, namespace: str | None, kubectl: str = "kubectl") -> str:
    """The agent's signing key from its Secret, read with the caller's kubectl (and so the caller's rights)."""
    argv = [kubectl, "get", "secret", agent + CREDENTIALS_SECRET_SUFFIX, "-o", f"jsonpath={{.data.{JWT_SECRET_KEY}}}"]
    if namespace:
        argv[1:1] = ["--namespace", namespace]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise RuntimeError(f"{kubectl} not found: install kubectl, or pass --key-file") from None
    if done.returncode != 0:
        raise RuntimeError(f"cannot read the signing key of agent {agent!r}: {done.stderr.strip()}")
    try:
        key = base64.b64decode(done.stdout.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        secret = agent + CREDENTIALS_SECRET_SUFFIX
        raise RuntimeError(
            f"the {JWT_SECRET_KEY} of Secret {secret} is not a text key (made by an older operator): "
            f"delete the Secret and the operator makes a new key"
        ) from None
    if not key:
        raise RuntimeError(f"agent {agent!r} has no signing key yet: is its spec.mcp.auth {{mode: jwt}}?")
    return key
