"""Helpers of the tool-loop tests: the scripted stand-in model in process, the SDK-built MCP server as a process."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from kubeswarm_runtime.config import ModelConfig

from examples.tools.scripted_model import REQUESTS, Script, build_app
from tests.testbed.procs import ManagedProcess, free_port, port_accepts


@asynccontextmanager
async def scripted_model(script: Script) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """The stand-in model API on 127.0.0.1: its base URL and the requests it answered."""
    app = build_app(script)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", app[REQUESTS]
    finally:
        await runner.cleanup()


def model_config(provider: str, url: str, name: str, **fields: Any) -> ModelConfig:
    """A provider pointed at the stand-in: the endpoint each client expects (OpenAI's base URL ends in /v1)."""
    endpoint = f"{url}/v1" if provider == "openai" else url
    extra: dict[str, Any] = {"region": "eu-west-1"} if provider == "bedrock" else {"api_key": "sk-test"}
    return ModelConfig(provider=provider, name=name, endpoint=endpoint, retry_base_seconds=0.01, **(extra | fields))


def model_env(provider: str, url: str, name: str) -> dict[str, str]:
    """The same, as a runtime process's environment."""
    config = model_config(provider, url, name)
    env = {"KUBESWARM_MODEL__PROVIDER": provider, "KUBESWARM_MODEL__NAME": name, "KUBESWARM_MODEL__ENDPOINT": config.endpoint or ""}
    if config.region:
        env["KUBESWARM_MODEL__REGION"] = config.region
    if config.api_key:
        env["KUBESWARM_MODEL__API_KEY"] = config.api_key.get_secret_value()
    return env


@contextmanager
def example_server(module: str, log_dir: Path, *args: str) -> Iterator[int]:
    """An example server of examples/tools as a process, on a free port (given as --port); yields the port."""
    port = free_port()
    name = f"{module.rsplit('.', 1)[-1]}-{port}"
    process = ManagedProcess(name, [sys.executable, "-m", module, "--port", str(port), *args], log_dir / f"{name}.log")
    process.start()
    try:
        process.wait_until(lambda: port_accepts(port), 30, "accepting connections")
        yield port
    finally:
        process.stop()


@contextmanager
def weather_server(log_dir: Path, transport: str = "streamable-http") -> Iterator[str]:
    """The example MCP server (official SDK) as a process; yields its endpoint URL."""
    with example_server("examples.tools.weather_mcp", log_dir, "--transport", transport) as port:
        yield f"http://127.0.0.1:{port}/{'sse' if transport == 'sse' else 'mcp'}"
