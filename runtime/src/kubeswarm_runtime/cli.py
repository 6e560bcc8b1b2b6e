"""The ``kubeswarm`` command: local mode (up, down, demo, logs) and verbs that talk to a running swarm.

Expected failures end with one ``kubeswarm: ...`` line on stderr and an exit code (docs/cli.md):
1 the thing asked for failed or does not exist, 2 bad usage or input, 3 nothing to talk to
(no local swarm, NATS unreachable), 4 a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import stat
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from . import __version__
from .client import SwarmClient
from .config import NatsConfig
from .connection import NatsUnreachable
from .local import AlreadyRunning, LocalSwarm, NotRunning, read_state, running_pid
from .manifests import ManifestError, load_manifests
from .names import Priority
from .output import MCP_CLIENTS, Format, dump, iso, mcp_client_config, shorten, table, with_iso_times
from .resources import DEFAULT_SWARM, default_subject_prefix
from .tasks import DeadLetterNotFound, NotReplayable, TaskRecord, TaskState
from .tokens import key_from_cluster, local_key_file, mint

DEFAULT_STATE_DIR = Path(os.environ.get("KUBESWARM_STATE_DIR", Path.home() / ".local" / "state" / "kubeswarm"))
TASK_VERBS = ("create", "get", "list", "cancel")


class CliError(Exception):
    """An expected failure: its message is printed as is, with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_with_task_verb(sys.argv[1:] if argv is None else argv))
    try:
        result: int = args.func(args)
        return result
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except ManifestError as exc:
        return _fail(str(exc), 2)
    except (NotRunning, NatsUnreachable) as exc:
        return _fail(str(exc), 3)
    except BrokenPipeError:  # `kubeswarm task list | head`: the reader has what it wanted
        _silence_stdout()
        return 0
    except (AlreadyRunning, RuntimeError, OSError, DeadLetterNotFound, NotReplayable) as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130


def _fail(message: str, code: int) -> int:
    with contextlib.suppress(OSError):
        print(f"kubeswarm: {message}", file=sys.stderr)
    return code


