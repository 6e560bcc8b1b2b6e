"""The ``kubeswarm`` command: local mode (up, demo) and verbs that talk to a running swarm."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import SwarmClient
from .config import NatsConfig
from .local import LocalSwarm, read_state
from .manifests import ManifestError, load_manifests
from .names import Priority
from .resources import default_subject_prefix
from .tasks import DeadLetterNotFound, NotReplayable
from .tokens import key_from_cluster, local_key_file, mint

DEFAULT_STATE_DIR = Path(os.environ.get("KUBESWARM_STATE_DIR", Path.home() / ".local" / "state" / "kubeswarm"))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except (ManifestError, RuntimeError, DeadLetterNotFound, NotReplayable) as exc:
        print(f"kubeswarm: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeswarm", description="Run and talk to kubeswarm agent swarms.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def connected(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--nats-url", help="NATS URL of the swarm (default: the local swarm started by `up`)")
        p.add_argument("--prefix", help="subject prefix (default: the local swarm's, or ks.default.default)")
        p.add_argument("--creds", type=Path, help="NATS .creds file of the swarm (default: the local swarm's)")
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
        return p

    up = sub.add_parser("up", help="run Agent/Swarm manifests locally on an embedded NATS")
    up.add_argument("paths", nargs="+", type=Path, help="manifest files or directories")
    up.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    up.add_argument(
        "--listen", default="127.0.0.1", help="address the agents' MCP and metrics ports listen on (default: this machine only)"
    )
    up.set_defaults(func=_up)

    demo = sub.add_parser("demo", help="run an example swarm end to end and report")
    demo.add_argument("paths", nargs="+", type=Path)
    demo.add_argument("--state-dir", type=Path, default=None, help="default: a fresh temporary directory")
    demo.set_defaults(func=_demo)

    run = sub.add_parser("run", help="run one agent from the KUBESWARM_* environment (what a pod runs)")
    run.set_defaults(func=_run)

    task = connected(sub.add_parser("task", help="send a task and wait for its result"))
    task.add_argument("capability")
    task.add_argument("input", nargs="?", default="null", help="task input as JSON (a bare string is taken as text)")
    task.add_argument("--priority", choices=[p.value for p in Priority], default=Priority.NORMAL.value)
    task.add_argument("--timeout", type=float, default=120.0)
    task.add_argument("--no-wait", action="store_true")
    task.set_defaults(func=lambda a: _client_call(a, _task))

    disc = connected(sub.add_parser("discoveries", help="list discoveries; --follow to tail new ones"))
    disc.add_argument("--follow", "-f", action="store_true")
    disc.add_argument("--type")
    disc.add_argument("--agent")
    disc.set_defaults(func=lambda a: _client_call(a, _discoveries))

    agents = connected(sub.add_parser("agents", help="list the agents present in the swarm"))
    agents.set_defaults(func=lambda a: _client_call(a, _agents))

    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay or purge the tasks that died")
    dlq_verbs = dlq.add_subparsers(required=True, metavar="VERB")
    dlq_list = connected(dlq_verbs.add_parser("list", help="the dead letters waiting, oldest first, and the count per capability"))
    dlq_list.add_argument("--capability")
    dlq_list.add_argument("--since-seq", type=int, default=0, help="start after this sequence number")
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_list.add_argument("--json", action="store_true", help="one JSON letter per line")
    dlq_list.set_defaults(func=lambda a: _client_call(a, _dlq_list))
    for verb, what in (("show", "print one dead letter"), ("replay", "queue a dead task again (a new task linked to the dead one)")):
        command = connected(dlq_verbs.add_parser(verb, help=what))
        command.add_argument("task_id", nargs="?", help="the dead task's id")
        command.add_argument("--seq", type=int, help="the letter's sequence number (any letter, malformed ones too)")
        command.set_defaults(func=lambda a, verb=verb: _client_call(a, _dlq_show if verb == "show" else _dlq_replay))
    purge = connected(dlq_verbs.add_parser("purge", help="remove dead letters for good: one, a capability's, or --all"))
    purge.add_argument("task_id", nargs="?", help="the dead task's id")
    purge.add_argument("--seq", type=int)
    purge.add_argument("--capability")
    purge.add_argument("--all", action="store_true", help="every dead letter of the swarm")
    purge.set_defaults(func=lambda a: _client_call(a, _dlq_purge))
    token = sub.add_parser("token", help="mint a bearer token for an agent's MCP endpoint (spec.mcp.auth {mode: jwt})")
    token.add_argument("agent", help="the Agent whose endpoint the token is for")
    token.add_argument("-n", "--namespace", help="its namespace (default: kubectl's); read from its Secret <agent>-credentials")
    token.add_argument("--scope", action="append", default=[], help="a scope the token carries (repeat for several)")
    token.add_argument("--subject", default="kubeswarm-cli", help="the token's sub claim (who calls)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.add_argument("--audience", help="the aud claim, if the agent checks one")
    token.add_argument("--key-file", type=Path, help="the signing key as a file (default: local mode's, else the cluster's)")
    token.add_argument("--kubectl", default="kubectl", help="kubectl binary used to read the Secret")
    token.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    token.set_defaults(func=_token)
    return parser


def _run(_args: argparse.Namespace) -> int:
    from .__main__ import main as run_main

    return run_main()


def _client_call(args: argparse.Namespace, action: Any) -> int:
    async def call() -> int:
        nats = _target(args)
        client = await SwarmClient.connect(nats.config, nats.prefix, sender=f"cli-{uuid.uuid4().hex[:8]}")
        try:
            result: int = await action(client, args)
            return result
        finally:
            await client.close()

    return asyncio.run(call())


@dataclass(frozen=True)
class _Target:
    config: NatsConfig
    prefix: str


def _target(args: argparse.Namespace) -> _Target:
    if args.nats_url:
        return _Target(NatsConfig(url=args.nats_url, creds_file=args.creds), args.prefix or default_subject_prefix("default", "default"))
    state = read_state(args.state_dir)
    prefixes: list[str] = sorted(set(state["swarms"].values()))
    if args.prefix is None and len(prefixes) > 1:
        raise RuntimeError(f"the local swarm has several prefixes ({', '.join(prefixes)}): pass --prefix")
    prefix = args.prefix or prefixes[0]
    creds = args.creds or state.get("creds", {}).get(prefix)
    if creds is None:
        raise RuntimeError(f"the local swarm has no prefix {prefix!r} (it has {', '.join(prefixes)})")
    return _Target(NatsConfig(url=state["nats_url"], creds_file=creds), prefix)


def _token(args: argparse.Namespace) -> int:
    local = local_key_file(args.state_dir, args.agent)
    if args.key_file is not None:
        key = args.key_file.read_text().strip()
    elif args.namespace is None and local.exists():
        key = local.read_text().strip()
    else:
        key = key_from_cluster(args.agent, args.namespace, args.kubectl)
    if args.ttl <= 0:
        raise RuntimeError("--ttl must be positive")
    print(mint(key, subject=args.subject, scopes=args.scope, ttl_seconds=args.ttl, audience=args.audience))
    return 0


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


async def _task(client: SwarmClient, args: argparse.Namespace) -> int:
    record = await client.tasks.create(args.capability, _json_arg(args.input), priority=Priority(args.priority))
    if not args.no_wait:
        record = await client.tasks.wait(record.id, args.timeout)
    print(record.model_dump_json(indent=2))
    return 0 if args.no_wait or record.state == "succeeded" else 1


async def _discoveries(client: SwarmClient, args: argparse.Namespace) -> int:
    if args.follow:  # history first, then new ones until interrupted
        async for discovery in client.discoveries.follow(agent=args.agent, type=args.type):
            print(discovery.model_dump_json(), flush=True)
    for discovery in await client.discoveries.list(agent=args.agent, type=args.type, limit=10_000):
        print(discovery.model_dump_json())
    return 0


async def _agents(client: SwarmClient, _args: argparse.Namespace) -> int:
    rows = [("ID", "AGENT", "ROLE", "CAPABILITIES", "LOAD", "ENDPOINT")] + [
        (a.id, a.agent, a.role, ",".join(a.capabilities), f"{a.load}/{a.concurrency}", a.endpoint or "-")
        for a in await client.agents.list()
    ]
    _print_table(rows)
    return 0


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _letter_ref(args: argparse.Namespace) -> dict[str, Any]:
    if (args.task_id is None) == (args.seq is None):
        raise RuntimeError("name the dead letter by its task id or by --seq (not both)")
    return {"task_id": args.task_id, "seq": args.seq}


async def _dlq_list(client: SwarmClient, args: argparse.Namespace) -> int:
    letters = await client.dead_letters.list(capability=args.capability, since_seq=args.since_seq, limit=args.limit)
    if args.json:
        for letter in letters:
            print(letter.model_dump_json())
        return 0
    rows = [("SEQ", "CAPABILITY", "TASK", "ATTEMPTS", "DIED", "REASON")] + [
        (
            str(letter.seq),
            letter.capability,
            letter.task_id or "(malformed)",
            str(letter.attempts or "-"),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.dead_at)) if letter.dead_at else "-",
            letter.reason[:80],
        )
        for letter in letters
    ]
    _print_table(rows)
    waiting = await client.dead_letters.counts()
    print("\nwaiting: " + (", ".join(f"{c} {n}" for c, n in sorted(waiting.items())) or "none"))
    return 0


async def _dlq_show(client: SwarmClient, args: argparse.Namespace) -> int:
    print((await client.dead_letters.get(**_letter_ref(args))).model_dump_json(indent=2))
    return 0


async def _dlq_replay(client: SwarmClient, args: argparse.Namespace) -> int:
    print((await client.dead_letters.replay(**_letter_ref(args))).model_dump_json(indent=2))
    return 0


async def _dlq_purge(client: SwarmClient, args: argparse.Namespace) -> int:
    given = [args.task_id is not None, args.seq is not None, args.capability is not None, args.all]
    if sum(given) != 1:
        raise RuntimeError("purge what: a task id, --seq, --capability or --all (exactly one)")
    purged = await client.dead_letters.purge(task_id=args.task_id, seq=args.seq, capability=args.capability)
    print(f"purged {purged} dead letter{'s' if purged != 1 else ''}")
    return 0


def _up(args: argparse.Namespace) -> int:
    local = LocalSwarm(load_manifests(args.paths), args.state_dir, listen=args.listen)
    stop = False

    def on_signal(_signum: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        local.start()
        shown = ""
        while not stop:
            table = local.table()
            if table != shown:
                # A live table on a terminal; a log of changes otherwise.
                print(("\x1b[H\x1b[J" if sys.stdout.isatty() else "") + table + "\n\nCtrl-C stops the swarm.", flush=True)
                shown = table
            time.sleep(1)
    finally:
        print("stopping agents (in-flight tasks finish first)...", flush=True)
        local.stop()
    return 0


def _demo(args: argparse.Namespace) -> int:
    import tempfile

    manifests = load_manifests(args.paths)
    with tempfile.TemporaryDirectory(prefix="kubeswarm-demo-") as tmp:
        local = LocalSwarm(manifests, args.state_dir or Path(tmp))
        try:
            local.start()
            local.wait_ready()
            print(local.table(), flush=True)
            ok = asyncio.run(_demo_script(local))
        finally:
            local.stop()
    print("demo " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


async def _demo_script(local: LocalSwarm) -> bool:
    """Tasks to every capability, one capability request, and a discovery shared by one agent and seen by another."""
    checks: list[tuple[str, bool]] = []
    for prefix in sorted({r.prefix for r in local.replicas}):
        replicas = [r for r in local.replicas if r.prefix == prefix]
        client = await SwarmClient.connect(NatsConfig(url=local.nats_url, creds_file=local.creds_for_prefix(prefix)), prefix, sender="demo")
        try:
            agents = {a.metadata.name: a for a in local.manifests.agents if a.metadata.name in {r.agent for r in replicas}}
            capabilities = sorted({c for a in agents.values() for c in a.spec.capabilities})
            started = time.monotonic()
            created = [await client.tasks.create(c, {"prompt": f"demo task {i} for {c}"}) for c in capabilities for i in range(3)]
            records = await asyncio.gather(*(client.tasks.wait(t.id, 60) for t in created))
            done = sum(r.state == "succeeded" for r in records)
            served_by = sorted({r.agent or "?" for r in records})
            took = time.monotonic() - started
            summary = f"{prefix}: {done}/{len(records)} tasks answered in {took:.2f}s by {', '.join(served_by)}"
            checks.append((summary, done == len(records)))
            if capabilities:
                answer = await client.capabilities.request(capabilities[0], {"prompt": "ping"}, timeout_seconds=10)
                checks.append((f"{prefix}: capability request {capabilities[0]!r} answered by {answer.get('agent', '?')}", True))
            names = sorted(agents)
            scout, peer = names[0], names[-1]
            shared = (await client.messages.query(scout, {"action": "share_discovery", "type": "finding", "content": "demo"})).body
            seen = (await client.messages.query(peer, {"action": "list_discoveries", "type": "finding"})).body
            found = any(d.get("seq") == shared.get("seq") for d in seen or [])
            checks.append((f"{prefix}: discovery #{shared.get('seq')} shared by {scout}, seen by {peer}", found))
        finally:
            await client.close()
    for line, passed in checks:
        print(f"  [{'ok' if passed else 'FAIL'}] {line}")
    return all(passed for _, passed in checks)


if __name__ == "__main__":
    sys.exit(main())
