"""Agents applied at once through the operator, against two baselines in the same run; a scaling curve.

    python bench/bench_operator.py [--agents N | --curve N,N,...] [--resync SECONDS] [--no-baseline] [--profile FILE]

Each size is measured in three phases, each on a fresh test bed of its own, so that all three meet the
same empty API server (deleting thousands of objects takes longer than a new test bed); the phases'
order rotates from one size to the next, so that drift in the machine's load favours none:

- agents: N Agents created at once (64 requests in flight) with the operator running, until every
  Agent is Ready (seen through one watch);
- children: the operator's own children, ``build_children`` of each Agent (ConfigMap, Secret with its
  key, Service, NetworkPolicy, Deployment; whatever it returns but None), created directly without an
  operator, until every Deployment has a ready pod; without an owner reference, as no Agent exists (the
  garbage collector would delete them);
- bare: a Deployment (one pod) and a Service per Agent, created directly, until every Deployment has
  a ready pod.

Every phase creates with the same client, 64 requests in flight. API requests are counted on the API
server (``apiserver_request_total`` from ``kubectl get --raw /metrics``: every client, i.e. operator,
controllers, scheduler, kwok) and by the operator itself (``kubeswarm_operator_api_requests_total``:
its writes). After all are Ready, one full idle resync of every Agent is waited for and the
operator's writes meanwhile counted.

Goals (issue 18, 2-core machine): at 1,000 Agents all Ready within 1.1x the own-children baseline and
1.4x the bare one; at 5,000 within 1.3x the bare one and operator peak RSS at most 350 MiB; zero
writes in an idle resync; along the curve (``--curve 250,1000,2500,5000``) time and API requests
per Agent not rising with size (no worse than linear).

Runs against KUBECONFIG when set (or KUBESWARM_E2E_KUBECONFIG), every phase in its own namespace
there; else on test beds of its own (tests.testbed.cluster).  ``--profile FILE`` records the operator
with py-spy from its start until all Agents are Ready (FILE.svg: a flame graph, .json: speedscope,
else py-spy's raw collapsed stacks, summarised here); with a curve, one file per size.
``--apiserver-profile DIR`` records the API server's CPU (Go's pprof, in 5 s slices) through each phase into
DIR/<phase>-<size>.pb.gz and prints what that CPU went to (each verb's handlers, watches, authentication, garbage
collection ..., and the custom resources' share): where the API server's work per Agent goes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes_asyncio import client, config, watch
from kubeswarm_operator.agent.children import ChildInputs, build_children, child_name, config_hash, referenced_objects
from kubeswarm_operator.kube.client import collection_path
from kubeswarm_operator.kube.kinds import CONFIG_MAP, KINDS_BY_NAME, SECRET, Manifest
from kubeswarm_operator.kube.owned import data_digests, digest
from kubeswarm_operator.settings import OperatorSettings
from kubeswarm_runtime.render import JWT_SECRET_KEY, MCP_JWT_KEY_ENV, MODEL_API_KEY_ENV, new_jwt_key, render_runtime_env
from kubeswarm_runtime.resources import API_VERSION, GROUP, VERSION, Agent

from tests.e2e.conftest import Operator, install_crds, until
from tests.testbed.cluster import Cluster, KubeAccess, benchmark_cluster
from tests.testbed.procs import wheel_binary

REPO = Path(__file__).resolve().parents[1]
# Small requests: the test bed's two fake nodes have 1,000 CPUs and room for 5,000 pods each.
BENCH_SPEC = {"capabilities": ["bench"], "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}}
RUNTIME_IMAGE = "kubeswarm/runtime:bench"
IN_FLIGHT = 64
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "CREATE", "UPDATE", "APPLY"}
BY_RESOURCE = ("verb", "resource", "subresource")
SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
PHASES = ("agents", "children", "bare")
# Per-Agent figures along the curve may vary this much from run to run and still count as flat.
NOISE = 1.15


def apiserver_requests(cluster: KubeAccess, by: tuple[str, ...] = ("verb",)) -> Counter[str]:
    """apiserver_request_total summed by the given labels (dry runs and watches included as the server counts them)."""
    counts: Counter[str] = Counter()
    for line in cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout.splitlines():
        match = SAMPLE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            counts[" ".join(labels.get(name, "?") for name in by)] += int(float(match["value"]))
    return counts


def operator_writes(op: Operator) -> float:
    """The operator's write requests so far (its watches and reads left out)."""
    return sum(
        value
        for series, value in op.metrics().items()
        if series.startswith("kubeswarm_operator_api_requests_total{")
        and dict(re.findall(r'(\w+)="([^"]*)"', series)).get("verb") in WRITE_VERBS
    )


