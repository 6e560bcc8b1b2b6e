"""The test bed from the command line (behind `make cluster-up` and friends).

python -m tests.testbed build        build the pinned Go components (cached)
python -m tests.testbed regenerate   rewrite hack/testbed/*/go.mod from pins.json
python -m tests.testbed up           start a cluster and leave it running
                                     (KUBESWARM_REAL_NODE=1: with a real node; see tests/testbed/node.py)
python -m tests.testbed down         stop every process `up` started
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from images import build as images

from . import build, node
from .cluster import Cluster, stop_recorded
from .node import real_node_requested
from .procs import TestbedError

STATE = build.REPO / ".state" / "cluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.testbed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["build", "regenerate", "up", "down"])
    parser.add_argument("components", nargs="*", help="regenerate: only these components' wrappers")
    parser.add_argument("--state-dir", type=Path, default=STATE, help="where `up` keeps certificates, data and logs")
    parser.add_argument("--nodes", type=int, default=2, help="fake kwok nodes (up)")
    parser.add_argument(
        "--real-node", action="store_true", help="build: the real node's parts and the images too, where this machine can run them"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            reason = node.unavailable_reason() if args.real_node or real_node_requested() else "not asked for"
            for name, path in build.build_all(node=reason is None).items():
                print(f"{name}: {path}")
            if reason is None:
                for ref, archive in images.build_all().items():
                    print(f"{ref}: {archive}")
            elif args.real_node:
                print(f"the real node's parts are not built: {reason}")
        elif args.command == "regenerate":
            build.regenerate_wrappers(args.components)
        elif args.command == "up":
            stop_recorded(args.state_dir)
            shutil.rmtree(args.state_dir, ignore_errors=True)
            cluster = Cluster(args.state_dir, nodes=args.nodes, real_node=real_node_requested())
            cluster.start()
            nodes = f"{args.nodes} kwok nodes" + (" (tainted) and the real node, where pods run" if cluster.real_node else "")
            print(f"test bed up: API server {cluster.server}, {nodes}; logs in {args.state_dir / 'logs'}")
            print("stop it with: make cluster-down")
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        else:
            stopped = stop_recorded(args.state_dir)
            print(f"stopped: {', '.join(stopped)}" if stopped else "no test bed was running")
    except (TestbedError, build.BuildError, images.ImageBuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
