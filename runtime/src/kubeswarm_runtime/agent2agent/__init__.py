"""The agent's A2A surface: its Agent Card and the A2A JSON-RPC methods, mapped onto the swarm's task queue (mapping -> endpoint)."""

from .endpoint import A2AEndpoint

__all__ = ["A2AEndpoint"]