def api_errors(op: Operator) -> dict[str, int]:
    """The operator's failed requests so far, by verb, kind and code (a 404 of a GET: an object it looked for is not there)."""
    found: dict[str, int] = {}
    for series, value in op.metrics().items():
        if series.startswith("kubeswarm_operator_api_errors_total{") and value:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', series))
            found[" ".join(labels.get(name, "?") for name in ("verb", "kind", "code"))] = int(value)
    return found


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
BENCH_CPU = "bench (its client, watch, kubectl)"


def cpu_seconds(operator_pid: int | None) -> dict[str, float]:
    """CPU time (user + system) so far of the operator, each control-plane process on this machine, and this bench."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv0 = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "operator" if int(proc.name) == operator_pid else Path(argv0).name
        if name == "operator" or name in CONTROL_PLANE:
            found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    times = os.times()
    found[BENCH_CPU] = times.user + times.system + times.children_user + times.children_system
    return found


def cpu_used(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    return dict(sorted(used.items(), key=lambda item: -item[1]))


def cpu_line(used: dict[str, float], seconds: float) -> str:
    return f"CPU seconds over {seconds:.0f} s ({os.cpu_count()} CPUs): " + ", ".join(f"{n} {v:.0f}" for n, v in used.items())


def agent_ready(item: dict[str, Any]) -> bool:
    status = item.get("status") or {}
    return status.get("phase") == "Running" and (status.get("readyReplicas") or 0) >= 1


def deployment_ready(item: dict[str, Any]) -> bool:
    return ((item.get("status") or {}).get("readyReplicas") or 0) >= 1


def ready_timeout(count: int) -> float:
    """How long the bench waits for all to be Ready: generous, a bench measures rather than fails."""
    return 600 + 0.4 * count


@contextlib.contextmanager
def suppress_gone() -> Iterator[None]:
    """A watch that ended with 410 Gone, or 504 (resumed from a version the server's watch cache has not reached yet,
    seen at 5,000 Agents): the caller starts another."""
    try:
        yield
    except client.ApiException as error:
        if error.status not in (410, 504):
            raise


async def watch_until_ready(
    kubeconfig: Path,
    resource: tuple[str, str, str],
    namespace: str,
    count: int,
    ready: Callable[[dict[str, Any]], bool],
) -> None:
    """Return once ``count`` objects are ready, seen through one watch (a poll of thousands of objects would load the machine)."""
    api_client = await config.new_client_from_config(config_file=str(kubeconfig))
    api = client.CustomObjectsApi(api_client)  # plain dicts for any kind, no model classes to build
    group, version, plural = resource
    done: set[str] = set()
    try:
        async with asyncio.timeout(ready_timeout(count)):
            while len(done) < count:
                # A watch ends after timeout_seconds (or when the server drops a watcher that lags behind, or its
                # place in history is gone: 410); the next one lists everything again, so ``done`` stays right.
                with suppress_gone():
                    async with watch.Watch().stream(
                        api.list_namespaced_custom_object, group, version, namespace, plural, timeout_seconds=300
                    ) as events:
                        async for event in events:
                            item = event["object"]
                            name = item.get("metadata", {}).get("name")
                            if event["type"] != "DELETED" and ready(item):
                                done.add(name)
                            else:
                                done.discard(name)
                            if len(done) >= count:
                                break
    finally:
        await api_client.close()


async def create_objects(kubeconfig: Path, namespace: str, manifests: Sequence[Manifest], in_flight: int = IN_FLIGHT) -> None:
    """POST every manifest, ``in_flight`` at a time, as a burst of users or a GitOps sync would (kubectl sends one at a time).

    One client for every phase; answers are read but not parsed into model classes (that would cost the bench
    CPU the API server needs).
    """
    api_client = await config.new_client_from_config(config_file=str(kubeconfig))
    slots = asyncio.Semaphore(in_flight)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}

    async def create(body: Manifest) -> None:
        path = collection_path(KINDS_BY_NAME[body["kind"]], namespace)
        async with slots:
            await api_client.call_api(path, "POST", header_params=dict(headers), body=body, auth_settings=["BearerToken"])

    try:
        await asyncio.gather(*(create(body) for body in manifests))
    finally:
        await api_client.close()


async def create_and_wait(creating: Awaitable[None], readiness: Awaitable[None]) -> float:
    """Create while already watching for readiness; returns when the creating finished (monotonic clock)."""
    waiting = asyncio.ensure_future(readiness)
    try:
        await creating
        created = time.monotonic()
        await waiting
    finally:
        waiting.cancel()
    return created


def agent_manifests(count: int, namespace: str) -> list[Manifest]:
    return [
        {"apiVersion": API_VERSION, "kind": "Agent", "metadata": {"name": f"a{i:04d}", "namespace": namespace}, "spec": BENCH_SPEC}
        for i in range(count)
    ]


def children_manifests(count: int, namespace: str) -> list[Manifest]:
    """What the operator writes for each bench Agent, as it computes it (settings from the environment, as the
    operator's are), without owner references; the Secret with the key the operator puts in it."""
    settings = OperatorSettings(runtime_image=RUNTIME_IMAGE)
    out: list[Manifest] = []
    for body in agent_manifests(count, namespace):
        agent = Agent.model_validate({**body, "metadata": {**body["metadata"], "uid": "none"}})
        runtime_env = {**settings.agent_env, **render_runtime_env(agent, None, namespace=namespace, nats_url=settings.nats_url)}
        secret_data = {JWT_SECRET_KEY: base64.b64encode(new_jwt_key().encode()).decode()}
        own: dict[tuple[str, str], object] = {
            (CONFIG_MAP.kind, child_name(agent, CONFIG_MAP)): digest(dict(runtime_env)),
            (SECRET.kind, child_name(agent, SECRET)): data_digests(secret_data),
        }
        digests = {ref: own.get(ref) for ref in referenced_objects(agent)}
        inputs = ChildInputs(
            image=settings.runtime_image,
            runtime_env=runtime_env,
            nats_url=settings.nats_url,
            ingress_namespace=settings.ingress_namespace,
            config_hash=config_hash(digests),
            api_key_env=MODEL_API_KEY_ENV,
            jwt_key_env=MCP_JWT_KEY_ENV,
            dns_selector=settings.dns_labels,
        )
        for kind, child in build_children(agent, inputs).items():
            if child is None:
                continue
            metadata = {key: value for key, value in child["metadata"].items() if key != "ownerReferences"}
            out.append({**child, "metadata": metadata, **({"data": secret_data} if kind is SECRET else {})})
    return out


def bare_manifests(count: int, namespace: str) -> list[Manifest]:
    """A Deployment (one pod, as an Agent's) and a Service per name: what the control plane must do for the Agents."""
    out: list[Manifest] = []
    for i in range(count):
        name = f"b{i:04d}"
        labels = {"app": name}
        container = {
            "name": "runtime",
            "image": RUNTIME_IMAGE,
            "resources": BENCH_SPEC["resources"],
            "ports": [{"name": "mcp", "containerPort": 8080}],
        }
        metadata = {"name": name, "namespace": namespace}
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata,
                "spec": {"selector": labels, "ports": [{"name": "mcp", "port": 8080, "targetPort": "mcp"}]},
            }
        )
        out.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": metadata,
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
                },
            }
        )
    return out