def _with_task_verb(argv: list[str]) -> list[str]:
    """``kubeswarm task <capability> ...`` is short for ``kubeswarm task create <capability> ...``."""
    if len(argv) >= 2 and argv[0] == "task" and argv[1] not in TASK_VERBS and not argv[1].startswith("-"):
        return ["task", "create", *argv[1:]]
    return argv


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeswarm", description="Run and talk to kubeswarm agent swarms (docs/cli.md).")
    parser.add_argument("--version", action="version", version=f"kubeswarm {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def state_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help=f"local swarm's directory (default {DEFAULT_STATE_DIR})")
        return p

    def connected(p: argparse.ArgumentParser, *, listing: bool = True) -> argparse.ArgumentParser:
        p.add_argument("--nats-url", help="NATS URL of a cluster's swarm (default: the local swarm started by `up`)")
        p.add_argument("--swarm", help=f"the Swarm to talk to (default: the local one, or {DEFAULT_SWARM})")
        p.add_argument("--namespace", "-n", help="its namespace, with --nats-url (default: default)")
        p.add_argument("--prefix", help="raw subject prefix, overriding --swarm/--namespace (a Swarm's spec.subjectPrefix)")
        p.add_argument("--creds", type=Path, help="NATS .creds file of the swarm (default: the local swarm's)")
        p.add_argument("--connect-timeout", type=float, default=5.0, metavar="SECONDS", help="give up reaching NATS after this long")
        if listing:
            p.add_argument("-o", "--output", type=Format, choices=list(Format), default=Format.TABLE)
        return state_dir(p)

    up = state_dir(sub.add_parser("up", help="run Agent/Swarm manifests locally on an embedded NATS"))
    up.add_argument("paths", nargs="+", type=Path, help="manifest files or directories")
    up.add_argument(
        "--listen", default="127.0.0.1", help="address the agents' MCP and metrics ports listen on (default: this machine only)"
    )
    up.add_argument(
        "--port-base", type=int, metavar="PORT", help="stable ports: NATS on PORT, its monitor on PORT+1, then MCP and metrics per replica"
    )
    up.set_defaults(func=_up)

    down = state_dir(sub.add_parser("down", help="stop the local swarm that `up` runs"))
    down.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to stop")
    down.set_defaults(func=_down)

    demo = sub.add_parser("demo", help="run an example swarm end to end and report")
    demo.add_argument("paths", nargs="+", type=Path)
    demo.add_argument("--state-dir", type=Path, default=None, help="default: a fresh temporary directory")
    demo.set_defaults(func=_demo)

    run = sub.add_parser("run", help="run one agent from the KUBESWARM_* environment (what a pod runs)")
    run.set_defaults(func=_run)

    logs = state_dir(sub.add_parser("logs", help="print a local replica's log (`kubeswarm agents` lists replicas)"))
    logs.add_argument("replica", help="replica id, e.g. scout-0 (or an agent name: its first replica)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the swarm stops or Ctrl-C")
    logs.add_argument("--tail", type=int, default=-1, metavar="LINES", help="only the last LINES lines")
    logs.set_defaults(func=_logs)

    task = sub.add_parser("task", help="tasks: create (`task <capability> <input>` for short), get, list, cancel")
    task_verbs = task.add_subparsers(required=True, metavar="VERB")
    create = connected(task_verbs.add_parser("create", help="send a task and wait for its result"))
    create.add_argument("capability")
    create.add_argument("input", nargs="?", default="null", help="task input as JSON; text that is not JSON-shaped is sent as a string")
    create.add_argument("--priority", choices=[p.value for p in Priority], default=Priority.NORMAL.value)
    create.add_argument("--timeout", type=float, default=120.0, help="seconds to wait; then the task is cancelled (exit 4)")
    create.add_argument("--no-wait", action="store_true", help="print the task's id and return (read it with `task get`)")
    create.set_defaults(func=_client(_task_create), output=None)  # default: the record as JSON, or the bare id with --no-wait
    get = connected(task_verbs.add_parser("get", help="a task's state and result"))
    get.add_argument("id")
    get.set_defaults(func=_client(_task_get))
    listing = connected(task_verbs.add_parser("list", help="the latest tasks"))
    listing.add_argument("--state", choices=[s.value for s in TaskState])
    listing.add_argument("--capability")
    listing.add_argument("--limit", type=int, default=100, help="task changes read per page")
    listing.add_argument("--cursor", type=int, default=0, help="the next page, as a listing before said (older tasks)")
    listing.set_defaults(func=_client(_task_list))
    cancel = connected(task_verbs.add_parser("cancel", help="cancel a pending or running task"), listing=False)
    cancel.add_argument("id")
    cancel.set_defaults(func=_client(_task_cancel))

    disc = connected(sub.add_parser("discoveries", help="list discoveries; --follow to tail new ones"))
    disc.add_argument("--follow", "-f", action="store_true")
    disc.add_argument("--type")
    disc.add_argument("--agent")
    disc.set_defaults(func=_client(_discoveries))

    agents = connected(sub.add_parser("agents", help="list the agents present in the swarm"))
    agents.set_defaults(func=_client(_agents))

    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay or purge the tasks that died")
    dlq_verbs = dlq.add_subparsers(required=True, metavar="VERB")
    dlq_list = connected(dlq_verbs.add_parser("list", help="the dead letters waiting, oldest first, and the count per capability"))
    dlq_list.add_argument("--capability")
    dlq_list.add_argument("--since-seq", type=int, default=0, help="start after this sequence number")
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_list.set_defaults(func=_client(_dlq_list))
    for verb, what, action in (
        ("show", "print one dead letter", _dlq_show),
        ("replay", "queue a dead task again (a new task linked to the dead one)", _dlq_replay),
    ):
        command = connected(dlq_verbs.add_parser(verb, help=what), listing=False)
        command.add_argument("task_id", nargs="?", help="the dead task's id")
        command.add_argument("--seq", type=int, help="the letter's sequence number (any letter, malformed ones too)")
        command.set_defaults(func=_client(action))
    purge = connected(dlq_verbs.add_parser("purge", help="remove dead letters for good: one, a capability's, or --all"), listing=False)
    purge.add_argument("task_id", nargs="?", help="the dead task's id")
    purge.add_argument("--seq", type=int)
    purge.add_argument("--capability")
    purge.add_argument("--all", action="store_true", help="every dead letter of the swarm")
    purge.set_defaults(func=_client(_dlq_purge))

    token = state_dir(sub.add_parser("token", help="mint a bearer token for an agent's MCP endpoint (spec.mcp.auth {mode: jwt})"))
    token.add_argument("agent", help="the Agent whose endpoint the token is for")
    token.add_argument("-n", "--namespace", help="its namespace (default: kubectl's); read from its Secret <agent>-credentials")
    token.add_argument("--scope", action="append", default=[], help="a scope the token carries (repeat for several)")
    token.add_argument("--subject", default="kubeswarm-cli", help="the token's sub claim (who calls)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.add_argument("--audience", help="the aud claim, if the agent checks one")
    token.add_argument("--key-file", type=Path, help="the signing key as a file (default: local mode's, else the cluster's)")
    token.add_argument("--kubectl", default="kubectl", help="kubectl binary used to read the Secret")
    token.set_defaults(func=_token)

    mcp = connected(sub.add_parser("mcp-config", help="MCP client configuration (Claude, Cursor, VS Code) for an agent"), listing=False)
    mcp.add_argument("agent")
    mcp.add_argument("--client", choices=[*MCP_CLIENTS, "all"], default="all", help="one client's JSON alone (default: all, labelled)")
    mcp.add_argument("--url", help="the endpoint to use (default: the one the agent announces), e.g. an Ingress URL")
    mcp.add_argument("--token", help="bearer token for an agent with auth (adds an Authorization header)")
    mcp.set_defaults(func=_client(_mcp_config))
    return parser


def _run(_args: argparse.Namespace) -> int:
    from .__main__ import main as run_main

    return run_main()


def _token(args: argparse.Namespace) -> int:
    if args.ttl <= 0:
        raise CliError("--ttl must be positive", 2)
    local = local_key_file(args.state_dir, args.agent)
    if args.key_file is not None:
        key = args.key_file.read_text().strip()
    elif args.namespace is None and local.exists():
        key = local.read_text().strip()
    else:
        key = key_from_cluster(args.agent, args.namespace, args.kubectl)
    print(mint(key, subject=args.subject, scopes=args.scope, ttl_seconds=args.ttl, audience=args.audience))
    return 0


# ---- talking to a swarm


@dataclass(frozen=True)
class Target:
    nats_url: str
    prefix: str
    how: str  # how the prefix was chosen, for empty listings and not-found messages
    creds: Path | None = None

    def none_found(self, what: str) -> str:
        return f"No {what} under subject prefix {self.prefix} ({self.how}); pass --swarm/--namespace, or --prefix"


def _target(args: argparse.Namespace) -> Target:
    if args.nats_url:
        if args.prefix:
            return Target(args.nats_url, args.prefix, "--prefix", args.creds)
        namespace, swarm = args.namespace or "default", args.swarm or DEFAULT_SWARM
        return Target(args.nats_url, default_subject_prefix(namespace, swarm), f"swarm {swarm} in namespace {namespace}", args.creds)
    if args.namespace:
        raise CliError("--namespace names a cluster's swarm: pass --nats-url too (local mode runs in namespace default)", 2)
    state = read_state(args.state_dir)
    swarms: dict[str, str] = state["swarms"]
    if args.prefix:
        prefix, how = args.prefix, "--prefix"
    elif args.swarm:
        if args.swarm not in swarms:
            raise CliError(f"the local swarm runs no swarm {args.swarm!r}; it runs {', '.join(sorted(swarms))}")
        prefix, how = swarms[args.swarm], f"local swarm {args.swarm}"
    elif len(swarms) > 1:
        raise CliError(f"the local swarm runs several swarms ({', '.join(sorted(swarms))}): pass --swarm", 2)
    else:
        (swarm, prefix), *_ = swarms.items()
        how = f"local swarm {swarm}"
    # Each local swarm is a NATS account of its own: its creds file is the CLI's identity there.
    creds = args.creds or state.get("creds", {}).get(prefix)
    if creds is None:
        raise CliError(f"the local swarm has no prefix {prefix!r} (its swarms use {', '.join(sorted(swarms.values()))})")
    return Target(state["nats_url"], prefix, how, Path(creds))


Action = Callable[[SwarmClient, Target, argparse.Namespace], Awaitable[int]]


def _client(action: Action) -> Callable[[argparse.Namespace], int]:
    def call(args: argparse.Namespace) -> int:
        target = _target(args)
        # The client's retries and reconnects are the runtime's log lines; a verb reports failures itself.
        logging.getLogger("kubeswarm_runtime").setLevel(os.environ.get("KUBESWARM_LOG_LEVEL", "ERROR").upper())

        async def connected() -> int:
            try:
                client = await SwarmClient.connect(
                    NatsConfig(url=target.nats_url, creds_file=target.creds, reconnect_max_seconds=1.0),
                    target.prefix,
                    sender=f"cli-{uuid.uuid4().hex[:8]}",
                    give_up_after=args.connect_timeout,
                )
            except NatsUnreachable as exc:
                hint = "" if target.creds else "; if it requires credentials, pass --creds <file>"
                raise NatsUnreachable(f"{exc}{hint}") from None
            try:
                return await action(client, target, args)
            finally:
                await client.close()

        try:
            return asyncio.run(connected())
        except (nats.errors.Error, TimeoutError) as exc:
            # Connected, then refused or unanswered: most often a prefix the credentials do not cover.
            raise CliError(
                f"NATS refused or did not answer under subject prefix {target.prefix} ({target.how}): {exc or type(exc).__name__}; "
                "check --swarm/--namespace (or --prefix) and that your credentials cover that swarm"
            ) from None

    return call


def _task_input(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip()[:1] in ("{", "[", '"'):
            raise CliError(f"the task input is not valid JSON: {exc.msg} at character {exc.pos + 1}: {shorten(text)}", 2) from None
        return text  # plain words: sent as a JSON string


def _print_records(records: list[TaskRecord], fmt: Format) -> None:
    if fmt is not Format.TABLE:
        print(dump([r.model_dump(mode="json") for r in records], fmt))
        return
    rows = [(r.id, r.capability, r.state.value, r.agent or "-", str(r.attempts), iso(r.created_at), iso(r.updated_at)) for r in records]
    print(table(("ID", "CAPABILITY", "STATE", "AGENT", "ATTEMPTS", "CREATED", "UPDATED"), rows))


def _print_record(record: TaskRecord, fmt: Format) -> None:
    if fmt is Format.TABLE:
        _print_records([record], fmt)
        if record.error:
            print(f"error: {record.error}")
        if record.result is not None:
            print(f"result: {shorten(record.result, 400)}")
    else:
        print(dump(record.model_dump(mode="json"), fmt))


async def _task_create(client: SwarmClient, target: Target, args: argparse.Namespace) -> int:
    task_input = _task_input(args.input)
    fmt = args.output or Format.JSON
    present = await client.agents.list()
    if not any(args.capability in a.capabilities for a in present):
        offered = sorted({c for a in present for c in a.capabilities})
        print(
            f"kubeswarm: warning: no agent present serves capability {args.capability!r} under {target.prefix} "
            f"({'capabilities present: ' + ', '.join(offered) if offered else 'no agent present'}); the task waits in its queue",
            file=sys.stderr,
        )
    record = await client.tasks.create(args.capability, task_input, priority=Priority(args.priority))
    if args.no_wait:
        print(record.id if args.output is None else dump(record.model_dump(mode="json"), fmt))
        return 0
    try:
        record = await client.tasks.wait(record.id, args.timeout)
    except TimeoutError:
        cancelled = await client.tasks.cancel(record.id)
        if cancelled.terminal and cancelled.state is not TaskState.CANCELLED:  # it ended just now
            record = cancelled
        else:
            raise CliError(
                f"task {record.id} ({args.capability}) got no result within {args.timeout:g}s; cancelled it "
                "(use --timeout for longer, or --no-wait and `kubeswarm task get <id>`)",
                4,
            ) from None
    _print_record(record, fmt)
    if record.state is not TaskState.SUCCEEDED:
        raise CliError(f"task {record.id} {record.state.value}" + (f": {record.error}" if record.error else ""))
    return 0


async def _task_get(client: SwarmClient, target: Target, args: argparse.Namespace) -> int:
    record = await client.tasks.get(args.id)
    if record is None:
        raise CliError(f"no task {args.id!r} under subject prefix {target.prefix} ({target.how})")
    _print_record(record, args.output)
    return 0


async def _task_list(client: SwarmClient, target: Target, args: argparse.Namespace) -> int:
    state = TaskState(args.state) if args.state else None
    page = await client.tasks.list(state=state, capability=args.capability, limit=args.limit, cursor=args.cursor)
    if page.tasks or args.output is not Format.TABLE:
        _print_records(page.tasks, args.output)
    elif page.next_cursor is None:
        print(target.none_found("tasks"), file=sys.stderr)
    if page.next_cursor is not None:
        print(f"older tasks: --cursor {page.next_cursor}", file=sys.stderr)
    return 0


async def _task_cancel(client: SwarmClient, target: Target, args: argparse.Namespace) -> int:
    before = await client.tasks.get(args.id)
    if before is None:
        raise CliError(f"no task {args.id!r} under subject prefix {target.prefix} ({target.how})")
    if before.terminal:
        print(f"task {before.id} already {before.state.value}: left as it is")
        return 0
    record = await client.tasks.cancel(args.id)
    print(f"task {record.id} {'cancelled' if record.state is TaskState.CANCELLED else 'already ' + record.state.value}")
    return 0


async def _discoveries(client: SwarmClient, target: Target, args: argparse.Namespace) -> int:
    header = ("SEQ", "TIME", "AGENT", "TYPE", "CONTENT")

    def row(d: Any) -> tuple[str, ...]:
        return (str(d.seq), iso(d.at), d.agent, d.type, shorten(d.content))

    if args.follow:  # history first, then new ones until interrupted, one line each
        if args.output is Format.TABLE:
            print("\t".join(header), flush=True)
        async for discovery in client.discoveries.follow(agent=args.agent, type=args.type):
            text = "\t".join(row(discovery)) if args.output is Format.TABLE else json.dumps(with_iso_times(discovery.model_dump()))
            print(text, flush=True)
        return 0
    found = await client.discoveries.list(agent=args.agent, type=args.type, limit=10_000)
    if args.output is not Format.TABLE:
        print(dump([d.model_dump(mode="json") for d in found], args.output))
    elif found:
        print(table(header, [row(d) for d in found]))
    else:
        print(target.none_found("discoveries"), file=sys.stderr)
    return 0


async def _agents(client: SwarmClient, target: Target, args: argparse.Namespace) -> int:
    present = await client.agents.list()
    if args.output is not Format.TABLE:
        print(dump([a.model_dump(mode="json") for a in present], args.output))
        return 0
    if not present:
        print(target.none_found("agents"), file=sys.stderr)
        return 0
    rows = [
        (a.id, a.agent, a.role, ",".join(a.capabilities), f"{a.load}/{a.concurrency}", iso(a.last_seen), a.endpoint or "-") for a in present
    ]
    print(table(("ID", "AGENT", "ROLE", "CAPABILITIES", "LOAD", "LAST SEEN", "ENDPOINT"), rows))
    return 0


def _letter_ref(args: argparse.Namespace) -> dict[str, Any]:
    if (args.task_id is None) == (args.seq is None):
        raise CliError("name the dead letter by its task id or by --seq (not both)", 2)
    return {"task_id": args.task_id, "seq": args.seq}


async def _dlq_list(client: SwarmClient, target: Target, args: argparse.Namespace) -> int:
    letters = await client.dead_letters.list(capability=args.capability, since_seq=args.since_seq, limit=args.limit)
    if args.output is not Format.TABLE:
        print(dump([letter.model_dump(mode="json") for letter in letters], args.output))
        return 0
    rows = [
        (
            str(letter.seq),
            letter.capability,
            letter.task_id or "(malformed)",
            str(letter.attempts or "-"),
            iso(letter.dead_at or None),
            letter.reason[:80],
        )
        for letter in letters
    ]
    if rows:
        print(table(("SEQ", "CAPABILITY", "TASK", "ATTEMPTS", "DIED", "REASON"), rows) + "\n")
    waiting = await client.dead_letters.counts()
    print(f"waiting under {target.prefix}: " + (", ".join(f"{c} {n}" for c, n in sorted(waiting.items())) or "none"))
    return 0


async def _dlq_show(client: SwarmClient, target: Target, args: argparse.Namespace) -> int:
    print(dump((await client.dead_letters.get(**_letter_ref(args))).model_dump(mode="json"), Format.JSON))
    return 0


async def _dlq_replay(client: SwarmClient, target: Target, args: argparse.Namespace) -> int:
    print(dump((await client.dead_letters.replay(**_letter_ref(args))).model_dump(mode="json"), Format.JSON))
    return 0


async def _dlq_purge(client: SwarmClient, target: Target, args: argparse.Namespace) -> int:
    given = [args.task_id is not None, args.seq is not None, args.capability is not None, args.all]
    if sum(given) != 1:
        raise CliError("purge what: a task id, --seq, --capability or --all (exactly one)", 2)
    purged = await client.dead_letters.purge(task_id=args.task_id, seq=args.seq, capability=args.capability)
    print(f"purged {purged} dead letter{'s' if purged != 1 else ''}")
    return 0


async def _mcp_config(client: SwarmClient, target: Target, args: argparse.Namespace) -> int:
    url = args.url
    if url is None:
        replicas = sorted((a for a in await client.agents.list() if a.agent == args.agent and a.endpoint), key=lambda a: a.id)
        if not replicas:
            raise CliError(
                f"no agent {args.agent!r} present under subject prefix {target.prefix} ({target.how}); pass --url to name its endpoint"
            )
        url = replicas[0].endpoint  # sessions live in NATS: any replica serves any session
    assert url is not None
    clients = list(MCP_CLIENTS) if args.client == "all" else [args.client]
    for client_name in clients:
        snippet = json.dumps(mcp_client_config(client_name, args.agent, url, args.token), indent=2)
        print(snippet if args.client != "all" else f"# {MCP_CLIENTS[client_name]}\n{snippet}\n")
    return 0


# ---- local mode


def _stdout_gone() -> bool:
    """The reader of our stdout pipe went away (`kubeswarm up | head`): nothing we print will be read."""
    try:
        if not stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode):
            return False
    except (OSError, ValueError):
        return True
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLERR)
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))


