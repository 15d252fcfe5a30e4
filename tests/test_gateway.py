"""A shared gateway: a token per client, sessions and budgets that belong to it, limits per client."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types import TextContent, TextResourceContents

from swarm_inference_mcp.server.clients import TokensFileError, parse_tokens
from tests.conftest import error_of, fake_env
from tests.fake_upstream import FakeUpstream, Reply, eventually
from tests.servers import SCRIPT, free_port, http_server, mcp_client
from tests.test_jobs import answer_of, handle_of

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ALICE = "alice-plain-token-0123456789"
BOB = "bob-hashed-token-9876543210ab"
BOB_HASH = "sha256:" + hashlib.sha256(BOB.encode()).hexdigest()
ACCEPT = "application/json, text/event-stream"


def tokens_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "clients.txt"
    path.write_text("# the team\n" + "\n".join(lines) + "\n")
    return path


def headers(token: str, session: str | None = None) -> dict[str, str]:
    out = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "Mcp-Protocol-Version": "2025-06-18"}
    return {**out, "Mcp-Session-Id": session} if session else out


def open_session(base: str, token: str) -> httpx2.Response:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    return httpx2.post(f"{base}/mcp", json=initialize, headers=headers(token), timeout=10)


def session_of(base: str, token: str) -> str:
    response = open_session(base, token)
    assert response.status_code == 200, response.text
    session: str = response.headers["mcp-session-id"]
    notified = httpx2.post(
        f"{base}/mcp",
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers=headers(token, session),
        timeout=10,
    )
    assert notified.status_code == 202
    return session


def list_tools(base: str, token: str, session: str) -> int:
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    return httpx2.post(f"{base}/mcp", json=body, headers=headers(token, session), timeout=10).status_code


def text(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def test_each_client_has_its_own_token_and_its_name_on_every_row(fake: FakeUpstream, tmp_path: Path) -> None:
    clients = tokens_file(tmp_path, f"alice {ALICE}", f"bob {BOB_HASH}  # hashed: the file holds no secret")
    db = tmp_path / "usage.sqlite3"
    with http_server(fake, tmp_path, SWARM_MCP_TOKENS_FILE=str(clients), SWARM_MCP_STATE_DB=str(db)) as (base, _):
        for token, prompt in ((ALICE, "from alice"), (BOB, "from bob")):
            async with mcp_client(f"{base}/mcp", token=token) as client:
                assert not (await client.call_tool("ask_swarm", {"prompt": prompt, "wait_s": 0})).is_error
                (jobs,) = (await client.read_resource("swarm://jobs")).contents
                assert isinstance(jobs, TextResourceContents)
                jobs_text = jobs.text
        wrong = httpx2.post(f"{base}/mcp", json={}, headers=headers("not-a-client-token-at-all"), timeout=10)
        assert wrong.status_code == 401
        log = (tmp_path / "server.stderr").read_text()
    listed = json.loads(jobs_text)["jobs"]
    assert [job["client"] for job in listed] == ["bob"]  # bob reads his own jobs only
    rows = sqlite3.connect(db).execute("SELECT client, outcome FROM calls ORDER BY id").fetchall()
    assert rows == [("alice", "answer"), ("bob", "answer")]
    for secret in (ALICE, BOB):
        assert secret not in log
    by_client = await anyio.run_process(
        [SCRIPT, "usage", "--by-client", "--json"], env={"PATH": "/usr/bin:/bin", "SWARM_MCP_STATE_DB": str(db)}
    )
    assert sorted(row["client"] for row in json.loads(by_client.stdout)["rows"]) == ["alice", "bob"]


async def test_a_client_cannot_see_collect_or_cancel_another_clients_job(fake: FakeUpstream, tmp_path: Path) -> None:
    clients = tokens_file(tmp_path, f"alice {ALICE}", f"bob {BOB_HASH}")
    with http_server(fake, tmp_path, SWARM_MCP_TOKENS_FILE=str(clients)) as (base, _):
        async with mcp_client(f"{base}/mcp", token=ALICE) as alice, mcp_client(f"{base}/mcp", token=BOB) as bob:
            handle = await alice.call_tool("ask_swarm", {"prompt": "mine", "wait_s": 0})
            job_id = (handle.structured_content or {})["job_id"]
            collected = await bob.call_tool("get_result", {"job_id": job_id})
            cancelled = await bob.call_tool("cancel_job", {"job_id": job_id})
            own = await alice.call_tool("get_result", {"job_id": job_id, "wait_s": 10})
    assert error_of(collected)["kind"] == "unknown_job"
    assert error_of(cancelled)["kind"] == "unknown_job"
    assert text(own) == "swarms says: mine"


async def test_a_client_can_neither_use_nor_end_another_clients_session(fake: FakeUpstream, tmp_path: Path) -> None:
    clients = tokens_file(tmp_path, f"alice {ALICE}", f"bob {BOB_HASH}")
    with http_server(fake, tmp_path, SWARM_MCP_TOKENS_FILE=str(clients)) as (base, _):
        alices = session_of(base, ALICE)
        assert list_tools(base, BOB, alices) == 404
        deleted = httpx2.delete(f"{base}/mcp", headers=headers(BOB, alices), timeout=10)
        assert deleted.status_code == 404
        assert list_tools(base, ALICE, alices) == 200  # untouched
        log = (tmp_path / "server.stderr").read_text()
    assert alices not in log  # session ids are never logged in full


async def test_a_client_at_its_session_limit_gets_429_and_no_one_else_does(fake: FakeUpstream, tmp_path: Path) -> None:
    clients = tokens_file(tmp_path, f"alice {ALICE} max_sessions=2", f"bob {BOB_HASH}")
    env = {"SWARM_MCP_TOKENS_FILE": str(clients), "SWARM_MCP_MAX_SESSIONS_PER_CLIENT": "3"}
    with http_server(fake, tmp_path, **env) as (base, _):
        first = session_of(base, ALICE)
        session_of(base, ALICE)
        refused = open_session(base, ALICE)
        assert refused.status_code == 429
        assert "client alice already holds 2 open sessions, its limit (2)" in refused.json()["error"]["message"]
        for _ in range(3):
            session_of(base, BOB)  # bob's default limit is 3; alice's state does not touch him
        assert open_session(base, BOB).status_code == 429
        httpx2.delete(f"{base}/mcp", headers=headers(ALICE, first), timeout=10)
        assert open_session(base, ALICE).status_code == 200  # one ended, one may open


async def test_simultaneous_opens_never_pass_a_clients_session_limit(fake: FakeUpstream, tmp_path: Path) -> None:
    """alice (max_sessions=3) sends 60 initialize requests at once: three sessions open, the rest get 429."""
    clients = tokens_file(tmp_path, f"alice {ALICE} max_sessions=3")
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    with http_server(fake, tmp_path, SWARM_MCP_TOKENS_FILE=str(clients)) as (base, _):
        statuses: list[int] = []
        async with httpx2.AsyncClient(timeout=30, limits=httpx2.Limits(max_connections=60)) as http:

            async def open_one() -> None:
                response = await http.post(f"{base}/mcp", json=initialize, headers=headers(ALICE))
                statuses.append(response.status_code)

            async with anyio.create_task_group() as tg:
                for _ in range(60):
                    tg.start_soon(open_one)
        later = open_session(base, ALICE).status_code
    assert sorted(set(statuses)) == [200, 429]
    assert statuses.count(200) == 3
    assert later == 429


async def test_a_session_stays_counted_whatever_other_paths_and_clients_are_answered(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """A 404 for alice's session id on another path, or for bob naming it, does not end it: she still
    holds her one session (her limit), and it still answers."""
    clients = tokens_file(tmp_path, f"alice {ALICE} max_sessions=1", f"bob {BOB_HASH}")
    with http_server(fake, tmp_path, SWARM_MCP_TOKENS_FILE=str(clients)) as (base, _):
        alices = session_of(base, ALICE)
        body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        elsewhere = httpx2.post(f"{base}/nope", json=body, headers=headers(ALICE, alices), timeout=10)
        named_by_bob = list_tools(base, BOB, alices)
        another = open_session(base, ALICE).status_code
        still = list_tools(base, ALICE, alices)
    assert elsewhere.status_code == 404
    assert named_by_bob == 404
    assert another == 429
    assert still == 200


async def test_idle_sessions_expire(fake: FakeUpstream, tmp_path: Path) -> None:
    clients = tokens_file(tmp_path, f"alice {ALICE} max_sessions=1")
    env = {"SWARM_MCP_TOKENS_FILE": str(clients), "SWARM_MCP_SESSION_IDLE": "1"}
    with http_server(fake, tmp_path, **env) as (base, _):
        session = session_of(base, ALICE)
        assert open_session(base, ALICE).status_code == 429
        await anyio.sleep(2.5)  # idle past SWARM_MCP_SESSION_IDLE, without a request that would refresh it
        assert list_tools(base, ALICE, session) == 404
        assert open_session(base, ALICE).status_code == 200  # the expired one no longer counts


async def test_a_client_budget_refuses_that_client_only(fake: FakeUpstream, tmp_path: Path) -> None:
    clients = tokens_file(tmp_path, f"alice {ALICE} daily_tokens=5", f"bob {BOB_HASH}")
    env = {"SWARM_MCP_TOKENS_FILE": str(clients), "SWARM_MCP_STATE_DB": str(tmp_path / "u.sqlite3")}
    with http_server(fake, tmp_path, **env) as (base, _):
        async with mcp_client(f"{base}/mcp", token=ALICE) as alice, mcp_client(f"{base}/mcp", token=BOB) as bob:
            spent = await alice.call_tool("ask_fortytwo", {"prompt": "spend alice's day"})
            refused = await alice.call_tool("ask_fortytwo", {"prompt": "once more"})
            other = await bob.call_tool("ask_fortytwo", {"prompt": "bob is fine"})
            (usage,) = (await alice.read_resource("swarm://usage")).contents
    assert not spent.is_error
    assert error_of(refused)["kind"] == "budget"
    assert "daily token budget of client alice (5 tokens" in text(refused)
    assert not other.is_error
    assert isinstance(usage, TextResourceContents)
    own = json.loads(usage.text)["client"]
    assert own["name"] == "alice"
    assert own["daily_tokens"] == 5
    assert own["remaining"] == 0
    assert own["today"]["calls"] == 1
    assert len(fake.seen("fortytwo")) == 2  # alice's first, bob's; alice's second was never sent


async def test_sighup_revokes_a_token_from_the_next_request_and_spares_other_sessions(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    clients = tokens_file(tmp_path, f"alice {ALICE}", f"bob {BOB_HASH}")
    with http_server(fake, tmp_path, SWARM_MCP_TOKENS_FILE=str(clients)) as (base, process):
        bobs = session_of(base, BOB)
        alices = session_of(base, ALICE)
        tokens_file(tmp_path, f"bob {BOB_HASH}")  # alice revoked
        process.send_signal(signal.SIGHUP)
        log = tmp_path / "server.stderr"
        await eventually(lambda: "re-read the tokens file; 1 clients" in log.read_text())
        assert list_tools(base, ALICE, alices) == 401
        assert open_session(base, ALICE).status_code == 401
        assert list_tools(base, BOB, bobs) == 200  # bob's session lives on

        clients.write_text("bob\n")  # a broken file on SIGHUP keeps the clients as they were
        process.send_signal(signal.SIGHUP)
        await eventually(lambda: "was not re-read" in log.read_text())
        assert list_tools(base, BOB, bobs) == 200


async def test_a_slow_request_is_cut_off_while_a_normal_client_is_served(fake: FakeUpstream, tmp_path: Path) -> None:
    clients = tokens_file(tmp_path, f"alice {ALICE}")
    env = {"SWARM_MCP_TOKENS_FILE": str(clients), "SWARM_MCP_REQUEST_TIMEOUT": "1"}
    closed_after: list[float] = []
    with http_server(fake, tmp_path, **env) as (base, _):
        port = int(base.rsplit(":", 1)[1])

        async def trickle() -> None:
            started = time.monotonic()
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                with anyio.fail_after(10):
                    try:
                        for byte in b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                            await stream.send(bytes([byte]))
                            await anyio.sleep(0.2)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        pass
                    else:
                        await stream.receive()  # the server closed it: end of stream
            closed_after.append(time.monotonic() - started)

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(trickle)
            async with mcp_client(f"{base}/mcp", token=ALICE) as client:
                result = await client.call_tool("ask_swarm", {"prompt": "served meanwhile"})
        log = (tmp_path / "server.stderr").read_text()
    assert not result.is_error
    assert len(closed_after) == 10
    assert all(1.0 <= after < 2.5 for after in closed_after), closed_after
    assert "no whole request within 1 s" in log


def test_a_malformed_tokens_file_stops_the_server_naming_the_line(fake: FakeUpstream, tmp_path: Path) -> None:
    clients = tokens_file(tmp_path, f"alice {ALICE}", "bob sha256:not-hex")
    done = subprocess.run(
        [SCRIPT, "--transport", "streamable-http", "--port", str(free_port())],
        env={"PATH": "/usr/bin:/bin", **fake_env(fake), "SWARM_MCP_TOKENS_FILE": str(clients)},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{clients}, line 3:" in done.stderr


async def test_the_token_command_prints_a_token_and_the_line_that_admits_it(fake: FakeUpstream, tmp_path: Path) -> None:
    printed = (await anyio.run_process([SCRIPT, "token", "carol"])).stdout.decode()
    lines = [line for line in printed.splitlines() if line]
    token, entry = lines[1], lines[-1]
    assert entry.startswith("carol sha256:")
    assert token not in entry
    clients = tokens_file(tmp_path, entry)
    with http_server(fake, tmp_path, SWARM_MCP_TOKENS_FILE=str(clients)) as (base, _):
        async with mcp_client(f"{base}/mcp", token=token) as client:
            assert len((await client.list_tools()).tools) >= 4


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("alice", "expected NAME TOKEN"),
        ("al!ce some-token-long-enough-0001", "is not a client name"),
        ("alice short", "at least 16 characters"),
        ("alice sha256:abc", "sha256:<64 hex digits>"),
        (f"alice {ALICE} daily_tokens=0", "daily_tokens=N or max_sessions=N"),
        (f"alice {ALICE} colour=blue", "daily_tokens=N or max_sessions=N"),
        (f"bob {ALICE}", "the same token as another client"),
        (f"alice {BOB_HASH}", "listed twice"),
    ],
)
def test_tokens_file_lines_are_refused_with_their_line_number(line: str, problem: str) -> None:
    with pytest.raises(TokensFileError) as refused:
        parse_tokens(f"# team\nalice {ALICE}  # the first\n\n{line}\n", "clients.txt")
    message = str(refused.value)
    assert message.startswith("clients.txt, line 4: ")
    assert problem in message
    assert ALICE not in message


async def test_another_clients_finished_jobs_never_evict_a_clients_uncollected_answer(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """alice has a finished, uncollected job; bob finishes many more than SWARM_MCP_MAX_JOBS. Before, one
    table held every client's kept jobs and bob's pushed hers out: she was told to ask (and pay) again."""
    clients = tokens_file(tmp_path, f"alice {ALICE}", f"bob {BOB_HASH}")
    env = {"SWARM_MCP_TOKENS_FILE": str(clients), "SWARM_MCP_MAX_JOBS": "3"}
    with http_server(fake, tmp_path, **env) as (base, _):
        async with mcp_client(f"{base}/mcp", token=ALICE) as alice, mcp_client(f"{base}/mcp", token=BOB) as bob:
            handle = handle_of(await alice.call_tool("ask_swarm", {"prompt": "alice's question", "wait_s": 0}))
            await eventually(lambda: len(fake.seen("swarms")) == 1 and fake.seen("swarms")[0].finished is not None)
            bobs = []
            for n in range(12):  # each handed out, finished and kept for bob
                bobs.append(handle_of(await bob.call_tool("ask_swarm", {"prompt": f"bob's {n}", "wait_s": 0})))
                answer_of(await bob.call_tool("get_result", {"job_id": bobs[-1]["job_id"], "wait_s": 30}))
            collected = await alice.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 30})
            evicted = await bob.call_tool("get_result", {"job_id": bobs[0]["job_id"], "wait_s": 0})
    assert answer_of(collected)["text"] == "swarms says: alice's question"
    assert "SWARM_MCP_MAX_JOBS" in error_of(evicted)["message"]  # bob's own oldest made room for his newest
    assert len(fake.seen("swarms")) == 13


def _collect_without_reading(port: int, job_id: str, count: int) -> list[socket.socket]:
    """`count` connections that each ask get_result for `job_id`, then read nothing."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "get_result", "arguments": {"job_id": job_id}},
        }
    ).encode()
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {ALICE}\r\n"
        f"Accept: {ACCEPT}\r\nContent-Type: application/json\r\nMcp-Protocol-Version: 2025-06-18\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(head + body)
        sockets.append(sock)
    return sockets


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


