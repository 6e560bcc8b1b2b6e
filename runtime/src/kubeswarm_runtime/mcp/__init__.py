"""The agent's MCP endpoint and JSON-RPC surface (layers: jsonrpc -> tools -> protocol -> transports -> server)."""

from .server import serve_mcp

__all__ = ["serve_mcp"]