def last_created_after(cluster: KubeAccess, namespace: str, kind: str, start: str) -> float:
    """Seconds from the first Agent's creation to the newest object of ``kind`` (where the time went)."""
    data = json.loads(cluster.kubectl("get", kind, "-n", namespace, "-o", "json", timeout=300).stdout)
    stamps = [item["metadata"]["creationTimestamp"] for item in data["items"]]
    return (parse_time(max(stamps)) - parse_time(start)) if stamps else float("nan")


def parse_time(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def diff(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {verb: after[verb] - before[verb] for verb in sorted(after) if after[verb] - before[verb]}


@dataclass
class Phase:
    """One phase of one size: seconds from the first create until all Ready, and what it cost."""

    name: str
    seconds: float
    requests: int  # API requests of every client
    cpu: dict[str, float]


@dataclass
class Operated:
    """What only the Agents phase has: the operator's own figures."""

    writes: float
    peak_rss: float
    idle_writes: float
    failed: float  # failed reconciles (each retried)


@dataclass
class Size:
    count: int
    phases: dict[str, Phase] = field(default_factory=dict)
    operated: Operated | None = None

    def ratio(self, baseline: str) -> float:
        if baseline not in self.phases:
            return float("nan")
        return self.phases["agents"].seconds / self.phases[baseline].seconds


def namespace_of(phase: str, count: int) -> str:
    return f"bench-{phase}-{count}"


PPROF_SLICE_SECONDS = 5
# What the API server's CPU went to: a sample counts for the first of these its stack shows (a request's own work
# under its verb's handler; the rest is the server's upkeep). Custom resources (the Agents) are counted apart too.
APISERVER_WORK = (
    ("Go garbage collection", r"gcBgMarkWorker|runtime\.bgsweep|runtime\.bgscavenge"),
    ("serving watches", r"serveWatch|watchEncoder|WatchServer"),
    ("create", r"CreateResource|CreateNamedResource"),
    ("update", r"UpdateResource"),
    ("patch", r"PatchResource|patchResource"),
    ("get", r"GetResource"),
    ("list", r"ListResource"),
    ("watch cache", r"storage/cacher\."),
    ("etcd watch streams", r"watchGRPCStream|etcd3\.\(\*watchChan\)"),
    ("authentication", r"pkg/authentication"),
    ("flow control", r"flowcontrol"),
    ("HTTP, TLS", r"net/http|http2|crypto/tls"),
)
CUSTOM_RESOURCES = r"apiextensions-apiserver/pkg/(apiserver|registry)"


def pprof_stacks(go: str, profile: Path) -> Iterator[tuple[float, list[str]]]:
    """(seconds, frames) of each sampled stack, from ``go tool pprof -traces``."""
    traces = subprocess.run([go, "tool", "pprof", "-traces", str(profile)], capture_output=True, text=True, check=True).stdout
    for block in traces.split("-----------+-------------------------------------------------------")[1:]:
        lines = [line.split() for line in block.splitlines() if line.strip()]
        if not lines or len(lines[0]) < 2:
            continue
        value = lines[0][0]
        seconds = float(value[:-2]) / 1000 if value.endswith("ms") else float(value.rstrip("s"))
        yield seconds, [lines[0][1], *(line[0] for line in lines[1:])]


def apiserver_work(stacks: Iterable[tuple[float, list[str]]]) -> str:
    """What the sampled ``stacks`` (seconds, frames) went to, by :data:`APISERVER_WORK`."""
    work: dict[str, float] = {}
    custom = total = 0.0
    for seconds, frames in stacks:
        total += seconds
        custom += seconds if any(re.search(CUSTOM_RESOURCES, frame) for frame in frames) else 0.0
        part = next((name for name, pattern in APISERVER_WORK if any(re.search(pattern, frame) for frame in frames)), "other")
        work[part] = work.get(part, 0.0) + seconds
    parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in sorted(work.items(), key=lambda item: -item[1]))
    return f"API server CPU seconds sampled: {total:.2f}; by work: {parts}; of all, custom resources (Agents) {custom:.2f}"


@contextlib.contextmanager
def apiserver_profiled(cluster: KubeAccess, out: Path | None) -> Iterator[None]:
    """The API server's CPU profile while the block runs: pprof profiles of a few seconds each, back to back (a
    profile's length is fixed when asked for), merged into ``out`` after; what its CPU went to printed."""
    if out is None:
        yield
        return
    go = shutil.which("go")
    if go is None:
        raise SystemExit("--apiserver-profile needs Go's pprof (go on PATH)")
    slices = out.with_suffix("").with_suffix(".slices")
    slices.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def record() -> None:
        index = 0
        while not stop.is_set():
            with (slices / f"{index:04d}.pb.gz").open("wb") as file:
                command = ["get", "--raw", f"/debug/pprof/profile?seconds={PPROF_SLICE_SECONDS}"]
                subprocess.run([str(wheel_binary("kubectl")), "--kubeconfig", str(cluster.kubeconfig), *command], stdout=file, check=False)
            index += 1

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    try:
        yield
    finally:
        stop.set()
        recorder.join()
        parts = sorted(str(part) for part in slices.iterdir() if part.stat().st_size)
        with out.open("wb") as merged:
            subprocess.run([go, "tool", "pprof", "-proto", *parts], stdout=merged, stderr=subprocess.DEVNULL, check=True)
        shutil.rmtree(slices)
        print(f"{apiserver_work(pprof_stacks(go, out))}\n  (profile: {out}; go tool pprof -top {out}, or -http=: for a graph)", flush=True)


def measure(
    cluster: KubeAccess,
    name: str,
    count: int,
    manifests: list[Manifest],
    watched: tuple[str, str, str],
    operator_pid: int | None,
    apiserver_profile: Path | None,
) -> Phase:
    """Create ``manifests`` at once in this phase's namespace and wait until ``count`` of ``watched`` are ready."""
    namespace = namespace_of(name, count)
    ready = agent_ready if watched[2] == "agents" else deployment_ready
    before = apiserver_requests(cluster, BY_RESOURCE)
    cpu_before = cpu_seconds(operator_pid)
    started = time.monotonic()
    with apiserver_profiled(cluster, apiserver_profile):
        created = asyncio.run(
            create_and_wait(
                create_objects(cluster.kubeconfig, namespace, manifests),
                watch_until_ready(cluster.kubeconfig, watched, namespace, count, ready),
            )
        )
        seconds = time.monotonic() - started
        cpu = cpu_used(cpu_seconds(operator_pid), cpu_before)  # before the profile's merging, not the phase's work
    by_resource = diff(apiserver_requests(cluster, BY_RESOURCE), before)
    by_verb = dict(sum((Counter({key.split()[0]: n}) for key, n in by_resource.items()), Counter()))
    total = sum(by_verb.values())
    print(
        f"[{name}] {len(manifests)} objects created in {created - started:.1f} s ({IN_FLIGHT} in flight); all Ready after {seconds:.1f} s"
    )
    print(f"[{name}] API requests, all clients: {total} = {total / count:.1f} per Agent; by verb: {by_verb}")
    print(
        f"[{name}] API requests per Agent by verb and resource, all clients: "
        + ", ".join(f"{key} {n / count:.2f}" for key, n in sorted(by_resource.items(), key=lambda item: -item[1]) if n >= count / 10)
    )
    print(f"[{name}] " + cpu_line(cpu, seconds))
    return Phase(name, seconds, total, cpu)


def py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile needs py-spy (make venv installs it)")
    return found


@contextlib.contextmanager
def profiled(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy attached to the running operator while the block runs (not a child of it: the operator's own RSS and CPU
    stay its own); a summary of the raw format's stacks after."""
    if out is None:
        yield
        return
    form = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    # --gil: samples of the thread holding the GIL, i.e. the operator's Python work, not its threads waiting.
    options = ["--gil", "--rate", "100", "--format", form]
    with out.with_name(out.name + ".log").open("wb") as log:
        spy = subprocess.Popen(
            [py_spy(), "record", "--pid", str(pid), "--output", str(out), *options], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            spy.wait(timeout=120)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    print(f"profile of the operator until all Ready: {out} (py-spy record {shlex.join(options)})")
    if form == "raw" and out.exists():
        print(profile_summary(out.read_text()))


def profile_summary(collapsed: str, top: int = 15) -> str:
    """The hottest functions of py-spy's collapsed stacks (``frame;frame;... count``): own samples, and with callees
    for the operator's own code."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        total += int(samples)
        own[frames[-1]] += int(samples)
        for frame in set(frames):
            if "kubeswarm_operator" in frame and "__main__.py" not in frame:  # its main holds every sample
                inclusive[frame] += int(samples)
    if not total:
        return "profile: no samples"

    def rows(counts: Counter[str]) -> str:
        return "\n".join(f"  {n / total:6.1%}  {frame}" for frame, n in counts.most_common(top))

    return f"profile: {total} samples; by own time:\n{rows(own)}\nthe operator's functions, with what they call:\n{rows(inclusive)}"


def run_agents(cluster: KubeAccess, size: Size, resync: float, workdir: Path, profile: Path | None, apiserver_profile: Path | None) -> None:
    count, namespace = size.count, namespace_of("agents", size.count)
    install_crds(cluster)
    reset_namespace(cluster, namespace)
    env = {"KUBESWARM_RESYNC_SECONDS": str(resync), "KUBESWARM_RUNTIME_IMAGE": RUNTIME_IMAGE}
    op = Operator(cluster.kubeconfig, workdir / f"operator-{count}.log", env=env).start()
    assert op.process is not None
    try:
        op_before = operator_writes(op)
        with profiled(op.process.pid, profile):
            manifests = agent_manifests(count, namespace)
            phase = measure(cluster, "agents", count, manifests, (GROUP, VERSION, "agents"), op.process.pid, apiserver_profile)
        size.phases["agents"] = phase
        writes = operator_writes(op) - op_before
        agents = json.loads(cluster.kubectl("get", "agents", "-n", namespace, "-o", "json", timeout=300).stdout)["items"]
        first = min(a["metadata"]["creationTimestamp"] for a in agents)
        timeline = {kind: last_created_after(cluster, namespace, kind, first) for kind in ("agents", "deployments", "replicasets", "pods")}
        print("[agents] last one created, seconds after the first Agent: " + ", ".join(f"{k} {v:.0f}" for k, v in timeline.items()))
        print(f"[agents] API writes by the operator: {writes:.0f} = {writes / count:.1f} per Agent")
        print(f"[agents] operator CPU per Agent: {1000 * phase.cpu.get('operator', 0.0) / count:.1f} ms")

        # Idle: wait until one full resync of every Agent has happened, counting writes meanwhile.
        unchanged = 'kubeswarm_operator_reconciles_total{kind="Agent",outcome="unchanged"}'
        time.sleep(min(resync, 10))  # let the last status writes of the rollout land before the baseline
        idle_before, idle_op = apiserver_requests(cluster), operator_writes(op)
        start_count = op.metrics().get(unchanged, 0)
        until(lambda: op.metrics().get(unchanged, 0) >= start_count + count, resync * 4 + 60, "a full idle resync", interval=1)
        idle_writes = operator_writes(op) - idle_op
        server_writes = {v: n for v, n in diff(apiserver_requests(cluster), idle_before).items() if v in WRITE_VERBS}
        print(
            f"[agents] idle resync of {count} Agents: operator writes {idle_writes:.0f} (goal: 0); "
            f"API server writes meanwhile (all clients: leases, kwok, events): {server_writes}"
        )
        failed = op.metrics().get('kubeswarm_operator_reconciles_total{kind="Agent",outcome="error"}', 0)
        rss = peak_rss_mib(op.process.pid)
        print(f"[agents] operator peak RSS: {rss:.0f} MiB   (goal at 5,000: <= 350 MiB); failed reconciles (retried): {failed:.0f}")
        print(f"[agents] the operator's API errors by verb, kind and code: {api_errors(op)}")
        size.operated = Operated(writes, rss, idle_writes, failed)
    finally:
        op.stop()


def reset_namespace(cluster: KubeAccess, namespace: str) -> None:
    """An empty namespace (a leftover of an earlier run on an existing cluster goes first)."""
    cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", timeout=600)
    cluster.kubectl("create", "namespace", namespace)


def run_baseline(cluster: KubeAccess, size: Size, name: str, apiserver_profile: Path | None) -> None:
    count, namespace = size.count, namespace_of(name, size.count)
    reset_namespace(cluster, namespace)
    manifests = children_manifests(count, namespace) if name == "children" else bare_manifests(count, namespace)
    size.phases[name] = measure(cluster, name, count, manifests, ("apps", "v1", "deployments"), None, apiserver_profile)


def run_size(
    size: Size, phases: Sequence[str], resync: float, workdir: Path, profile: Path | None, apiserver_profiles: Path | None
) -> None:
    for name in phases:
        bed = workdir / f"{size.count}-{name}"
        apiserver_profile = apiserver_profiles / f"{name}-{size.count}.pb.gz" if apiserver_profiles else None
        with benchmark_cluster(bed) as cluster:
            try:
                if name == "agents":
                    run_agents(cluster, size, resync, workdir, profile, apiserver_profile)
                else:
                    run_baseline(cluster, size, name, apiserver_profile)
            finally:
                if not isinstance(cluster, Cluster):  # an existing cluster: its objects go (not waited for)
                    cluster.kubectl("delete", "namespace", namespace_of(name, size.count), "--wait=false", check=False)
        shutil.rmtree(bed / "cluster" / "etcd", ignore_errors=True)  # a test bed's data: hundreds of MiB at 5,000


BASELINES = {
    "children": ("own children created directly", "goal at 1,000: <= 1.1"),
    "bare": ("bare Deployments + Services", "goal at 1,000: <= 1.4; at 5,000: <= 1.3"),
}


def print_size(size: Size, reproduce: str) -> None:
    agents = size.phases["agents"]
    lines = [f"== {size.count} Agents: all Ready after {agents.seconds:.1f} s, {agents.requests / size.count:.1f} API requests per Agent"]
    for name, (title, goal) in BASELINES.items():
        if name in size.phases:
            phase = size.phases[name]
            lines.append(
                f"   {title}: {phase.seconds:.1f} s, {phase.requests / size.count:.1f} API requests per Agent; "
                f"ratio {size.ratio(name):.2f}   ({goal})"
            )
    lines.append(f"   reproduce: {reproduce}")
    print("\n".join(lines), flush=True)


def exponent(counts: Sequence[int], values: Sequence[float]) -> float:
    """k in value ~ count^k, least squares over the curve (1: linear)."""
    xs = [math.log(count) for count in counts]
    ys = [math.log(max(value, 1e-9)) for value in values]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread if spread else float("nan")


def rises(per_agent: Sequence[float]) -> bool:
    """A per-Agent figure rises with size: one is more than NOISE times the lowest at any smaller size."""
    return any(value > NOISE * min(per_agent[:i]) for i, value in enumerate(per_agent) if i)


def print_curve(sizes: Sequence[Size], reproduce: str) -> None:
    def fmt(value: float, spec: str = ".2f") -> str:
        return "-" if math.isnan(value) else format(value, spec)

    def phase_seconds(size: Size, name: str) -> float:
        return size.phases[name].seconds if name in size.phases else float("nan")

    header = (
        "| Agents | all Ready s | own children s | bare s | / children | / bare | ms per Agent | peak RSS MiB "
        "| requests per Agent (all) | operator writes per Agent | idle resync writes | operator CPU ms per Agent |"
    )
    print("\n" + header)
    print("|" + " --- |" * (header.count("|") - 1))
    for s in sizes:
        op = s.operated
        agents = s.phases["agents"]
        print(
            f"| {s.count} | {agents.seconds:.1f} | {fmt(phase_seconds(s, 'children'), '.1f')} | {fmt(phase_seconds(s, 'bare'), '.1f')} "
            f"| {fmt(s.ratio('children'))} | {fmt(s.ratio('bare'))} | {1000 * agents.seconds / s.count:.1f} "
            f"| {fmt(op.peak_rss if op else math.nan, '.0f')} | {agents.requests / s.count:.1f} "
            f"| {fmt(op.writes / s.count if op else math.nan, '.1f')} | {fmt(op.idle_writes if op else math.nan, '.0f')} "
            f"| {1000 * agents.cpu.get('operator', 0.0) / s.count:.1f} |"
        )
    if len(sizes) < 2:
        print(f"reproduce: {reproduce}")
        return
    time_per_agent = [s.phases["agents"].seconds / s.count for s in sizes]
    requests_per_agent = [s.phases["agents"].requests / s.count for s in sizes]
    counts = [s.count for s in sizes]
    k_time = exponent(counts, [s.phases["agents"].seconds for s in sizes])
    k_requests = exponent(counts, [s.phases["agents"].requests for s in sizes])
    k_rss = exponent(counts, [s.operated.peak_rss if s.operated else math.nan for s in sizes])
    print(
        f"growth (value ~ Agents^k, least squares): time k={k_time:.2f}, API requests k={k_requests:.2f}, operator peak RSS k={k_rss:.2f}"
    )
    # The control plane itself slows per object as it holds more: the operator is also judged by its ratio to its own
    # children created directly (its overhead), the first baseline measured at every size.
    judged_by = ""
    relative = False
    for name in BASELINES:
        if all(name in s.phases for s in sizes):
            ratios = [s.ratio(name) for s in sizes]
            if not judged_by:
                judged_by, relative = name, not rises(ratios)
            print(
                f"{name} baseline: time k={exponent(counts, [s.phases[name].seconds for s in sizes]):.2f}; ratio along the curve: "
                + ", ".join(f"{s.count}: {ratio:.2f}" for s, ratio in zip(sizes, ratios, strict=True))
            )
    absolute = not rises(time_per_agent)
    linear = not rises(requests_per_agent) and (absolute or relative)
    print(
        f"verdict: {'WORSE than linear' if not linear else 'no worse than linear' if absolute else 'no worse than the control plane'}: "
        "API requests per Agent "
        f"{'flat' if not rises(requests_per_agent) else 'RISING'}; time per Agent {'flat' if absolute else 'rising'}"
        + (f", its ratio to the {judged_by} baseline {'flat' if relative else 'RISING'}" if judged_by else "")
        + f" (rising: more than {NOISE}x the lowest at a smaller size)"
    )
    print(f"reproduce: {reproduce}")


def reproduce_command(argv: Sequence[str]) -> str:
    python = Path(sys.executable)
    shown = str(python.relative_to(REPO)) if python.is_relative_to(REPO) else str(python)
    return shlex.join([shown, "bench/bench_operator.py", *argv])


def parse_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes are positive integers, comma-separated")
    return sorted(sizes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--agents", type=int, default=1000, help="Agents applied at once (default 1000)")
    sizes.add_argument("--curve", type=parse_sizes, help="a scaling curve: each of these sizes, e.g. 250,1000,2500,5000")
    parser.add_argument("--resync", type=float, default=30.0, help="operator resync period for the idle check")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false", help="only the Agents through the operator, no baselines")
    parser.add_argument("--profile", type=Path, help="record the operator with py-spy into this file (.svg, .json, else raw)")
    parser.add_argument("--apiserver-profile", type=Path, help="record the API server's CPU (pprof) in each phase into this directory")
    args = parser.parse_args()
    counts: list[int] = args.curve or [args.agents]
    workdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    print(f"work directory (operator logs, profiles, test beds' logs): {workdir}")
    done: list[Size] = []
    for index, count in enumerate(counts):
        phases = list(PHASES if args.baseline else PHASES[:1])
        order = phases[index % len(phases) :] + phases[: index % len(phases)]  # rotated: each phase goes first in turn
        profile = None
        if args.profile is not None:
            profile = args.profile if len(counts) == 1 else args.profile.with_stem(f"{args.profile.stem}-{count}")
        size = Size(count)
        run_size(size, order, args.resync, workdir, profile, args.apiserver_profile)
        extra = [*([f"--resync={args.resync:g}"] if args.resync != 30.0 else []), *([] if args.baseline else ["--no-baseline"])]
        print_size(size, reproduce_command([f"--agents={count}", *extra]))
        done.append(size)
    print_curve(done, reproduce_command(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
