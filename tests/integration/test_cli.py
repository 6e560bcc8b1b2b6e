"""The `kubeswarm` CLI run as a user runs it (subprocesses) against local mode's real nats-server and agents.

One instance per state dir, children that die with `kubeswarm up` however it ends, `down`, the task verbs,
`logs`, `mcp-config`, output formats, and a clear message with an exit code (never a traceback) on every
expected failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import yaml
from kubeswarm_runtime.local import free_port, port_is_free

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
EXAMPLE = REPO / "examples" / "swarm.yaml"
KUBESWARM = [sys.executable, "-m", "kubeswarm_runtime.cli"]
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
REPLICAS = ("scout-0", "scout-1", "critic-0")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KUBESWARM_")}


def kubeswarm(*args: str, state: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    tail = ["--state-dir", str(state)] if state is not None else []
    proc = subprocess.run([*KUBESWARM, *args, *tail], capture_output=True, text=True, timeout=timeout, env=_env())
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def children_of(pid: int) -> set[int]:
    """Every descendant of ``pid`` (nats-server and the agents of `kubeswarm up`)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            kids = {int(k) for k in Path(f"/proc/{current}/task/{current}/children").read_text().split()}
        except OSError:
            continue
        found |= kids
        todo += kids
    return found


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"  # a zombie has ended; only its parent's wait is missing


class Up:
    """`kubeswarm up examples/swarm.yaml` in the background, stopped (and its children checked) at the end."""

    def __init__(self, state: Path, *extra: str, stdout: int | IO[str] | None = None) -> None:
        self.state = state
        self.log = state.parent / f"up-{state.name}.log"
        out = stdout if stdout is not None else self.log.open("w")
        self.process = subprocess.Popen(
            [*KUBESWARM, "up", str(EXAMPLE), "--state-dir", str(state), *extra],
            stdout=out,
            stderr=subprocess.STDOUT if stdout is None else subprocess.DEVNULL,
            env=_env(),
        )
        self.children: set[int] = set()

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, f"kubeswarm up exited {self.process.returncode}"
            if not (self.state / "swarm.json").exists():
                return False
            listed = kubeswarm("agents", "-o", "json", state=self.state)
            return listed.returncode == 0 and len(json.loads(listed.stdout)) == len(REPLICAS)

        wait_until(ready, "the local swarm's 3 replicas")
        self.children = children_of(self.process.pid)
        assert len(self.children) == 1 + len(REPLICAS), self.children  # nats-server and the agents

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        wait_until(lambda: not any(alive(pid) for pid in self.children), "the children to end", timeout=60)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    base = next(p for p in iter(free_port, None) if all(port_is_free(p + i) for i in range(2 + 2 * len(REPLICAS))))
    running = Up(tmp_path / "state", "--port-base", str(base))
    running.port_base = base  # type: ignore[attr-defined]
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_a_second_up_refuses_and_leaves_the_first_alone_then_down_stops_it(up: Up) -> None:
    second = kubeswarm("up", str(EXAMPLE), state=up.state)
    assert second.returncode != 0
    assert f"already running, pid {up.process.pid}" in second.stderr
    assert (up.state / "swarm.json").exists()
    assert kubeswarm("agents", state=up.state).returncode == 0
    assert all(alive(pid) for pid in up.children)

    down = kubeswarm("down", state=up.state)
    assert down.returncode == 0, down.stderr
    assert f"pid {up.process.pid}" in down.stdout
    assert up.process.wait(10) == 0
    assert not (up.state / "swarm.json").exists()
    wait_until(lambda: not any(alive(pid) for pid in up.children), "the children to end", timeout=60)
    again = kubeswarm("down", state=up.state)
    assert again.returncode == 0 and "nothing to stop" in again.stdout
    gone = kubeswarm("agents", state=up.state)
    assert gone.returncode == 3 and "no local swarm running" in gone.stderr


@pytest.mark.parametrize("ending", ["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL", "closed stdout"])
def test_children_end_with_up_however_it_ends(tmp_path: Path, ending: str) -> None:
    piped = ending == "closed stdout"
    running = Up(tmp_path / "state", stdout=subprocess.PIPE if piped else None)
    try:
        running.wait_ready()
        if piped:
            assert running.process.stdout is not None
            running.process.stdout.close()  # `kubeswarm up ... | head` once head has exited
        else:
            running.process.send_signal(getattr(signal, ending))
        running.process.wait(60)
        wait_until(lambda: not any(alive(pid) for pid in running.children), f"the children to end after {ending}", timeout=60)
    finally:
        running.stop()
    if ending != "SIGKILL":
        assert running.process.returncode == 0
        assert not (running.state / "swarm.json").exists()


