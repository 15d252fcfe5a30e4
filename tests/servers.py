"""Servers as real subprocesses on free loopback ports, and clients for them, shared by the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import fake_env
from tests.fake_upstream import FakeUpstream

SCRIPT = Path(sys.executable).with_name("swarm-inference-mcp")
TOKEN = "client-token-for-tests-0b9e"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The console script run once to its end (a command, or a start that is refused), with only `env` and PATH."""
    return subprocess.run(
        [SCRIPT, *args],
        env={"PATH": os.environ.get("PATH", ""), **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wait_until_up(url: str, process: subprocess.Popen[Any], what: str, log: Path | None = None) -> None:
    """Until `url` answers 200; fails if `process` (which serves it) exits first (with its log), or after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        assert process.poll() is None, log.read_text() if log is not None else f"{what} exited"
        assert time.monotonic() < deadline, f"{what} did not come up"
        time.sleep(0.05)


@contextmanager
def http_server(
    fake: FakeUpstream, tmp_path: Path, *flags: str, name: str = "server", **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The console script serving streamable HTTP on a free loopback port: (base URL, process)."""
    with http_server_at(free_port(), fake, tmp_path, *flags, name=name, **env) as served:
        yield served


@contextmanager
def http_server_at(
    port: int, fake: FakeUpstream, tmp_path: Path, *flags: str, name: str = "server", **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`http_server` on a port of the caller's (one it must know before: a public URL names it)."""
    log = (tmp_path / f"{name}.stderr").open("wb")
    process = subprocess.Popen(
        [SCRIPT, "--transport", "streamable-http", "--port", str(port), *flags],
        env={"PATH": os.environ.get("PATH", ""), "NO_PROXY": "127.0.0.1", **fake_env(fake), **env},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz", process, "the HTTP server", tmp_path / f"{name}.stderr")
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        log.close()


@contextmanager
def oauth_gateway(
    fake: FakeUpstream, tmp_path: Path, tokens: str, *flags: str, name: str = "server", **env: str
) -> Iterator[str]:
    """The gateway with OAuth on a free loopback port, its public URL its own base and its scope `mcp`,
    `tokens` its tokens file (`tmp_path / "tokens.txt"`); `env` says which OAuth. Its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text(tokens)
    oauth = {"SWARM_MCP_TOKENS_FILE": str(tokens_file), "SWARM_MCP_PUBLIC_URL": base, "SWARM_MCP_OAUTH_SCOPE": "mcp"}
    with http_server_at(port, fake, tmp_path, *flags, name=name, **oauth, **env):
        yield base


@asynccontextmanager
async def mcp_client(
    url: str, token: str | None = TOKEN, headers: dict[str, str] | None = None, mode: str = "auto", **kwargs: Any
) -> AsyncIterator[Client]:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers={**auth, **(headers or {})}, timeout=30, **kwargs) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client
