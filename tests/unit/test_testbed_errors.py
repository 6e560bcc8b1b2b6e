"""Errors of the test bed that a new user must be able to act on."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from tests.testbed import build
from tests.testbed.procs import ManagedProcess, TestbedError, free_port

pytestmark = pytest.mark.unit


def test_missing_go_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(build.BuildError, match=r"no `go` is on PATH: install Go"):
        build.go_binary()


def test_failed_build_points_at_its_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    with pytest.raises(build.BuildError) as error:
        build._run_logged([sys.executable, "-c", "import sys; print('compile error: boom'); sys.exit(2)"], tmp_path, log, "thing v1")
    assert f"full log: {log}" in str(error.value)
    assert "compile error: boom" in str(error.value)


def test_port_in_use_is_named(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        process = ManagedProcess("etcd", [sys.executable, "-c", "pass"], tmp_path / "etcd.log", [port])
        with pytest.raises(TestbedError, match=rf"etcd: port {port} on 127.0.0.1 is already in use"):
            process.start()


def test_component_that_never_gets_healthy_shows_log_tail(tmp_path: Path) -> None:
    script = "import time; print('listening failed: permission denied', flush=True); time.sleep(60)"
    process = ManagedProcess("kube-apiserver", [sys.executable, "-c", script], tmp_path / "apiserver.log")
    process.start()
    try:
        with pytest.raises(TestbedError) as error:
            process.wait_until(lambda: (tmp_path / "never").exists(), timeout=1.0)
        message = str(error.value)
        assert "kube-apiserver did not become healthy within 1s" in message
        assert "listening failed: permission denied" in message
    finally:
        process.stop()
    assert not process.running()


def test_component_that_exits_shows_log_tail(tmp_path: Path) -> None:
    process = ManagedProcess("kwok", [sys.executable, "-c", "print('bad flag --x'); raise SystemExit(1)"], tmp_path / "kwok.log")
    process.start()
    with pytest.raises(TestbedError, match=r"(?s)kwok exited before it was healthy.*bad flag --x"):
        process.wait_until(lambda: False, timeout=10)
