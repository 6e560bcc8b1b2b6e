"""The A2A routes are added without the A2A SDK, and name what the SDK and the endpoint do."""

from __future__ import annotations

import subprocess
import sys

import pytest
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH

pytestmark = pytest.mark.unit


def test_the_surfaces_names_are_the_sdks_and_the_endpoints() -> None:
    # After the MCP server, as the runtime loads them (the server assembles the A2A surface from MCP's parts).
    import kubeswarm_runtime.mcp  # noqa: F401
    from kubeswarm_runtime.agent2agent import endpoint, surface

    assert surface.CARD_PATH == AGENT_CARD_WELL_KNOWN_PATH
    assert set(surface.METHODS) == set(endpoint.REQUEST_TYPES)


def test_an_agent_process_serving_mcp_and_a2a_has_not_loaded_the_a2a_sdk() -> None:
    probe = (
        "import sys, kubeswarm_runtime.app, kubeswarm_runtime.mcp.server; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('a2a', 'google')))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
