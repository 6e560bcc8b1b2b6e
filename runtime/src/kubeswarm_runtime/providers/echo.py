"""The default handler: offline and deterministic, for local mode, demos and tests.

Besides echoing, it can simulate work so the delivery guarantees can be seen
without a model: ``{"sleep": s}`` takes s seconds, ``{"fail": "permanent"}``
fails for good, ``{"fail_attempts": n}`` fails the first n deliveries.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .base import PermanentTaskError, TaskContext


class EchoHandler:
    async def handle(self, ctx: TaskContext) -> Any:
        spec = ctx.input if isinstance(ctx.input, dict) else {}
        if spec.get("sleep"):
            await asyncio.sleep(float(spec["sleep"]))
        if spec.get("fail") == "permanent":
            raise PermanentTaskError("echo: asked to fail permanently")
        if ctx.attempt <= int(spec.get("fail_attempts", 0)):
            raise RuntimeError(f"echo: asked to fail attempt {ctx.attempt}")
        return {"echo": ctx.input, "agent": ctx.agent, "capability": ctx.capability}

    async def close(self) -> None:
        return None
