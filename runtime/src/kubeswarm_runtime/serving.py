"""``python -m kubeswarm_runtime.serving <number> <metrics fd>``: one extra serving process of a replica.

Started by the replica's first process (see :mod:`kubeswarm_runtime.processes`), which writes the configuration
as one JSON line on its stdin and keeps that pipe open while it lives.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from .app import run_agent, run_process
from .config import RuntimeConfig
from .mcp import serve_mcp


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("KUBESWARM_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)s %(name)s [process {sys.argv[1]}]: %(message)s",
    )
    number, metrics_fd = int(sys.argv[1]), int(sys.argv[2])
    config = RuntimeConfig.model_validate(json.loads(sys.stdin.buffer.readline()))
    run_process(run_agent(config, extensions=(serve_mcp,), serving=(number, metrics_fd)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
