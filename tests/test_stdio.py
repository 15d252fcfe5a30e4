"""The console script as a real subprocess, driven by the SDK's stdio client.

The server runs under `sh -c '... 2>err | tee out'`, so the test sees every byte it wrote to
stdout and stderr while the SDK client still talks to it over the pipe.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp_types import TextContent

from swarm_inference_mcp.server import __version__
from tests.conftest import error_of, fake_env
from tests.fake_upstream import FakeUpstream, Reply

pytestmark = pytest.mark.anyio

SCRIPT = Path(sys.executable).with_name("swarm-inference-mcp")


def teed_server(tmp_path: Path, env: dict[str, str], *args: str) -> StdioServerParameters:
    command = " ".join(shlex.quote(a) for a in (str(SCRIPT), *args))
    out, err = shlex.quote(str(tmp_path / "stdout")), shlex.quote(str(tmp_path / "stderr"))
    return StdioServerParameters(
        command="sh",
        args=["-c", f"{command} 2>{err} | tee {out}"],
        env={"PATH": os.environ.get("PATH", ""), "NO_PROXY": "127.0.0.1", **env},
    )


def assert_only_jsonrpc(stdout: str) -> list[dict[str, Any]]:
    messages = []
    for line in stdout.splitlines():
        message = json.loads(line)  # a non-JSON line fails here
        assert message.get("jsonrpc") == "2.0", line
        messages.append(message)
    assert messages
    return messages


async def test_console_script_serves_both_tools_over_stdio(tmp_path: Path, fake: FakeUpstream) -> None:
    canary_ft, canary_sw = "ft-CANARY-stdio-7f3e", "sw-CANARY-stdio-91ab"
    fake.keys.update(fortytwo=canary_ft, swarms=canary_sw)
    fake.script("swarms", Reply(status=429, json={"error": {"message": "slow down", "type": "rate_limit_exceeded"}}))
    env = fake_env(fake, SWARM_MCP_MAX_RETRIES="0")
    try:
        async with Client(teed_server(tmp_path, env)) as client:
            assert {"ask_fortytwo", "ask_swarm"} <= {t.name for t in (await client.list_tools()).tools}
            first = await client.call_tool("ask_fortytwo", {"prompt": "over stdio"})
            limited = await client.call_tool("ask_swarm", {"prompt": "over stdio"})
            second = await client.call_tool("ask_swarm", {"prompt": "over stdio", "max_loops": 2})
    finally:
        fake.keys.update(fortytwo="ft-test-key-0001", swarms="sw-test-key-0002")
    assert isinstance(first.content[0], TextContent)
    assert first.content[0].text == "fortytwo says: over stdio"
    assert error_of(limited)["kind"] == "rate_limited"
    assert not second.is_error
    assert fake.seen("swarms")[-1].body["max_loops"] == 2

    stdout = (tmp_path / "stdout").read_text()
    stderr = (tmp_path / "stderr").read_text()
    messages = assert_only_jsonrpc(stdout)
    assert any(
        m.get("result", {}).get("structuredContent", {}).get("text") == "fortytwo says: over stdio" for m in messages
    )
    for secret in (canary_ft, canary_sw):
        assert secret not in stdout
        assert secret not in stderr


async def test_stdio_progress_reaches_the_client_callback(tmp_path: Path, fake: FakeUpstream) -> None:
    updates: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, message))

    async with Client(teed_server(tmp_path, fake_env(fake))) as client:
        result = await client.call_tool(
            "ask_swarm", {"prompt": "stream this answer please"}, progress_callback=on_progress
        )
    assert not result.is_error
    assert fake.seen("swarms")[0].body["stream"] is True
    assert updates
    assert [p for p, _ in updates] == sorted({p for p, _ in updates})
    assert "Swarms" in (updates[-1][1] or "")
    assert_only_jsonrpc((tmp_path / "stdout").read_text())


def test_help_and_version_print_and_exit_without_serving() -> None:
    version = subprocess.run([SCRIPT, "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert version.stdout.strip() == f"swarm-inference-mcp {__version__}"
    usage = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, timeout=60, check=True)
    assert len(usage.stdout.splitlines()) <= 40  # a screen
    for named in ("FORTYTWO_API_KEY", "SWARMS_API_KEY", "--help-settings", "docs"):
        assert named in usage.stdout
    every = subprocess.run([SCRIPT, "--help-settings"], capture_output=True, text=True, timeout=60, check=True)
    assert "--max-retries" in every.stdout
    assert "SWARM_MCP_MAX_RETRIES" in every.stdout
    assert "api-key" not in usage.stdout + every.stdout  # keys are never flags


def test_python_dash_m_server_is_the_same_program() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "swarm_inference_mcp.server", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == f"swarm-inference-mcp {__version__}"


def test_bad_configuration_is_one_line_on_stderr_and_exit_2() -> None:
    done = subprocess.run(
        [SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "SWARM_MCP_MAX_RETRIES": "lots", "FORTYTWO_BASE_URL": "ftp://x"},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "SWARM_MCP_MAX_RETRIES" in done.stderr
    assert "FORTYTWO_BASE_URL" in done.stderr


async def test_debug_logging_keeps_the_http_librarys_own_lines_out(tmp_path: Path, fake: FakeUpstream) -> None:
    env = fake_env(fake, SWARM_MCP_LOG_LEVEL="DEBUG")
    async with Client(teed_server(tmp_path, env)) as client:
        assert not (await client.call_tool("ask_swarm", {"prompt": "debug"})).is_error
    stderr = (tmp_path / "stderr").read_text()
    assert " DEBUG " in stderr  # the level took effect
    loggers = {line.split(" ")[3].rstrip(":") for line in stderr.splitlines() if " DEBUG " in line}
    assert not loggers & {"httpx2", "httpcore2", "httpcore", "httpx"}, loggers
    assert not any(name.startswith(("httpcore2.", "httpx2.")) for name in loggers), loggers


def test_a_line_longer_than_the_limit_is_dropped_in_bounded_memory_and_serving_goes_on(fake: FakeUpstream) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "NO_PROXY": "127.0.0.1", **fake_env(fake)}
    env["SWARM_MCP_MAX_LINE_BYTES"] = "1000000"
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen([SCRIPT], env=env, **pipes) as process:  # type: ignore[call-overload]
        stdin, stdout = process.stdin, process.stdout

        def send(message: dict[str, Any]) -> None:
            stdin.write(json.dumps(message).encode() + b"\n")
            stdin.flush()

        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
        assert json.loads(stdout.readline())["id"] == 1
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        chunk = b"A" * (1 << 20)
        for _ in range(400):  # 400 MiB without a newline
            stdin.write(chunk)
        stdin.flush()
        status = Path(f"/proc/{process.pid}/status").read_text()
        rss_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
        assert rss_kib < 200 * 1024, rss_kib
        stdin.write(b"\n")
        params = {"name": "ask_swarm", "arguments": {"prompt": "still serving"}}
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params})
        reply = json.loads(stdout.readline())
        stdin.close()
        process.wait(timeout=30)
        stderr = process.stderr.read().decode()
    assert reply["id"] == 2
    assert reply["result"]["content"][0]["text"] == "swarms says: still serving"
    assert "dropped a line of stdin longer than 1000000 bytes" in stderr
