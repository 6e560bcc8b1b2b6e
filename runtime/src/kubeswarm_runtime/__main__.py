"""``python -m kubeswarm_runtime``: run one agent from the KUBESWARM_* environment."""

from __future__ import annotations

import logging
import os
import sys

from .app import run_agent, run_process
from .config import ConfigError, load_config
from .mcp import serve_mcp


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("KUBESWARM_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    run_process(run_agent(config, extensions=(serve_mcp,)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
