"""The tools demo (``make demo``): examples/tools/swarm.yaml in local mode, with the scripted stand-in model and the
example MCP server, offline. A planner asks a researcher by capability, calls the MCP server's forecast, shares a
discovery and delegates the writing by task; the report prints the chain from the planner task's steps.

    python -m examples.tools.demo [--city Brest]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.config import NatsConfig
from kubeswarm_runtime.local import LocalSwarm, free_port
from kubeswarm_runtime.manifests import load_manifests

HERE = Path(__file__).parent
# The ports written in swarm.yaml; the demo runs its servers on free ports and points the agents there.
MODEL_URL, MCP_URL = "http://127.0.0.1:18400", "http://127.0.0.1:18500"


def _accepting(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)  # noqa: S310 - loopback URLs we built
    except urllib.error.HTTPError:
        return True  # it answers, if not to GET /
    except OSError:
        return False
    return True


@contextlib.contextmanager
def server(module: str, port: int, log: Path, *args: str) -> Iterator[None]:
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _accepting(f"http://127.0.0.1:{port}/"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{module} did not start; its log: {log}")
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(10)


def clip(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


async def run_planner(local: LocalSwarm, city: str) -> bool:
    prefix = local.replicas[0].prefix
    client = await SwarmClient.connect(NatsConfig(url=local.nats_url, creds_file=local.creds_for_prefix(prefix)), prefix, sender="demo")
    try:
        task = await client.tasks.create("plan", city)
        done = await client.tasks.wait(task.id, 120)
        written = (await client.tasks.list(capability="write")).tasks
        briefs = await client.discoveries.list(type="brief")
    finally:
        await client.close()
    print(f"\ntask {done.id} (plan {city!r}): {done.state}")
    for step in done.steps or []:
        if step["kind"] == "model":
            asked = ", ".join(step["tool_calls"]) or "final answer"
            print(f"  turn {step['turn']}: model -> {asked}")
        else:
            print(f"  turn {step['turn']}:   {step['tool']}({clip(step['input'])}) {step['outcome']}: {clip(step['output'])}")
    for sub in written:
        print(f"  sub-task {sub.id} (write, depth {sub.depth}): {sub.state} by {sub.agent}")
    for brief in briefs:
        print(f"  discovery #{brief.seq} by {brief.agent}: {clip(json.dumps(brief.content))}")
    print(f"  answer: {clip(str((done.result or {}).get('text', done.error)), 300)}")
    tools = {s.get("tool") for s in done.steps or [] if s.get("outcome") == "ok"}
    checks = {
        "the task succeeded": done.state == "succeeded",
        "the researcher answered by capability": "agent__researcher" in tools,
        "the MCP server's forecast was used": "weather__forecast" in tools,
        "one discovery shared": len(briefs) == 1,
        "the writer got one task": len(written) == 1 and written[0].state == "succeeded",
    }
    for check, passed in checks.items():
        print(f"  [{'ok' if passed else 'FAIL'}] {check}")
    return all(checks.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--city", default="Brest")
    args = parser.parse_args()
    model_port, mcp_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="kubeswarm-tools-demo-") as tmp:
        state = Path(tmp)
        manifest = (HERE / "swarm.yaml").read_text()
        manifest = manifest.replace(MODEL_URL, f"http://127.0.0.1:{model_port}").replace(MCP_URL, f"http://127.0.0.1:{mcp_port}")
        (state / "swarm.yaml").write_text(manifest)
        script = ["--script", str(HERE / "script.yaml")]
        with (
            server("examples.tools.scripted_model", model_port, state / "model.log", *script),
            server("examples.tools.weather_mcp", mcp_port, state / "mcp.log"),
        ):
            local = LocalSwarm(load_manifests([state / "swarm.yaml"]), state / "swarm")
            try:
                local.start()
                local.wait_ready()
                print(local.table(), flush=True)
                ok = asyncio.run(run_planner(local, args.city))
            finally:
                local.stop()
    print("tools demo " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