def test_task_verbs_output_formats_and_stable_ports(up: Up) -> None:
    base: int = up.port_base  # type: ignore[attr-defined]
    state = json.loads((up.state / "swarm.json").read_text())
    assert state["nats_url"] == f"nats://127.0.0.1:{base}"
    assert [a["endpoint"] for a in state["agents"]] == [f"http://127.0.0.1:{base + 2 + 2 * i}/mcp" for i in range(len(REPLICAS))]

    done = kubeswarm("task", "review", '{"prompt": "check"}', state=up.state)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"]["echo"] == {"prompt": "check"} and ISO.fullmatch(record["created_at"])

    queued = kubeswarm("task", "create", "summarize", "plain words", "--no-wait", state=up.state)
    task_id = queued.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", task_id), queued.stdout
    wait_until(lambda: json.loads(kubeswarm("task", "get", task_id, "-o", "json", state=up.state).stdout)["state"] == "succeeded", "task")
    got = yaml.safe_load(kubeswarm("task", "get", task_id, "-o", "yaml", state=up.state).stdout)
    assert got["input"] == "plain words" and ISO.fullmatch(got["finished_at"])
    listed = kubeswarm("task", "list", state=up.state)
    assert listed.stdout.splitlines()[0].split()[:3] == ["ID", "CAPABILITY", "STATE"] and task_id in listed.stdout
    assert ISO.search(listed.stdout)
    assert task_id in {t["id"] for t in json.loads(kubeswarm("task", "list", "--state", "succeeded", "-o", "json", state=up.state).stdout)}

    agents = kubeswarm("agents", "-o", "yaml", state=up.state)
    assert sorted(a["id"] for a in yaml.safe_load(agents.stdout)) == sorted(REPLICAS)
    table = kubeswarm("agents", state=up.state).stdout
    assert "LAST SEEN" in table and ISO.search(table)

    # As against a cluster's NATS: the URL, the swarm's creds, and the swarm named (not a raw prefix).
    creds = ["--nats-url", state["nats_url"], "--creds", state["creds"]["ks.default.research"]]
    on_cluster_nats = kubeswarm("agents", *creds, state=up.state)
    assert on_cluster_nats.returncode == 0 and on_cluster_nats.stdout == ""
    assert "No agents under subject prefix ks.default.default (swarm default in namespace default)" in on_cluster_nats.stderr
    named = kubeswarm("agents", *creds, "--swarm", "research", "-o", "json", state=up.state)
    assert len(json.loads(named.stdout)) == len(REPLICAS)
    outside = kubeswarm("task", "review", "x", *creds, state=up.state)  # the creds do not cover ks.default.default
    assert outside.returncode == 1 and "NATS refused or did not answer under subject prefix ks.default.default" in outside.stderr
    anonymous = kubeswarm("agents", "--nats-url", state["nats_url"], "--connect-timeout", "2", state=up.state)
    # The server's -ERR can be lost to the reset that follows it (TCP discards what was unread), so either reason is fine.
    assert anonymous.returncode == 3 and "pass --creds" in anonymous.stderr
    assert "Authorization Violation" in anonymous.stderr or "Connection reset" in anonymous.stderr
    assert kubeswarm("discoveries", "--swarm", "research", state=up.state).stderr.startswith("No discoveries under subject prefix ks.")


def test_a_task_nobody_serves_times_out_cancelled_and_cancel_works(up: Up) -> None:
    proc = kubeswarm("task", "nonexistent", '"x"', "--timeout", "5", state=up.state)
    assert proc.returncode == 4
    assert "no agent present serves capability 'nonexistent'" in proc.stderr
    match = re.search(r"task ([0-9a-f]{32}) \(nonexistent\) got no result within 5s; cancelled it", proc.stderr)
    assert match, proc.stderr
    record = json.loads(kubeswarm("task", "get", match.group(1), "-o", "json", state=up.state).stdout)
    assert record["state"] == "cancelled"

    pending = kubeswarm("task", "nonexistent", "--no-wait", state=up.state).stdout.strip()
    cancelled = kubeswarm("task", "cancel", pending, state=up.state)
    assert cancelled.returncode == 0 and f"task {pending} cancelled" in cancelled.stdout
    assert "already cancelled" in kubeswarm("task", "cancel", pending, state=up.state).stdout


