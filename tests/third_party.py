"""Clients no one on this project wrote, installed by the test run from the package registries.

They go into a cache outside the repository (`$XDG_CACHE_HOME/swarm-inference-mcp-tests`, or
`~/.cache/...`), once per pinned version: a directory is used only after its install finished
(it is built beside its final name and renamed into place), so an interrupted run never leaves a
half-installed client behind for the next one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TS_SDK = "@modelcontextprotocol/sdk@1.32.2"
"""The TypeScript SDK generation most desktop and IDE hosts embed."""
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
OIDC_PROVIDER = "oidc-provider@9.13.3"
TS_V2 = "@modelcontextprotocol/client@2.4.0"
"""The TypeScript SDK v2, what new hosts embed (2026-07-28)."""
EXT_TASKS = "@modelcontextprotocol/ext-tasks@0.2.2"
"""The Tasks extension's requester for both generations, as Claude Code runs long calls."""
MCPB = "@anthropic-ai/mcpb@2.1.2"
"""The MCP Bundle tool and library: validates and packs a bundle, and does what a host does to start one."""
MCP1 = "mcp==1.30.0"
"""The last Python SDK of the 1.x line, still pinned by many agent frameworks."""
PYDANTIC_AI = "pydantic-ai-slim[mcp]==2.68.0"
"""pydantic-ai's MCP toolset, which shows structured content in place of the text when there is any."""
MIN_NODE = 18
INSTALL_TIMEOUT_S = 600

CLIENTS_DIR = Path(__file__).parent / "clients"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "swarm-inference-mcp-tests"


def node() -> str:
    """The machine's `node`, at least version 18; the test fails (never skips) without it."""
    found = shutil.which("node")
    if found is None:
        pytest.fail("The cross-client tests need Node.js: install Node 18 or newer (node and npm on PATH).")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    match = re.match(r"v(\d+)", version.strip())
    if match is None or int(match.group(1)) < MIN_NODE:
        pytest.fail(f"The cross-client tests need Node 18 or newer; this machine has {version.strip()}.")
    return found


def _install(name: str, build: list[list[str]]) -> Path:
    """Run `build` (commands with `{dir}` for the target) once; reuse the finished directory after."""
    final = cache_dir() / name
    if final.is_dir():
        return final
    building = final.with_name(final.name + f".building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    for command in build:
        argv = [part.replace("{dir}", str(building)) for part in command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
        if done.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            pytest.fail(f"installing {name} failed: {' '.join(argv)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    building.rename(final)
    return final


def npm_clients() -> Path:
    """A directory whose node_modules holds the pinned TypeScript SDK and MCP Inspector."""
    return _npm(TS_SDK, INSPECTOR)


def npm_v2_clients() -> Path:
    """A directory whose node_modules holds the TypeScript SDK v2 client and the ext-tasks requester
    (ESM packages: a driver runs from inside this directory, see `v2_driver`)."""
    return _npm(TS_V2, EXT_TASKS)


def npm_oidc_provider() -> Path:
    """A directory whose node_modules holds the pinned `oidc-provider` (an OpenID Certified provider, ESM:
    its driver runs from inside this directory, see `esm_driver`)."""
    return _npm(OIDC_PROVIDER)


def npm_mcpb() -> Path:
    """A directory whose node_modules holds the pinned MCPB tool (`node_modules/.bin/mcpb`)."""
    return _npm(MCPB)


def _npm(*packages: str) -> Path:
    node()
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("The cross-client tests need npm beside Node.js (Node 18 or newer).")
    tag = re.sub(r"[^A-Za-z0-9.]+", "-", "-".join(packages)).strip("-")
    command = [npm, "install", "--prefix", "{dir}", "--no-audit", "--no-fund", "--ignore-scripts", *packages]
    return _install(f"npm-{tag}", [command])


def v2_driver(installed: Path) -> Path:
    """`clients/ts_v2_client.mjs`, copied beside the packages it imports (ESM resolves from the file)."""
    return esm_driver(installed, "ts_v2_client.mjs")


def esm_driver(installed: Path, name: str) -> Path:
    """`clients/<name>`, copied beside the packages it imports (ESM resolves imports from the file)."""
    driver = installed / name
    shutil.copyfile(CLIENTS_DIR / name, driver)
    return driver


def mcp1_python() -> Path:
    """The Python of a virtual environment that holds the pinned `mcp` 1.x client."""
    return _venv(MCP1)


def pydantic_ai_python() -> Path:
    """The Python of a virtual environment that holds the pinned pydantic-ai MCP toolset."""
    return _venv(PYDANTIC_AI)


def _venv(requirement: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9.]+", "-", requirement).strip("-")
    venv = _install(
        name, [[sys.executable, "-m", "venv", "{dir}"], ["{dir}/bin/python", "-m", "pip", "install", "-q", requirement]]
    )
    return venv / "bin" / "python"
