"""Where the operator's time goes per Agent: a py-spy profile (raw stacks) in disjoint parts.

    python bench/bench_operator.py --agents 1000 --profile /tmp/operator.txt
    python bench/profile_parts.py /tmp/operator.txt --ms-per-agent 11.4

``--ms-per-agent``: the operator's CPU per Agent that bench_operator printed in the same run
(``[agents] operator CPU per Agent``), shared out by the parts' samples.  A sample counts in the
first part whose frame it holds (a request made by a reconcile is a request, not the reconcile);
samples of threads waiting (the event loop's select, idle thread-pool workers) are left out.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

# (part, frames that mark it), first match wins.
PARTS = (
    ("its API requests: JSON encoding, HTTP, answers (Kube._call)", ("Kube._call",)),
    ("desired children (build_children: manifests, hashes)", ("build_children",)),
    ("the Agent's status and Events (_report)", ("AgentReconciler._report",)),
    ("comparing with the watched children (_converge_child)", ("AgentReconciler._converge_child",)),
    ("rest of a reconcile (Agent parsed, environment rendered, refs, queue)", ("WorkQueue._run_queued", "AgentReconciler")),
    ("kopf: Agent watch events (its indexes, the event handler)", ("worker (kopf",)),
    ("kopf: its watch streams", ("kopf/_cogs/clients",)),
    ("the children's own watches (parsing, views, queueing)", ("ChildWatch",)),
    ("metrics scrapes", ("wsgiref", "prometheus_client")),
)
OTHER = "other (event loop, SSL, garbage collection)"
WAITING = ("select (selectors.py", "_worker (concurrent/futures/thread.py", "serve_forever", "wait (threading.py")


def parts(collapsed: str) -> list[tuple[str, float]]:
    """Each part's share of the busy samples, largest first."""
    counts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit() or any(wait in stack.rsplit(";", 1)[-1] for wait in WAITING):
            continue
        part = next((name for name, marks in PARTS if any(mark in stack for mark in marks)), OTHER)
        counts[part] += int(samples)
    busy = sum(counts.values())
    return [(name, n / busy) for name, n in counts.most_common()] if busy else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy's raw output (bench_operator --profile FILE.txt)")
    parser.add_argument("--ms-per-agent", type=float, help="the operator's CPU per Agent in the same run")
    args = parser.parse_args()
    for name, share in parts(args.profile.read_text()):
        per_agent = f"  {share * args.ms_per_agent:4.1f} ms" if args.ms_per_agent else ""
        print(f"{share:6.1%}{per_agent}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
