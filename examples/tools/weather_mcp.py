"""An MCP server built with the official SDK, for the tools example and tests: a forecast, and a tool that hangs.

    python -m examples.tools.weather_mcp --port 8500 [--transport streamable-http|sse]

Serves /mcp (streamable HTTP) or /sse + /messages/ (the 2024 HTTP+SSE transport).
"""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("weather", instructions="Forecasts for the tools example.")


@server.tool()
def forecast(city: str) -> str:
    """Tomorrow's weather in a city."""
    if not city.strip():
        raise ValueError("city must not be empty")
    return f"{city}: sunny, 21°C, light wind from the west"


@server.tool()
async def hang(seconds: float = 3600) -> str:
    """Answers after a long time (tests a tool server that hangs)."""
    await asyncio.sleep(seconds)
    return "finally"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    args = parser.parse_args()
    app = server.sse_app() if args.transport == "sse" else server.streamable_http_app()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
