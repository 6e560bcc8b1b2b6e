"""Cron triggers (``spec.triggers.cron``): tasks on a schedule (docs/triggers.md; webhooks are in ``webhooks``).

Every replica keeps the schedule, and each tick's task has an id made of the agent, the trigger and the
tick's time, so the replicas' copies are one task (the tasks bucket's create and the stream's ``Nats-Msg-Id``
dedup). On start, a replica also creates the last tick if it is younger than the stream's dedup window: a tick
that fell while every replica was restarting is run once, not lost, and not run twice.

"""

from __future__ import annotations

import asyncio
import logging
import time
import zoneinfo
from collections.abc import Callable
from datetime import datetime, timedelta

import nats
from cronsim import CronSim

from .config import CronTriggerConfig, RuntimeConfig
from .tasks import TaskRecord, TaskService

log = logging.getLogger(__name__)

# A tick's task that could not be queued (NATS away) is tried again this often until the next tick.
RETRY_SECONDS = 1.0


def tick_task_id(agent: str, trigger: str, tick: datetime) -> str:
    """The one task of a tick, whichever replica creates it."""
    return f"cron-{agent}-{trigger}-{int(tick.timestamp())}"


def next_tick(trigger: CronTriggerConfig, after: datetime) -> datetime:
    return next(iter(CronSim(trigger.schedule, after.astimezone(zoneinfo.ZoneInfo(trigger.time_zone)))))


def last_tick(trigger: CronTriggerConfig, at: datetime) -> datetime:
    """The latest tick at or before ``at``."""
    zone = zoneinfo.ZoneInfo(trigger.time_zone)
    # CronSim looks strictly before its start: start a minute on, then keep what is not after ``at``.
    for tick in CronSim(trigger.schedule, (at + timedelta(minutes=1)).astimezone(zone), reverse=True):
        if tick <= at:
            return tick
    raise AssertionError("unreachable: a valid schedule has ticks in the past")


class CronTriggers:
    def __init__(self, tasks: TaskService, config: RuntimeConfig, clock: Callable[[], float] = time.time) -> None:
        self.tasks = tasks
        self.config = config
        self.clock = clock
        self._loops: list[asyncio.Task[None]] = []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock()).astimezone()

    async def fire(self, trigger: CronTriggerConfig, tick: datetime) -> TaskRecord:
        return await self.tasks.create(trigger.capability, trigger.input, task_id=tick_task_id(self.config.agent, trigger.name, tick))

    def start(self) -> None:
        self._loops = [asyncio.create_task(self._run(t), name=f"cron-{t.name}") for t in self.config.triggers.cron]

    async def _run(self, trigger: CronTriggerConfig) -> None:
        try:
            await self.catch_up(trigger)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("cron trigger %s: catching up failed: %s", trigger.name, exc)
        tick = next_tick(trigger, self.now())
        while True:
            await asyncio.sleep(max(0.0, tick.timestamp() - self.clock()))
            following = next_tick(trigger, tick)
            while True:
                try:
                    record = await self.fire(trigger, tick)
                    log.info("cron trigger %s: tick %s is task %s", trigger.name, tick.isoformat(), record.id)
                    break
                except (TimeoutError, nats.errors.Error) as exc:
                    if self.clock() + RETRY_SECONDS >= following.timestamp():
                        log.error("cron trigger %s: tick %s could not be queued: %s", trigger.name, tick.isoformat(), exc)
                        break
                    await asyncio.sleep(RETRY_SECONDS)
            tick = following

    async def catch_up(self, trigger: CronTriggerConfig) -> TaskRecord | None:
        """The trigger's last tick, if younger than the dedup window: created (once, whoever else creates it too)."""
        now = self.now()
        tick = last_tick(trigger, now)
        if now - tick <= timedelta(seconds=self.config.streams.duplicate_window_seconds):
            return await self.fire(trigger, tick)
        return None

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
