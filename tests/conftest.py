"""Fixtures shared by every test: the loopback fake upstream, settings pointing at it, a clean env."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult

from swarm_inference_mcp.server.app import create_server
from swarm_inference_mcp.server.config import Settings
from swarm_inference_mcp.server.environment import load_settings
from tests.fake_upstream import FakeUpstream

ENV_PREFIXES = ("FORTYTWO_", "SWARMS_", "SWARM_MCP_")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


ERROR_META = "swarm-inference-mcp/error"
TRACE_META = "swarm-inference-mcp/trace"


def trace_of(result: CallToolResult, provider: str) -> dict[str, Any]:
    """How a provider's answer came about (model, completion id, latency, attempts): in `_meta`, not in
    the structured content that every client checks on every call."""
    assert result.meta is not None, result.content
    trace = result.meta[TRACE_META][provider]
    assert isinstance(trace, dict)
    return trace


def error_of(result: CallToolResult) -> dict[str, Any]:
    """An error result's structured form. Error results carry none as structured content (TypeScript
    clients would check it against the tool's output schema), only in `_meta`."""
    assert result.is_error, result.content
    assert result.structured_content is None
    assert result.meta is not None
    error = result.meta[ERROR_META]
    assert isinstance(error, dict)
    return error


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The developer's shell must not reach a test: no real keys, no proxies, no overrides, and no
    usage state file of theirs (each test's default state directory is its own)."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES) or name in PROXY_VARS:
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Redis on loopback (`tests.redis_server.RedisServer`), for the tests of instances sharing one."""
    from tests.redis_server import RedisServer  # noqa: PLC0415 - it imports helpers that import this module

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeUpstream) -> FakeUpstream:
    fake_server.reset()
    return fake_server


def fake_env(fake: FakeUpstream, **extra: str) -> dict[str, str]:
    """Environment variables that point the server at the fake upstream with the right keys."""
    env = {
        "FORTYTWO_API_KEY": fake.keys["fortytwo"],
        "FORTYTWO_BASE_URL": fake.url("fortytwo"),
        "SWARMS_API_KEY": fake.keys["swarms"],
        "SWARMS_BASE_URL": fake.url("swarms"),
        "SWARM_MCP_HEARTBEAT": "5",
        "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"],
    }
    env.update(extra)
    return env


@pytest.fixture
def make_settings(fake: FakeUpstream) -> Callable[..., Settings]:
    def make(**extra: str) -> Settings:
        return load_settings(fake_env(fake, **extra))

    return make


class MovableClock:
    """A monotonic clock a test moves on (`advance`) instead of waiting: `connect(clock=...)`."""

    def __init__(self) -> None:
        self._offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds


@pytest.fixture
def connect(make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    """`async with connect(SWARM_MCP_MAX_RETRIES="0") as client:` — an in-process MCP client."""

    @asynccontextmanager
    async def open_client(
        *, mode: str = "auto", clock: Callable[[], float] = time.monotonic, **extra: str
    ) -> AsyncIterator[Client]:
        async with Client(create_server(make_settings(**extra), clock=clock), mode=mode) as client:
            yield client

    return open_client