def test_expected_failures_say_what_is_wrong_with_an_exit_code(up: Up, tmp_path: Path) -> None:
    cases: list[tuple[list[str], int, str]] = [
        (["task", "review", '{"prompt": }'], 2, "the task input is not valid JSON"),
        (["task", "get", "no-such-task"], 1, "no task 'no-such-task' under subject prefix ks.default.research (local swarm research)"),
        (["task", "cancel", "no-such-task"], 1, "no task 'no-such-task'"),
        (["agents", "--swarm", "nope"], 1, "the local swarm runs no swarm 'nope'; it runs research"),
        (["agents", "--namespace", "team"], 2, "pass --nats-url too"),
        (["logs", "nobody"], 1, "no replica 'nobody' in"),
        (["mcp-config", "nobody"], 1, "no agent 'nobody' present"),
        (["agents", "--nats-url", f"nats://127.0.0.1:{free_port()}", "--connect-timeout", "1"], 3, "is not reachable"),
    ]
    for args, code, message in cases:
        proc = kubeswarm(*args, state=up.state)
        assert (proc.returncode, message in proc.stderr) == (code, True), f"{args}: {proc.returncode} {proc.stderr}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: kubeswarm.io/v1alpha1\nkind: Agnet\nmetadata: {name: x}\n")
    refused = kubeswarm("up", str(bad), state=tmp_path / "other")
    assert refused.returncode == 2 and 'kind "Agnet" is not a kubeswarm kind' in refused.stderr
    assert kubeswarm("agents", state=tmp_path / "never-started").returncode == 3
    assert kubeswarm("--version").stdout.startswith("kubeswarm ")
    # A reader that stops early (`kubeswarm agents | head -0`) is no error: closed before the verb writes.
    piped = subprocess.Popen(
        [*KUBESWARM, "agents", "--state-dir", str(up.state)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
    )
    assert piped.stdout is not None and piped.stderr is not None
    piped.stdout.close()
    assert (piped.wait(60), piped.stderr.read()) == (0, b"")


def test_logs_and_mcp_config(up: Up) -> None:
    logs = kubeswarm("logs", "scout-1", state=up.state)
    assert logs.returncode == 0 and "connected to NATS" in logs.stdout
    assert len(kubeswarm("logs", "critic", "--tail", "2", state=up.state).stdout.splitlines()) == 2

    endpoint = json.loads((up.state / "swarm.json").read_text())["agents"][0]["endpoint"]  # scout-0's
    vscode = json.loads(kubeswarm("mcp-config", "scout", "--client", "vscode", state=up.state).stdout)
    assert vscode == {"servers": {"scout": {"type": "http", "url": endpoint}}}
    cursor = json.loads(kubeswarm("mcp-config", "scout", "--client", "cursor", "--token", "t0k", state=up.state).stdout)
    assert cursor == {"mcpServers": {"scout": {"url": endpoint, "headers": {"Authorization": "Bearer t0k"}}}}
    every = kubeswarm("mcp-config", "scout", state=up.state).stdout
    assert all(label in every for label in ("# Claude Code", "# Claude Desktop", "# Cursor", "# VS Code"))

    # A discovery shared through scout-0's plain JSON-RPC door, then listed and followed in each format.
    call = {"name": "share_discovery", "arguments": {"discovery_type": "finding", "content": {"a": 1}}}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}).encode()
    request = urllib.request.Request(endpoint.removesuffix("/mcp") + "/rpc", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert "error" not in json.loads(answer.read())
    listed = kubeswarm("discoveries", state=up.state).stdout.splitlines()
    assert listed[0].split() == ["SEQ", "TIME", "AGENT", "TYPE", "CONTENT"] and ISO.search(listed[1]) and '{"a":1}' in listed[1]
    (shared,) = yaml.safe_load(kubeswarm("discoveries", "-o", "yaml", state=up.state).stdout)
    assert (shared["agent"], shared["content"], bool(ISO.fullmatch(shared["at"]))) == ("scout", {"a": 1}, True)
    tail = subprocess.Popen(
        [*KUBESWARM, "discoveries", "-f", "-o", "json", "--state-dir", str(up.state)], stdout=subprocess.PIPE, env=_env()
    )
    try:
        assert tail.stdout is not None
        assert json.loads(tail.stdout.readline())["seq"] == shared["seq"]
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(30) == 130

    follow = subprocess.Popen([*KUBESWARM, "logs", "critic-0", "-f", "--state-dir", str(up.state)], stdout=subprocess.PIPE, env=_env())
    try:
        assert kubeswarm("down", state=up.state).returncode == 0
        assert follow.wait(30) == 0  # -f ends with the swarm
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
