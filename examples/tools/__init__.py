"""The tools example (docs/tools.md): a scripted stand-in model and an MCP server built with the official SDK."""