async def test_collecting_a_huge_answer_on_connections_that_read_nothing_holds_no_memory(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """One paid 20 MB answer, then 12 connections asking get_result for it and reading nothing: each is
    answered a page (SWARM_MCP_MAX_RESULT_CHARS), so the server's memory stays within 100 MiB of where
    it was (when each response carried the whole answer twice, 97 MB grew to 939 MB)."""
    clients = tokens_file(tmp_path, f"alice {ALICE}")
    fake.script("swarms", Reply(text="x" * 20_000_000))
    with http_server(fake, tmp_path, "--stateless", SWARM_MCP_TOKENS_FILE=str(clients)) as (base, process):
        async with mcp_client(f"{base}/mcp", token=ALICE) as alice:
            job = handle_of(await alice.call_tool("ask_swarm", {"prompt": "big", "wait_s": 0}))
            await alice.call_tool("get_result", {"job_id": job["job_id"], "wait_s": 30})
        before = _rss_kib(process.pid)
        sockets = _collect_without_reading(int(base.rsplit(":", 1)[1]), job["job_id"], 12)
        try:
            for sock in sockets:  # each answer has begun to come (its result); the rest is never read
                sock.settimeout(30)
                head = b""
                while b'"result"' not in head and len(head) < 65536:
                    head += sock.recv(4096)
                assert head.startswith(b"HTTP/1.1 200")
            after = _rss_kib(process.pid)
        finally:
            for sock in sockets:
                sock.close()
    assert after - before < 100 * 1024, (before, after)


async def test_a_connection_that_reads_nothing_of_a_long_response_is_closed(fake: FakeUpstream, tmp_path: Path) -> None:
    """With the result limit raised past a 20 MB answer, a connection that reads nothing of its response
    is closed after SWARM_MCP_REQUEST_TIMEOUT, and the server says so."""
    clients = tokens_file(tmp_path, f"alice {ALICE}")
    fake.script("swarms", Reply(text="x" * 20_000_000))
    env = {
        "SWARM_MCP_TOKENS_FILE": str(clients),
        "SWARM_MCP_REQUEST_TIMEOUT": "1",
        "SWARM_MCP_MAX_RESULT_CHARS": "50000000",
    }
    with http_server(fake, tmp_path, "--stateless", **env) as (base, _):
        async with mcp_client(f"{base}/mcp", token=ALICE) as alice:
            job = handle_of(await alice.call_tool("ask_swarm", {"prompt": "big", "wait_s": 0}))
            await alice.call_tool("get_result", {"job_id": job["job_id"], "wait_s": 30})
        sockets = _collect_without_reading(int(base.rsplit(":", 1)[1]), job["job_id"], 3)
        try:
            log = tmp_path / "server.stderr"
            await eventually(lambda: log.read_text().count("read nothing of its response for 1 s") == 3, timeout_s=30)
        finally:
            for sock in sockets:
                sock.close()
