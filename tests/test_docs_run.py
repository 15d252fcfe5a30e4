"""Every shell block of docs/gateway.md, docs/redis.md and docs/install.md runs as written, in bash
and in zsh: with a fresh home, the files the docs tell the reader to create, loopback addresses, a
free port for each fixed one and the test Redis for the docs' Redis host."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from tests.redis_server import RedisServer
from tests.servers import free_port
from tests.test_install import clone

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
SHELLS = ("bash", "zsh")
SERVING = ("docs/gateway.md", "docs/redis.md")


def blocks(page: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", (ROOT / page).read_text(), re.DOTALL)


def shell(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed (Debian: apt-get install {name}); .ci/run installs it"
    return found


def environment(home: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {"PATH": f"{venv_bin}:{os.environ['PATH']}", "HOME": str(home), "NO_PROXY": "127.0.0.1"}


@pytest.mark.parametrize("name", SHELLS)
def test_the_server_blocks_serve(name: str, tmp_path: Path, redis_server: RedisServer) -> None:
    """Each block that starts a server starts one that answers /healthz; the one before it makes the token."""
    found = [(page, block) for page in SERVING for block in blocks(page)]
    assert len(found) >= 2
    for page, block in found:
        port = free_port()
        script = re.sub(r"--port \d+", f"--port {port}", block)
        script = script.replace("redis://redis.internal:6379/0", redis_server.url)
        log = (tmp_path / f"{name}-{port}.log").open("wb")
        process = subprocess.Popen(
            [shell(name), "-c", script],
            cwd=tmp_path,
            env=environment(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            deadline, up = time.monotonic() + 30, False
            while not up and time.monotonic() < deadline and process.poll() is None:
                try:
                    up = httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
                except httpx2.TransportError:
                    time.sleep(0.2)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
            log.close()
        said = (tmp_path / f"{name}-{port}.log").read_text()
        assert up, f"{page} in {name}:\n{script}\n{said[-2000:]}"
    assert (tmp_path / ".config" / "swarm-mcp-token").stat().st_mode & 0o077 == 0  # the token is yours alone


@pytest.mark.parametrize("name", SHELLS)
def test_the_install_blocks_build_and_check_the_package(name: str, tmp_path: Path) -> None:
    """docs/install.md's build, check and bundle lines, in a clone of their own."""
    where = clone(tmp_path / "clone")
    found = blocks("docs/install.md")
    assert found
    for block in found:
        done = subprocess.run(
            [shell(name), "-c", block],
            cwd=where,
            env={**environment(tmp_path), "HOME": os.environ.get("HOME", str(tmp_path))},  # npx's cache
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"{block}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert sorted(path.suffix for path in (where / "dist").iterdir()) == [".gz", ".mcpb", ".whl"]
