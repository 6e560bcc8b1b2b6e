"""A replica's MCP/HTTP port served by several processes (``mcp.processes``), sharing it with SO_REUSEPORT.

The first process (the one the pod starts) runs all a replica does and serves the metrics port. It starts the
others (``python -m kubeswarm_runtime.serving``), hands each its configuration on stdin (secrets never in argv or
the environment), starts again one that exits, and stops them when it stops. A serving process leaves when its
stdin closes (the first process is gone). Each serves its own metrics on a loopback socket the first process hands
it; the first process's ``/metrics`` adds their samples, labelled ``process="<n>"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from .config import RuntimeConfig

log = logging.getLogger(__name__)

# A serving process that exits is started again after this long (not in a tight loop when it cannot start).
RESTART_DELAY_SECONDS = 1.0
# How long a scrape waits for a serving process's metrics (one that does not answer is left out of that scrape).
SCRAPE_TIMEOUT_SECONDS = 2.0
PROCESS_LABEL = "process"


def config_line(config: RuntimeConfig) -> bytes:
    """The configuration as one line of JSON, secrets included: what a serving process reads on its stdin."""

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"cannot encode {type(value).__name__}")

    return json.dumps(config.model_dump(mode="python"), default=plain).encode() + b"\n"


class ServingProcesses:
    """The extra serving processes of this replica (numbered 1 .. ``mcp.processes`` - 1), kept running until stopped."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self._sockets = {n: self._metrics_socket() for n in range(1, config.mcp.processes)}
        self._running: dict[int, asyncio.subprocess.Process] = {}
        self._keepers: list[asyncio.Task[None]] = []
        self._stopping = False

    @staticmethod
    def _metrics_socket() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        return sock

    def start(self) -> None:
        self._keepers = [asyncio.create_task(self._keep(n), name=f"serving-process-{n}") for n in self._sockets]

    async def _keep(self, number: int) -> None:
        sock = self._sockets[number]
        while not self._stopping:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "kubeswarm_runtime.serving",
                str(number),
                str(sock.fileno()),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(sock.fileno(),),
            )
            self._running[number] = process
            assert process.stdin is not None
            with contextlib.suppress(ConnectionError):
                process.stdin.write(config_line(self.config))
                await process.stdin.drain()
            code = await process.wait()
            del self._running[number]
            if not self._stopping:
                log.warning("serving process %d exited (%s); starting it again in %.0fs", number, code, RESTART_DELAY_SECONDS)
                await asyncio.sleep(RESTART_DELAY_SECONDS)

    async def stop(self, grace: float) -> None:
        """SIGTERM to each (they drain like the first process), SIGKILL to one still there after ``grace`` + 5 s."""
        self._stopping = True
        for process in list(self._running.values()):
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        if self._keepers:
            _done, late = await asyncio.wait(self._keepers, timeout=grace + 5)
            for process in list(self._running.values()):
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            for keeper in late:
                keeper.cancel()
            await asyncio.gather(*self._keepers, return_exceptions=True)
        for sock in self._sockets.values():
            sock.close()

    async def scrape(self) -> list[tuple[str, str]]:
        """(process number, metrics text) of each serving process that answered."""
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def one(number: int, sock: socket.socket) -> tuple[str, str] | None:
                url = f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
                try:
                    async with session.get(url) as response:
                        return (str(number), await response.text()) if response.status == 200 else None
                except (aiohttp.ClientError, TimeoutError):
                    return None

            answers = await asyncio.gather(*(one(n, sock) for n, sock in self._sockets.items()))
        return [answer for answer in answers if answer is not None]


class MergedMetrics:
    """A registry's metrics plus those of the serving processes (their samples labelled with their number)."""

    def __init__(self, registry: CollectorRegistry, others: Iterable[tuple[str, str]]) -> None:
        self.registry = registry
        self.others = others

    def collect(self) -> Iterable[Metric]:
        families = {family.name: family for family in self.registry.collect()}
        for number, text in self.others:
            for family in text_string_to_metric_families(text):
                mine = families.get(family.name)
                if mine is None:
                    mine = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                mine.samples.extend(sample._replace(labels={**sample.labels, PROCESS_LABEL: number}) for sample in family.samples)
        return families.values()


def exposition(registry: CollectorRegistry, others: Iterable[tuple[str, str]]) -> bytes:
    return generate_latest(MergedMetrics(registry, others))
