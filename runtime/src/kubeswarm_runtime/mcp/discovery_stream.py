"""``/sse/discoveries``: the swarm's discoveries as Server-Sent Events.

Query: ``agent``, ``type``, ``min_confidence`` filter; ``replay`` (default
10) first sends the latest discoveries. ``Last-Event-ID`` (or ``since``), a
stream sequence, resumes right after it instead, so a dropped connection
loses nothing. Live events come from the process-wide fan-out.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from aiohttp import web

from ..config import McpConfig
from ..runtime import AgentRuntime
from .fanout import DiscoveryEvent, DiscoveryFanout, DiscoveryFilter, discovery_event
from .http import CLIENT_GONE, KEEPALIVE, RECONNECT_MS, SseStream, sse_event
from .routes import Routes
from .security import Guard, StreamSlots

DEFAULT_REPLAY = 10
REPLAY_PAGE = 500
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _frame(event: DiscoveryEvent) -> bytes:
    return sse_event(event.json, event="discovery", event_id=str(event.seq))


def _query(request: web.Request) -> tuple[DiscoveryFilter, int | None, int]:
    """The filter, the sequence to resume after (if any) and how many latest to replay; 400 when malformed."""
    query = request.query
    try:
        agent, kind = query.get("agent"), query.get("type")
        for name, value in (("agent", agent), ("type", kind)):
            if value is not None and not _TOKEN.match(value):
                raise ValueError(f"{name} may only hold letters, digits, '-' and '_'")
        min_confidence = float(query.get("min_confidence", 0))
        if not 0 <= min_confidence <= 1:
            raise ValueError("min_confidence must be between 0 and 1")
        resume = request.headers.get("Last-Event-ID") or query.get("since")
        since = int(resume) if resume is not None else None
        replay = int(query.get("replay", DEFAULT_REPLAY))
        if (since is not None and since < 0) or replay < 0:
            raise ValueError("since and replay must not be negative")
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"bad query: {exc}") from None
    return DiscoveryFilter(agent, kind, min_confidence), since, replay


@dataclass
class DiscoveryStream:
    runtime: AgentRuntime
    fanout: DiscoveryFanout
    guard: Guard
    slots: StreamSlots
    config: McpConfig

    def add_routes(self, routes: Routes) -> None:
        routes.add_get("/sse/discoveries", self.stream)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        await self.guard.admit(request)
        filter, since, replay = _query(request)
        if not self.runtime.started:
            raise web.HTTPServiceUnavailable(text="not connected to the swarm yet", headers={"Retry-After": "1"})
        with self.slots.hold():
            # Subscribe before reading history: whatever is published meanwhile is queued, duplicates are skipped by seq.
            subscriber = await self.fanout.subscribe(filter)
            try:
                info = await self.runtime.conn.js.stream_info(self.runtime.swarm.names.discoveries_stream)
                stored = info.state.last_seq or 0
                since = max(0, stored - replay) if since is None else since
                stream = await SseStream.open(request, self.config.write_timeout_seconds)
                await stream.send(b"retry: " + str(RECONNECT_MS).encode() + b"\n\n")
                async with asyncio.timeout(self.config.timeout_seconds):
                    # Only a stream with something to replay costs a consumer of its own.
                    last = await self._replay(stream, filter, since) if since < stored else since
                    while not (subscriber.overflowed and subscriber.queue.empty()):
                        try:
                            async with asyncio.timeout(self.config.keepalive_seconds):
                                event = await subscriber.queue.get()
                        except TimeoutError:
                            await stream.send(KEEPALIVE)
                            continue
                        if event.seq > last:
                            await stream.send(_frame(event))
                            last = event.seq
            except CLIENT_GONE:
                pass
            finally:
                self.fanout.unsubscribe(subscriber)
            return stream.response

    async def _replay(self, stream: SseStream, filter: DiscoveryFilter, since: int) -> int:
        """Send the stored discoveries after ``since``; the last sequence read."""
        discoveries = self.runtime.swarm.discoveries
        while True:
            page = await discoveries.page(agent=filter.agent, type=filter.type, since_seq=since, limit=REPLAY_PAGE)
            for discovery in page.discoveries:
                if filter.matches(discovery):
                    await stream.send(_frame(discovery_event(discovery)))
            since = page.last_seq  # past unreadable records too
            if not page.more:
                return since
