"""The tool loop's cost: its overhead per tool call against calling the same tool directly, and tasks/s of a 3-step loop.

    .venv/bin/python -m bench.bench_tool_loop [--calls 300] [--turns 20] [--tasks 200] [--rounds 3]

One real nats-server; in this process the scripted stand-in model (examples/tools/scripted_model.py, OpenAI shape over
HTTP on loopback) and two agents: ``looper`` (provider openai → the stand-in, the swarm's tools) and ``echo`` (the echo
provider, the baseline). Per round:

- direct: ``get_task`` of the swarm's tools called as the loop calls it (``ToolSpec.call``), ``--calls`` times;
- model: one model round trip to the stand-in (``reply`` with the same tools offered), ``--calls`` times;
- loop: a task whose model asks for one ``get_task`` per turn for ``--turns`` turns, run by the loop, alternating with
  the same conversation "by hand" (ask the model, call the tool directly, append, repeat); the loop's own overhead
  per tool call (steps, metrics, limits, concurrency, timeouts) is the median of (loop - by hand) / turns over the pairs;
- tasks/s: ``--tasks`` tasks through the queue to the looper, each a 3-step loop (list_agents, get_task, answer),
  against as many echo tasks (no model, no tools) in the same run.

Prints each round and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubeswarm_runtime.app import settle_heap
from kubeswarm_runtime.client import SwarmClient
from kubeswarm_runtime.delegation import OUTSIDE
from kubeswarm_runtime.mcp.tools import SWARM_TOOLS
from kubeswarm_runtime.providers.base import ChatMessage, TaskContext, ToolResult
from kubeswarm_runtime.runtime import AgentRuntime

from examples.tools.scripted_model import Script
from tests.integration.runtime_helpers import agent_config, running, swarm_client, unique_prefix
from tests.integration.tool_helpers import model_config, scripted_model
from tests.testbed.nats import NatsServer

GET_TASK = next(spec for spec in SWARM_TOOLS if spec.name == "get_task")


def script(task_id: str, turns: int) -> Script:
    get_task = {"name": "get_task", "arguments": {"task_id": task_id}}
    return {
        "looper": [{"tool_calls": [get_task]}] * turns + [{"text": "done"}],
        "three": [{"tool_calls": [{"name": "list_agents", "arguments": {}}]}, {"tool_calls": [get_task]}, {"text": "done"}],
    }


async def timed(n: int, call: object) -> float:
    """Mean seconds of ``n`` awaits of ``call()``."""
    started = time.perf_counter()
    for _ in range(n):
        await call()  # type: ignore[operator]
    return (time.perf_counter() - started) / n


async def throughput(client: SwarmClient, capability: str, task_input: object, tasks: int) -> float:
    started = time.perf_counter()
    created = [await client.tasks.create(capability, task_input) for _ in range(tasks)]
    done = await asyncio.gather(*(client.tasks.wait(t.id, 120) for t in created))
    assert all(r.state == "succeeded" for r in done), [r.error for r in done if r.state != "succeeded"][:3]
    return tasks / (time.perf_counter() - started)


async def one_round(looper: AgentRuntime, client: SwarmClient, task_id: str, args: argparse.Namespace) -> dict[str, float]:
    handler = looper.handler
    tools = await handler.toolbox.tools()  # type: ignore[attr-defined]
    definitions = [tool.definition for tool in tools.values()]
    model = handler.model  # type: ignore[attr-defined]
    direct = await timed(args.calls, lambda: GET_TASK.call(looper, {"task_id": task_id}, OUTSIDE))
    model_trip = await timed(args.calls, lambda: model.reply(None, [ChatMessage("user", "go")], definitions))

    async def by_hand() -> None:
        """The same conversation without the loop: ask the model, call the tool directly, append, until it answers."""
        messages = [ChatMessage("user", "go")]
        while (reply := await model.reply(None, messages, definitions)).tool_calls:
            results = [
                ToolResult(c.id, c.name, json.dumps(await GET_TASK.call(looper, c.arguments, OUTSIDE), separators=(",", ":")))
                for c in reply.tool_calls
            ]
            messages += [ChatMessage("assistant", reply.text, tool_calls=reply.tool_calls), ChatMessage("tool", results=tuple(results))]

    async def loop() -> None:
        result = await handler.handle(TaskContext("bench", "loop", "go", 1, "looper"))
        assert result["tool_calls"] == args.turns, result

    # Alternating pairs, so a shared machine's drifts hit both alike; the overhead is the median of the pairs' differences.
    overheads, hands, loops = [], [], []
    for _ in range(max(args.calls // args.turns, 1)):
        hand, looped = await timed(1, by_hand), await timed(1, loop)
        hands.append(hand / (args.turns + 1))
        loops.append(looped / (args.turns + 1))
        overheads.append((looped - hand) / args.turns)
    three = await throughput(client, "three", "go", args.tasks)
    echo = await throughput(client, "echo", "go", args.tasks)
    return {
        "direct": direct,
        "model": model_trip,
        "hand": statistics.median(hands),
        "turn": statistics.median(loops),
        "overhead": statistics.median(overheads),
        "three": three,
        "echo": echo,
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-tool-loop-") as tmp:
        nats_server = NatsServer(Path(tmp)).start()
        try:
            prefix = unique_prefix()
            async with swarm_client(nats_server.url, prefix) as client:
                target = await client.tasks.create("nobody", "a task get_task reads")
                async with scripted_model(script(target.id, args.turns)) as (url, _requests):
                    fast = {"concurrency": 32, "heartbeat_seconds": 5}
                    limits = {"max_turns": args.turns + 1, "max_tool_calls": args.turns, "max_tokens_per_task": 100_000_000}
                    looper_config = agent_config(
                        nats_server.url, prefix, "looper", ["loop"], model=model_config("openai", url, "looper"), tools=limits, **fast
                    )
                    three_config = agent_config(
                        nats_server.url, prefix, "three", ["three"], model=model_config("openai", url, "three"), **fast
                    )
                    echo_config = agent_config(nats_server.url, prefix, "echo", ["echo"], **fast)
                    async with running(looper_config) as looper, running(three_config), running(echo_config):
                        settle_heap()
                        await one_round(
                            looper, client, target.id, argparse.Namespace(**{**vars(args), "calls": 20, "tasks": 20})
                        )  # warm-up
                        rounds = []
                        for n in range(args.rounds):
                            r = await one_round(looper, client, target.id, args)
                            rounds.append(r)
                            overhead = r["overhead"]
                            print(
                                f"round {n + 1}: direct get_task {r['direct'] * 1e6:.0f} us, model round trip {r['model'] * 1e3:.2f} ms, "
                                f"turn by hand {r['hand'] * 1e3:.2f} ms, loop turn {r['turn'] * 1e3:.2f} ms "
                                f"(overhead {overhead * 1e6:.0f} us/call); "
                                f"3-step loop {r['three']:.0f} tasks/s, echo {r['echo']:.0f} tasks/s",
                                flush=True,
                            )
        finally:
            nats_server.stop()

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    overhead = median("overhead")
    print(
        f"\nmedians over {args.rounds} rounds:\n"
        f"  direct tool call (get_task)      {median('direct') * 1e6:8.0f} us\n"
        f"  model round trip (stand-in)      {median('model') * 1e6:8.0f} us\n"
        f"  turn by hand (model, then call)  {median('hand') * 1e6:8.0f} us\n"
        f"  loop turn (model + call + loop)  {median('turn') * 1e6:8.0f} us\n"
        f"  loop overhead per tool call      {overhead * 1e6:8.0f} us  ({overhead / median('direct'):.2f}x the direct call)\n"
        f"  loop turn / turn by hand         {statistics.median(r['turn'] / r['hand'] for r in rounds):8.2f}\n"
        f"  3-step loop tasks/s              {median('three'):8.0f}  (echo tasks/s {median('echo'):.0f}; "
        f"ratio {statistics.median(r['three'] / r['echo'] for r in rounds):.2f})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
