"""The streamable HTTP transport, as a real subprocess on a free loopback port, driven by the
SDK's streamable HTTP client against the loopback fake upstream."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp_types import CallToolResult, TextContent

from tests.conftest import error_of, fake_env
from tests.fake_upstream import FakeUpstream, Reply, eventually
from tests.servers import SCRIPT, TOKEN, free_port, http_server, mcp_client

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def test_tool_call_with_the_right_token(fake: FakeUpstream, tmp_path: Path) -> None:
    with http_server(fake, tmp_path, SWARM_MCP_TOKEN=TOKEN) as (base, _):
        async with mcp_client(f"{base}/mcp") as client:
            result = await client.call_tool("ask_swarm", {"prompt": "over http"})
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert block.text == "swarms says: over http"
    (request,) = fake.seen("swarms")
    assert request.headers["x-api-key"] == fake.keys["swarms"]
    assert TOKEN not in str(request.headers)  # the client's token is never passed upstream


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_missing_or_wrong_token_gets_401_and_nothing_reaches_upstream(
    fake: FakeUpstream, tmp_path: Path, token: str | None
) -> None:
    with http_server(fake, tmp_path, SWARM_MCP_TOKEN=TOKEN) as (base, _):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "ask_swarm", "arguments": {}}}
        response = httpx2.post(
            f"{base}/mcp",
            json=body,
            headers={**headers, "Accept": "application/json, text/event-stream"},
            timeout=10,
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        with pytest.raises(Exception):  # noqa: B017, PT011 - the SDK client surfaces the 401 in its own way
            async with mcp_client(f"{base}/mcp", token=token) as client:
                await client.call_tool("ask_swarm", {"prompt": "should not pass"})
    assert fake.seen() == []


async def test_token_file_is_read(fake: FakeUpstream, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with http_server(fake, tmp_path, SWARM_MCP_TOKEN_FILE=str(token_file)) as (base, _):
        assert httpx2.get(f"{base}/mcp", timeout=10).status_code == 401
        async with mcp_client(f"{base}/mcp") as client:
            assert len((await client.list_tools()).tools) >= 2


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"Origin": "http://evil.example"}, 403), ({"Host": "evil.example:8000"}, 421)],
)
async def test_foreign_origin_and_host_are_refused(
    fake: FakeUpstream, tmp_path: Path, headers: dict[str, str], status: int
) -> None:
    with http_server(fake, tmp_path, SWARM_MCP_TOKEN=TOKEN) as (base, _):
        response = httpx2.post(
            f"{base}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream", **headers},
            timeout=10,
        )
        assert response.status_code == status
        configured = httpx2.post(
            f"{base}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json", **headers},
            timeout=10,
        )
        assert configured.status_code == status
    assert fake.seen() == []


async def test_configured_origin_is_allowed(fake: FakeUpstream, tmp_path: Path) -> None:
    origin = "https://assistant.example"
    with http_server(fake, tmp_path, SWARM_MCP_TOKEN=TOKEN, SWARM_MCP_ALLOWED_ORIGINS=origin) as (base, _):
        async with mcp_client(f"{base}/mcp", headers={"Origin": origin}) as client:
            assert len((await client.list_tools()).tools) >= 2


async def test_health_endpoint_needs_no_token_and_reveals_nothing(fake: FakeUpstream, tmp_path: Path) -> None:
    with http_server(fake, tmp_path, SWARM_MCP_TOKEN=TOKEN) as (base, _):
        response = httpx2.get(f"{base}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    for secret in (TOKEN, fake.keys["fortytwo"], fake.keys["swarms"], "fortytwo", "swarms", str(fake.port)):
        assert secret not in response.text


async def test_oversized_body_is_refused(fake: FakeUpstream, tmp_path: Path) -> None:
    with http_server(fake, tmp_path, SWARM_MCP_TOKEN=TOKEN, SWARM_MCP_MAX_BODY_BYTES="2048") as (base, _):
        response = httpx2.post(
            f"{base}/mcp",
            content=b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"x": "' + b"a" * 10_000 + b'"}}',
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
            },
            timeout=10,
        )
    assert response.status_code == 413
    assert fake.seen() == []


def test_non_loopback_bind_without_token_refuses_to_start(fake: FakeUpstream) -> None:
    done = subprocess.run(
        [SCRIPT, "--transport", "streamable-http", "--host", "0.0.0.0", "--port", str(free_port())],
        env={"PATH": os.environ.get("PATH", ""), **fake_env(fake)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "SWARM_MCP_TOKEN" in done.stderr
    assert done.stdout == ""


class RoundRobin(httpx2.AsyncBaseTransport):
    """A load balancer in the client: each request goes to the next instance in turn."""

    def __init__(self, ports: list[int]) -> None:
        self._ports = ports
        self._next = 0
        self._inner = httpx2.AsyncHTTPTransport()
        self.sent: list[int] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = self._ports[self._next % len(self._ports)]
        self._next += 1
        self.sent.append(port)
        request.url = request.url.copy_with(port=port)
        request.headers["Host"] = f"127.0.0.1:{port}"
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_two_stateless_instances_answer_alternating_requests(fake: FakeUpstream, tmp_path: Path) -> None:
    with (
        http_server(fake, tmp_path, "--stateless", name="a", SWARM_MCP_TOKEN=TOKEN, SWARMS_MODEL="model-a") as (a, _),
        http_server(fake, tmp_path, "--stateless", name="b", SWARM_MCP_TOKEN=TOKEN, SWARMS_MODEL="model-b") as (b, _),
    ):
        ports = [int(a.rsplit(":", 1)[1]), int(b.rsplit(":", 1)[1])]
        balancer = RoundRobin(ports)
        async with mcp_client(f"{a}/mcp", transport=balancer) as client:
            for i in range(4):
                result = await client.call_tool("ask_swarm", {"prompt": f"call {i}"})
                assert not result.is_error
    assert set(balancer.sent) == set(ports)
    models = [r.body["model"] for r in fake.seen("swarms")]
    assert len(models) == 4
    assert set(models) == {"model-a", "model-b"}  # both instances ran tool calls for the one client


@pytest.mark.parametrize("stateless", [False, True], ids=["sessions", "stateless"])
async def test_sigterm_delivers_what_finishes_within_the_grace_and_cancels_the_rest(
    fake: FakeUpstream, tmp_path: Path, stateless: bool
) -> None:
    grace = 2.0
    fake.script("swarms", Reply(delay_s=1.0))  # answers 1 s after SIGTERM: inside the grace
    fake.script("fortytwo", Reply(hang=True))  # never answers: cancelled when the grace ends
    flags = ["--stateless"] if stateless else []
    env = {"SWARM_MCP_TOKEN": TOKEN, "SWARM_MCP_SHUTDOWN_GRACE": str(grace)}
    results: dict[str, CallToolResult] = {}
    with http_server(fake, tmp_path, *flags, **env) as (base, process):
        stderr = tmp_path / "server.stderr"
        try:
            async with mcp_client(f"{base}/mcp") as client, anyio.create_task_group() as tg:

                async def call(key: str, tool: str, prompt: str) -> None:
                    results[key] = await client.call_tool(tool, {"prompt": prompt})

                tg.start_soon(call, "short", "ask_swarm", "short one")
                tg.start_soon(call, "long", "ask_fortytwo", "long one")
                await eventually(lambda: bool(fake.seen("swarms")) and bool(fake.seen("fortytwo")), timeout_s=20)
                signalled = time.monotonic()
                process.send_signal(signal.SIGTERM)
                await eventually(lambda: "shutting down" in stderr.read_text())
                results["new"] = await client.call_tool("ask_swarm", {"prompt": "new while draining"})
        except Exception:  # noqa: BLE001 - closing a session on a server that has gone may fail; results decide
            assert len(results) == 3, results
        with anyio.fail_after(grace + 5):
            while process.poll() is None:  # noqa: ASYNC110 - a child process has no event to await
                await anyio.sleep(0.05)
        exited = time.monotonic() - signalled

    assert not results["short"].is_error, results["short"].content
    assert text_of(results["short"]) == "swarms says: short one"
    long = error_of(results["long"])
    assert long["kind"] == "cancelled"
    assert "shut down before the answer arrived" in long["message"]
    new = error_of(results["new"])
    assert new["kind"] == "cancelled"
    assert "takes no new calls" in new["message"]
    assert len(fake.seen("swarms")) == 1  # the call made while draining never went upstream

    assert grace <= exited < grace + 2.5, exited
    (request,) = fake.seen("fortytwo")
    await eventually(lambda: request.disconnected is not None)
    assert request.disconnected is not None
    assert grace - 0.2 <= request.disconnected - signalled < grace + 1.5
    assert "Traceback" not in stderr.read_text()


async def test_a_client_that_hangs_up_mid_request_leaves_one_info_line(fake: FakeUpstream, tmp_path: Path) -> None:
    with http_server(fake, tmp_path, SWARM_MCP_TOKEN=TOKEN) as (base, process):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Accept: application/json, text/event-stream\r\n"
                + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100000\r\n\r\n".encode()
                + b'{"jsonrpc":'
            )
        log = tmp_path / "server.stderr"
        await eventually(lambda: "disconnected before its request was complete" in log.read_text())
        async with mcp_client(f"{base}/mcp") as client:  # and the server goes on serving
            assert len((await client.list_tools()).tools) >= 2
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    text = log.read_text()
    assert "Traceback" not in text
    assert " ERROR " not in text
    (line,) = [line for line in text.splitlines() if "disconnected before" in line]
    assert " INFO " in line


async def test_refused_tokens_are_logged_without_the_token_and_summed_up(fake: FakeUpstream, tmp_path: Path) -> None:
    wrong = "wrong-token-that-must-never-be-logged"
    with http_server(fake, tmp_path, SWARM_MCP_TOKEN=TOKEN) as (base, process):
        for _ in range(40):
            response = httpx2.post(f"{base}/mcp", json={}, headers={"Authorization": f"Bearer {wrong}"}, timeout=10)
            assert response.status_code == 401
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    text = (tmp_path / "server.stderr").read_text()
    refusals = [line for line in text.splitlines() if "refused" in line and "WARNING" in line]
    assert len(refusals) == 2, refusals  # the first at once, the other 39 in one line
    assert "refused 39 more requests from 127.0.0.1" in refusals[1]
    assert wrong not in text
    assert TOKEN not in text


async def test_session_ids_are_never_logged_in_full(fake: FakeUpstream, tmp_path: Path) -> None:
    with http_server(fake, tmp_path, SWARM_MCP_TOKEN=TOKEN) as (base, _):
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream"}
        response = httpx2.post(f"{base}/mcp", json=initialize, headers=headers, timeout=10)
        session = response.headers["mcp-session-id"]
        httpx2.delete(f"{base}/mcp", headers={**headers, "mcp-session-id": session}, timeout=10)
        log = tmp_path / "server.stderr"
        await eventually(lambda: session[:8] in log.read_text())
    assert len(session) >= 16
    assert session not in log.read_text()
