"""Local mode end to end: `kubeswarm demo`, and `kubeswarm up` driven by the CLI verbs, stopped by Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kubeswarm_runtime.local import LocalSwarm
from kubeswarm_runtime.manifests import load_manifests

from tests.integration.test_mcp_support import modern_call

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "swarm.yaml"
KUBESWARM = [sys.executable, "-m", "kubeswarm_runtime.cli"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KUBESWARM_")}


def test_demo_runs_the_example_swarm(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*KUBESWARM, "demo", str(EXAMPLE), "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo passed" in proc.stdout
    assert "seen by" in proc.stdout
    assert "9/9 tasks answered" in proc.stdout


def test_tools_demo_agents_cooperate_in_local_mode() -> None:
    """examples/tools: a planner asks a researcher by capability, calls an SDK-built MCP server, shares a discovery and
    delegates by task, all through its model's tool calls (the scripted stand-in)."""
    root = Path(__file__).parents[2]
    proc = subprocess.run([sys.executable, "-m", "examples.tools.demo"], capture_output=True, text=True, timeout=180, env=_env(), cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tools demo passed" in proc.stdout
    assert "weather__forecast" in proc.stdout and "(write, depth 1): succeeded" in proc.stdout


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KUBESWARM, *args, "--state-dir", str(state)], capture_output=True, text=True, timeout=60, env=_env())


def test_up_then_cli_verbs_then_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "state"
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen([*KUBESWARM, "up", str(EXAMPLE), "--state-dir", str(state)], stdout=log, stderr=subprocess.STDOUT, env=_env())
    try:
        deadline = time.monotonic() + 90
        agents = ""
        while time.monotonic() < deadline:
            if (state / "swarm.json").exists():
                agents = _cli(state, "agents").stdout
                if agents.count("\n") == 4:  # header + 3 replicas
                    break
            time.sleep(0.2)
        assert "scout-1" in agents and "critic-0" in agents, agents
        task = _cli(state, "task", "review", '{"prompt": "check"}')
        assert task.returncode == 0, task.stderr
        assert json.loads(task.stdout)["result"]["echo"] == {"prompt": "check"}
        assert _cli(state, "discoveries").stdout == ""
        dead_letters = _cli(state, "dlq", "list")  # local mode: the verbs find the swarm through the state dir
        assert dead_letters.returncode == 0 and "waiting under ks.default.research: none" in dead_letters.stdout, dead_letters.stderr
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        table = (tmp_path / "up.log").read_text()
        assert "MCP ENDPOINT" in table and "http://127.0.0.1:" in table
        assert not (state / "swarm.json").exists()
    finally:
        if up.poll() is None:  # a failed assertion: still stop the agents and nats-server it started
            up.send_signal(signal.SIGINT)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()


GUARDED = """\
apiVersion: kubeswarm.io/v1alpha1
kind: Agent
metadata:
  name: guarded
spec:
  mcp:
    auth: {mode: jwt, requiredScopes: [swarm:use]}
"""


def _listening(port: int) -> set[str]:
    """The addresses a TCP port listens on, from the kernel's tables (state 0A is LISTEN)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def _status(url: str, token: str | None, host: str | None = None) -> int:
    body, headers = modern_call("tools/list")
    headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if host:
        headers["Host"] = host
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_local_mode_listens_on_loopback_and_its_jwt_agents_take_kubeswarm_tokens(tmp_path: Path) -> None:
    manifest = tmp_path / "guarded.yaml"
    manifest.write_text(GUARDED)
    state = tmp_path / "state"
    local = LocalSwarm(load_manifests([manifest]), state)
    try:
        local.start()
        local.wait_ready()
        (replica,) = local.replicas
        assert _listening(replica.mcp_port) == {"0100007F"}  # 127.0.0.1 only
        key_file = state / "jwt" / "guarded.key"
        assert key_file.stat().st_mode & 0o077 == 0
        with_scope = _cli(state, "token", "guarded", "--scope", "swarm:use")
        assert with_scope.returncode == 0, with_scope.stderr
        without = _cli(state, "token", "guarded").stdout.strip()
        url = replica.endpoint
        assert _status(url, with_scope.stdout.strip()) == 200
        assert _status(url, without) == 403
        assert _status(url, None) == 401
        # DNS rebinding: a name that is not the agent's is refused before anything else.
        assert _status(url, with_scope.stdout.strip(), host=f"rebound.example:{replica.mcp_port}") == 421
        assert _status(url, with_scope.stdout.strip(), host=f"localhost:{replica.mcp_port}") == 200
    finally:
        local.stop()
