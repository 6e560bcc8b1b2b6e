"""What the CLI prints: tables, JSON or YAML of the same rows, times as ISO 8601 (UTC), and MCP client configurations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import yaml

# Fields holding epoch seconds in the runtime's records; printed as ISO 8601.
TIME_FIELDS = frozenset({"created_at", "updated_at", "started_at", "finished_at", "last_seen", "at", "dead_at"})


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def iso(epoch: float | None) -> str:
    """``2026-12-04T19:30:00.123Z``; ``-`` for no time."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def with_iso_times(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (iso(v) if k in TIME_FIELDS and isinstance(v, int | float) else v) for k, v in record.items()}


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows])


def dump(data: Any, fmt: Format) -> str:
    """``data`` (records with epoch times) as JSON or YAML, times in ISO 8601."""
    shaped = [with_iso_times(d) for d in data] if isinstance(data, list) else with_iso_times(data)
    if fmt is Format.YAML:
        return yaml.safe_dump(shaped, sort_keys=False, allow_unicode=True).rstrip("\n")
    return json.dumps(shaped, indent=2, ensure_ascii=False)


def shorten(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# MCP clients and the JSON each reads (as `thv client setup` writes them): where it goes, and its shape.
MCP_CLIENTS = {
    "claude-code": "Claude Code: .mcp.json in the project (or `claude mcp add --transport http <name> <url>`)",
    "claude-desktop": "Claude Desktop: claude_desktop_config.json (remote servers through the mcp-remote bridge)",
    "cursor": "Cursor: ~/.cursor/mcp.json or .cursor/mcp.json",
    "vscode": "VS Code: .vscode/mcp.json (or the mcp section of settings.json)",
}


def mcp_client_config(client: str, name: str, url: str, token: str | None = None) -> dict[str, Any]:
    """The configuration entry a client needs to reach the MCP endpoint ``url`` as server ``name``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if client == "claude-desktop":
        args = ["-y", "mcp-remote", url] + (["--header", f"Authorization: Bearer {token}"] if token else [])
        return {"mcpServers": {name: {"command": "npx", "args": args}}}
    server: dict[str, Any] = {"url": url} if client == "cursor" else {"type": "http", "url": url}
    if headers:
        server["headers"] = headers
    return {"servers": {name: server}} if client == "vscode" else {"mcpServers": {name: server}}
