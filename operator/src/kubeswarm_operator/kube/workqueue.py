"""The operator's one work queue (Agents and Swarms alike) and its one retry backoff.

Like controller-runtime's: a key, not an object, is queued, and its run reads
the latest watched body, so requests for a key already queued collapse into
one run; a sooner request brings a queued run forward (a child's event must
not wait behind a settle recheck); at most ``slots`` runs at a time; a failed
run is retried after :func:`backoff`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .kinds import Key

log = logging.getLogger(__name__)

RETRY_MAX_SECONDS = 60.0


def backoff(attempt: int, base: float = 2.0, cap: float = RETRY_MAX_SECONDS) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): ``base``, twice that, four times ..., at most ``cap``."""
    return float(min(cap, base * 2.0 ** (attempt - 1)))


class WorkQueue:
    def __init__(
        self,
        what: str,
        run: Callable[[Key], Awaitable[None]],
        slots: int,
        *,
        expected: tuple[type[Exception], ...] = (),
    ) -> None:
        """``run`` one key at a time, at most ``slots`` keys at once; after a failure again while the key is watched.

        ``expected`` failures (e.g. an unreachable NATS, reported in a condition already) are logged without a traceback.
        """
        self.what = what
        self.run = run
        self.slots = asyncio.Semaphore(slots)
        self.expected = expected
        self._versions: dict[Key, object] = {}  # (uid, generation) of each watched key, as last queued for its spec
        self._queued: dict[Key, asyncio.Task[None]] = {}
        self._due: dict[Key, float] = {}  # when each queued run starts (event loop time)
        self._failures: dict[Key, int] = {}  # consecutive failed runs, for the backoff

    def enqueue(self, key: Key, delay: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        queued = self._queued.get(key)
        if queued is not None:
            if self._due[key] <= due:
                return
            queued.cancel()  # not started yet: a run takes itself off the queue before it starts
        self._due[key] = due
        self._queued[key] = loop.create_task(self._run_queued(key, delay))

    def observe(self, key: Key, version: object) -> None:
        """A watch event of ``key``: run it now if it is new or its spec changed (``version``: its uid and generation).

        Its own status writes (and metadata edits) leave the generation as it
        was: nothing to do for them, what it owns depends on the spec alone.
        """
        if self._versions.get(key) != version:
            self._versions[key] = version
            self.enqueue(key, 0)

    def forget(self, key: Key) -> None:
        """``key`` was deleted: no more retries."""
        self._versions.pop(key, None)
        self._failures.pop(key, None)

    async def close(self) -> None:
        for task in self._queued.values():
            task.cancel()
        await asyncio.gather(*self._queued.values(), return_exceptions=True)

    async def _run_queued(self, key: Key, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self.slots:
            # Off the queue only once a slot is free: requests meanwhile collapse into this run, which reads the latest body.
            del self._queued[key]
            del self._due[key]
            try:
                await self.run(key)
            except Exception as error:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                if isinstance(error, self.expected):
                    log.info("reconciling %s %s/%s: %s (attempt %d)", self.what, *key, error, failures)
                else:
                    log.exception("reconciling %s %s/%s failed (attempt %d)", self.what, *key, failures)
                if key in self._versions:
                    self.enqueue(key, backoff(failures))
            else:
                self._failures.pop(key, None)
