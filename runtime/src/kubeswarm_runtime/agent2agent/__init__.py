"""The agent's A2A surface: its Agent Card and the A2A JSON-RPC methods, mapped onto the swarm's task queue
(mapping -> endpoint -> surface; the surface loads the endpoint, and the A2A SDK, on first use)."""

from .surface import A2ASurface

__all__ = ["A2ASurface"]