def _up(args: argparse.Namespace) -> int:
    local = LocalSwarm(load_manifests(args.paths), args.state_dir, port_base=args.port_base, listen=args.listen)
    stop: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop.append(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        local.start()
        shown = ""
        while not stop:
            table_now = local.table()
            if table_now != shown:
                # A live table on a terminal; a log of changes otherwise.
                clear = "\x1b[H\x1b[J" if sys.stdout.isatty() else ""
                print(clear + table_now + "\n\nCtrl-C (or `kubeswarm down`) stops the swarm.", flush=True)
                shown = table_now
            if _stdout_gone():
                stop.append("closed stdout")
            time.sleep(0.5)
    except BrokenPipeError:
        stop.append("closed stdout")
    finally:
        if local.holds_state_dir:
            _say(f"stopping agents (in-flight tasks finish first){' on ' + stop[0] if stop else ''}...")
        local.stop()
    if "closed stdout" in stop:
        _silence_stdout()
    return 0


def _say(text: str) -> None:
    with contextlib.suppress(OSError):
        print(text, flush=True)


def _down(args: argparse.Namespace) -> int:
    pid = running_pid(args.state_dir)
    if pid is None:
        print(f"no local swarm running in {args.state_dir}: nothing to stop")
        return 0
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while running_pid(args.state_dir) is not None:
        if time.monotonic() > deadline:
            raise CliError(f"the local swarm (pid {pid}) did not stop within {args.timeout:g}s; `kill -9 {pid}` ends it and its agents", 4)
        time.sleep(0.1)
    print(f"stopped the local swarm (pid {pid}) in {args.state_dir}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    logs_dir = args.state_dir / "logs"
    known = sorted(p.stem for p in logs_dir.glob("*.log")) if logs_dir.is_dir() else []
    name = args.replica if args.replica in known else next((r for r in known if r.rpartition("-")[0] == args.replica), None)
    if name is None:
        listed = ", ".join(known) if known else "none yet (start one with `kubeswarm up`)"
        raise CliError(f"no replica {args.replica!r} in {args.state_dir}; replicas: {listed}")
    out = sys.stdout.buffer
    try:
        with (logs_dir / f"{name}.log").open("rb") as log:
            lines = log.readlines()
            out.writelines(lines[-args.tail :] if args.tail >= 0 else lines)
            out.flush()
            while args.follow:
                line = log.readline()
                if line:
                    out.write(line)
                    out.flush()
                elif running_pid(args.state_dir) is None:
                    return 0  # the swarm stopped: its replicas write no more
                else:
                    time.sleep(0.2)
    except BrokenPipeError:  # `kubeswarm logs x | head`
        _silence_stdout()
    return 0


def _silence_stdout() -> None:
    """Nothing more can be written; keep the interpreter from complaining when it flushes at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


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
