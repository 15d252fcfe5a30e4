"""The usage state file: shared by every server process, kept across restarts, budgets that hold."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent, TextResourceContents

from swarm_inference_mcp.tools.usage import _MIGRATIONS, SCHEMA_VERSION, SqliteUsageStore, UsageRow
from tests.conftest import ERROR_META, error_of, fake_env
from tests.fake_upstream import FakeUpstream, Reply, eventually
from tests.servers import SCRIPT, http_server, mcp_client

pytestmark = pytest.mark.anyio


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def usage_of(client: Client) -> dict[str, Any]:
    (contents,) = (await client.read_resource("swarm://usage")).contents
    assert isinstance(contents, TextResourceContents)
    usage: dict[str, Any] = json.loads(contents.text)
    return usage


def rows_of(path: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute("SELECT * FROM calls ORDER BY id")]
    finally:
        db.close()


def served_tokens(fake: FakeUpstream, provider: str) -> int:
    return sum(fake.completion(request)["usage"]["total_tokens"] for request in fake.seen(provider))


async def test_each_request_is_one_row_without_any_text(
    connect: Callable[..., Any], fake: FakeUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "usage.sqlite3"
    fake.script("swarms", Reply(status=429, json={"error": {"message": "slow down", "type": "rate_limit"}}))
    async with connect(SWARM_MCP_STATE_DB=str(db), SWARM_MCP_MAX_RETRIES="0") as client:
        await client.call_tool("ask_fortytwo", {"prompt": "secret-prompt-words"})
        await client.call_tool("ask_swarm", {"prompt": "limited"})
    answered, limited = rows_of(db)
    served = fake.completion(fake.seen("fortytwo")[0])["usage"]
    assert answered["tool"] == "ask_fortytwo"
    assert answered["provider"] == "fortytwo"
    assert answered["model"] == "fortytwo-prime"
    assert answered["outcome"] == "answer"
    assert answered["attempts"] == 1
    assert answered["status"] is None
    assert answered["job_id"].startswith("j_")
    assert {k: answered[k] for k in served} == served
    assert answered["latency_ms"] >= 0
    assert limited["outcome"] == "rate_limited"
    assert limited["status"] == 429
    assert limited["total_tokens"] is None  # not reported, so not invented
    assert b"secret-prompt-words" not in db.read_bytes()
    assert fake.keys["fortytwo"].encode() not in db.read_bytes()


async def test_a_restart_keeps_the_totals_and_a_spent_daily_budget(
    connect: Callable[..., Any], fake: FakeUpstream, tmp_path: Path
) -> None:
    db = str(tmp_path / "usage.sqlite3")
    async with connect(SWARM_MCP_STATE_DB=db) as client:
        await client.call_tool("ask_fortytwo", {"prompt": "spend some tokens today"})
        await client.call_tool("ask_swarm", {"prompt": "and some more"})
        before = await usage_of(client)
    spent = served_tokens(fake, "fortytwo") + served_tokens(fake, "swarms")
    assert before["today"]["total_tokens"] == spent

    async with connect(SWARM_MCP_STATE_DB=db, SWARM_MCP_DAILY_TOKEN_BUDGET=str(spent)) as client:
        after = await usage_of(client)
        refused = await client.call_tool("ask_swarm", {"prompt": "one more"})
    assert after["today"] == {**before["today"], "budgets": after["today"]["budgets"]}
    assert after["today"]["budgets"] == [
        {"variable": "SWARM_MCP_DAILY_TOKEN_BUDGET", "limit": spent, "used": spent, "remaining": 0}
    ]
    assert after["this_month"]["total_tokens"] == spent
    assert after["providers"]["swarms"]["calls"] == 0  # this process's own totals start afresh
    error = error_of(refused)
    assert error["kind"] == "budget"
    assert text_of(refused) == (
        f"Swarms: the daily token budget of {spent} tokens (SWARM_MCP_DAILY_TOKEN_BUDGET) is spent ({spent} used); "
        "it resets at midnight, local time."
    )
    assert len(fake.seen("swarms")) == 1


async def test_a_provider_monthly_budget_refuses_only_that_provider(
    connect: Callable[..., Any], fake: FakeUpstream, tmp_path: Path
) -> None:
    async with connect(SWARM_MCP_STATE_DB=str(tmp_path / "u.sqlite3"), SWARMS_MONTHLY_TOKEN_BUDGET="3") as client:
        await client.call_tool("ask_swarm", {"prompt": "spend the swarms month"})
        refused = await client.call_tool("ask_swarm", {"prompt": "again"})
        other = await client.call_tool("ask_fortytwo", {"prompt": "fortytwo has no budget"})
    assert "monthly token budget for Swarms of 3 tokens (SWARMS_MONTHLY_TOKEN_BUDGET)" in text_of(refused)
    assert "it resets on " in text_of(refused)
    assert not other.is_error


async def test_three_processes_share_one_file_and_one_daily_budget(fake: FakeUpstream, tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite3"
    budget, concurrency = 300, 4
    env = fake_env(
        fake,
        SWARM_MCP_STATE_DB=str(db),
        SWARM_MCP_DAILY_TOKEN_BUDGET=str(budget),
        FORTYTWO_MAX_CONCURRENCY=str(concurrency),
        SWARM_MCP_LOG_LEVEL="WARNING",
    )
    fake.script("fortytwo", *(Reply(delay_s=0.02) for _ in range(400)))
    outcomes: list[CallToolResult] = []

    async def process(name: str) -> None:
        params = StdioServerParameters(command=str(SCRIPT), env={"PATH": os.environ["PATH"], **env})
        async with Client(params) as client:
            for wave in range(100):
                results: list[CallToolResult] = []

                async def one(i: int, results: list[CallToolResult] = results, wave: int = wave) -> None:
                    results.append(await client.call_tool("ask_fortytwo", {"prompt": f"{name} {wave} {i} x"}))

                async with anyio.create_task_group() as tg:
                    for i in range(concurrency):
                        tg.start_soon(one, i)
                outcomes.extend(results)
                if any(r.is_error for r in results):
                    return

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for name in ("a", "b", "c"):
                tg.start_soon(process, name)

    for result in outcomes:
        if result.is_error:
            assert (result.meta or {})[ERROR_META]["kind"] == "budget", text_of(result)
    rows = rows_of(db)
    spent = sum(row["total_tokens"] for row in rows)
    assert len(rows) == len(fake.seen("fortytwo")) == sum(not r.is_error for r in outcomes)
    assert spent == served_tokens(fake, "fortytwo")
    most_per_call = max(row["total_tokens"] for row in rows)
    assert budget <= spent <= budget + 3 * concurrency * most_per_call  # at most what was in flight


async def test_a_killed_process_leaves_a_sound_file_with_every_finished_call(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "killed.sqlite3"
    fake.script("fortytwo", *(Reply(delay_s=0.05 * i) for i in range(60)))
    answered: list[CallToolResult] = []
    with http_server(fake, tmp_path, SWARM_MCP_STATE_DB=str(db), FORTYTWO_MAX_CONCURRENCY="60") as (base, process):

        async def one(client: Client, i: int) -> None:
            result = await client.call_tool("ask_fortytwo", {"prompt": f"call {i}"})
            answered.append(result)

        killed_after: list[int] = []
        writers: list[int] = []

        async def calls_until_killed() -> None:
            async with mcp_client(f"{base}/mcp") as client, anyio.create_task_group() as tg:
                for i in range(60):
                    tg.start_soon(one, client, i)
                while len(answered) < 15:  # noqa: ASYNC110 - results arrive on other tasks
                    await anyio.sleep(0.01)
                killed_after.append(len(answered))
                writers.extend(children_of(process.pid))
                process.send_signal(signal.SIGKILL)

        with contextlib.suppress(Exception):  # the client fails once its server is gone: that is the test
            await calls_until_killed()
        (finished_before_kill,) = killed_after
        process.wait(timeout=10)
    assert writers, "the server's usage writer process"
    for writer in writers:  # it outlives the server, commits what the pipe holds, and exits
        wait_gone(writer)
    db_check = sqlite3.connect(db)
    try:
        assert db_check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        recorded = db_check.execute("SELECT COUNT(*) FROM calls WHERE outcome = 'answer'").fetchone()[0]
    finally:
        db_check.close()
    assert recorded >= finished_before_kill > 0
    assert recorded < 60


def children_of(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def wait_gone(pid: int, timeout_s: float = 15.0) -> None:
    """Until the process has exited (a zombie counts: an orphan may wait long for its reaper)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.02)


async def test_a_file_another_process_holds_locked_never_holds_up_a_call(
    connect: Callable[..., Any], fake: FakeUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "busy.sqlite3"
    async with connect(SWARM_MCP_STATE_DB=str(path)) as client:
        assert not (await client.call_tool("ask_swarm", {"prompt": "before"})).is_error
        with write_lock(path):  # another process's, held for seconds
            for n in range(5):
                started = time.monotonic()
                assert not (await client.call_tool("ask_swarm", {"prompt": f"while locked {n}"})).is_error
                assert time.monotonic() - started < 0.5
            usage = await usage_of(client)  # counts the rows still waiting for the lock
    assert usage["today"]["providers"]["swarms"]["calls"] == 6
    assert len(rows_of(path)) == 6  # the writer committed them once the lock was gone


async def test_a_burst_larger_than_the_pipe_is_committed_whole(tmp_path: Path) -> None:
    path = tmp_path / "burst.sqlite3"
    store = SqliteUsageStore.open(path)
    row = UsageRow(
        at=time.time(), tool="ask_swarm", provider="swarms", model="m", outcome="answer", status=None, attempts=1,
        prompt_tokens=1, completion_tokens=2, total_tokens=3, latency_ms=1, job_id=None,
    )  # fmt: skip
    with write_lock(path):  # the writer cannot drain the pipe: most rows wait in the store's backlog
        for _ in range(5000):  # far more than a pipe holds
            store.record(row)
        counted = await store.totals(row.periods)  # this process's rows count already, committed or not
    await anyio.to_thread.run_sync(store.close)
    assert counted[(row.periods[0], "swarms")].calls == 5000
    assert len(rows_of(path)) == 5000


async def test_with_a_shared_budget_a_call_returns_once_its_row_is_committed_and_the_loop_stays_free(
    connect: Callable[..., Any], fake: FakeUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "budget.sqlite3"
    async with connect(SWARM_MCP_STATE_DB=str(path), SWARM_MCP_DAILY_TOKEN_BUDGET="100000") as client:
        assert not (await client.call_tool("ask_swarm", {"prompt": "before"})).is_error
        assert len(rows_of(path)) == 1  # committed when the call returned: every process counts it
        done = anyio.Event()

        async def held() -> None:
            assert not (await client.call_tool("ask_swarm", {"prompt": "held"})).is_error
            done.set()

        async with anyio.create_task_group() as tg:
            with write_lock(path):
                tg.start_soon(held)
                await eventually(lambda: len(fake.seen("swarms")) == 2)
                started = time.monotonic()
                usage = await usage_of(client)  # the server answers while the call waits for the lock
                assert time.monotonic() - started < 0.5
                assert usage["today"]["providers"]["swarms"]["calls"] == 2
                await anyio.sleep(1)  # the call is still held: its row is not on file yet
                assert not done.is_set()
            released = time.monotonic()
            with anyio.fail_after(3):
                await done.wait()
            assert time.monotonic() - released < 1  # it returned once committed, not after a timeout
        assert len(rows_of(path)) == 2


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Another process's write lock on the state file, for as long as the block runs."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def corrupt(path: Path) -> None:
    path.write_bytes(b"this is no database at all " * 200)


def newer(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE future (x)")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    db.commit()
    db.close()


BAD_STATES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "unwritable": (lambda tmp: _file(tmp / "a-file") / "usage.sqlite3", "not writable"),
    "corrupt": (lambda tmp: _made(tmp / "usage.sqlite3", corrupt), "corrupt"),
    "newer schema": (lambda tmp: _made(tmp / "usage.sqlite3", newer), "newer swarm-inference-mcp"),
}


def _file(path: Path) -> Path:
    path.write_text("a file where a directory should be")
    return path


def _made(path: Path, make: Callable[[Path], None]) -> Path:
    make(path)
    return path


@pytest.mark.parametrize("budget", [False, True], ids=["no budget", "daily budget"])
@pytest.mark.parametrize("state", list(BAD_STATES))
async def test_a_bad_state_file_never_stops_the_server(
    connect: Callable[..., Any],
    fake: FakeUpstream,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    state: str,
    budget: bool,
) -> None:
    make, problem = BAD_STATES[state]
    path = make(tmp_path)
    before = path.read_bytes() if path.exists() else None
    extra = {"SWARM_MCP_DAILY_TOKEN_BUDGET": "1000"} if budget else {}
    with caplog.at_level(logging.ERROR):
        async with connect(SWARM_MCP_STATE_DB=str(path), **extra) as client:
            result = await client.call_tool("ask_fortytwo", {"prompt": "still here?"})
            usage = await usage_of(client)
    (logged,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert str(path) in logged
    assert problem in logged
    assert "\n" not in logged
    if budget:
        error = error_of(result)
        assert error["kind"] == "config"
        assert str(path) in error["message"]
        assert "daily or monthly token budget" in error["message"]
        assert fake.seen("fortytwo") == []
    else:
        assert not result.is_error
        assert usage["providers"]["fortytwo"]["calls"] == 1
        assert usage["today"]["total_tokens"] == served_tokens(fake, "fortytwo")  # kept in memory
    assert problem in usage["problem"]
    if before is not None:
        assert path.read_bytes() == before  # never touched, let alone corrupted


async def test_a_file_locked_too_long_is_a_clear_problem(
    connect: Callable[..., Any], fake: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "locked.sqlite3"
    SqliteUsageStore.open(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.ERROR):
            async with connect(SWARM_MCP_STATE_DB=str(path), SWARM_MCP_DAILY_TOKEN_BUDGET="1000") as client:
                result = await client.call_tool("ask_fortytwo", {"prompt": "locked out"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "kept it locked for more than 5 s" in error_of(result)["message"]
    assert any(str(path) in r.getMessage() for r in caplog.records)


def test_an_older_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in _MIGRATIONS[1]:
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO calls (at, day, tool, provider, outcome, total_tokens, latency_ms)"
        " VALUES (1.0, '2026-01-01', 'ask_swarm', 'swarms', 'answer', 42, 10)"
    )
    db.close()
    SqliteUsageStore.open(path).close()
    (row,) = rows_of(path)
    assert row["total_tokens"] == 42
    assert "client" in row
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    check.close()


async def test_the_usage_command_prints_a_table_and_json_of_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "report.sqlite3"
    store = SqliteUsageStore.open(path)
    now = time.time()

    def row(days_ago: int, provider: str, tokens: int | None, latency: int, outcome: str = "answer") -> UsageRow:
        return UsageRow(
            at=now - days_ago * 86400, tool="ask_" + provider, provider=provider, model="m", outcome=outcome,
            status=None, attempts=1, prompt_tokens=None if tokens is None else 1, completion_tokens=None
            if tokens is None else tokens - 1, total_tokens=tokens, latency_ms=latency, job_id=None,
        )  # fmt: skip

    rows = [
        row(0, "fortytwo", 100, 1000),
        row(0, "fortytwo", 300, 3000),
        row(0, "fortytwo", None, 2000, outcome="timeout"),
        row(0, "swarms", 50, 400),
        row(2, "swarms", 1000, 800),
        row(20, "swarms", 7, 1),  # outside the last 14 days
    ]
    for each in rows:
        store.record(each)
    store.close()  # waits for the writer process to commit them
    env = {"PATH": os.environ["PATH"], "SWARM_MCP_STATE_DB": str(path)}
    table = (await anyio.run_process([SCRIPT, "usage"], env=env)).stdout.decode()
    dumped = (await anyio.run_process([SCRIPT, "usage", "--json"], env=env)).stdout.decode()
    today = time.strftime("%Y-%m-%d", time.localtime(now))
    two_days_ago = time.strftime("%Y-%m-%d", time.localtime(now - 2 * 86400))
    assert json.loads(dumped)["rows"] == [
        {"day": today, "provider": "fortytwo", "calls": 3, "errors": 1, "prompt_tokens": 2, "completion_tokens": 398,
         "total_tokens": 400, "median_latency_ms": 2000},
        {"day": today, "provider": "swarms", "calls": 1, "errors": 0, "prompt_tokens": 1, "completion_tokens": 49,
         "total_tokens": 50, "median_latency_ms": 400},
        {"day": two_days_ago, "provider": "swarms", "calls": 1, "errors": 0, "prompt_tokens": 1,
         "completion_tokens": 999, "total_tokens": 1000, "median_latency_ms": 800},
    ]  # fmt: skip
    lines = table.splitlines()
    assert str(path) in lines[0]
    (fortytwo_line,) = [line for line in lines if line.startswith(today)]
    assert fortytwo_line.split()[1:6] == ["fortytwo", "3", "1", "400", "2.0"]
    biggest = next(line for line in lines if line.startswith(two_days_ago))
    assert biggest.endswith("█" * 30)  # the day with the most tokens has the longest bar
    assert "5 calls, 1,450 tokens in all." in table


async def test_every_delivered_answer_is_on_file_when_the_server_and_its_writer_die_together(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """As a container stop or a cgroup OOM kill does it: both processes at once, no budget set."""
    db = tmp_path / "killed-together.sqlite3"
    fake.script("fortytwo", *(Reply(delay_s=0.02 * i) for i in range(80)))
    answered: list[CallToolResult] = []
    with http_server(fake, tmp_path, SWARM_MCP_STATE_DB=str(db), FORTYTWO_MAX_CONCURRENCY="80") as (base, process):

        async def one(client: Client, i: int) -> None:
            result = await client.call_tool("ask_fortytwo", {"prompt": f"call {i}"})
            if not result.is_error:
                answered.append(result)

        delivered: list[int] = []

        async def calls_until_killed() -> None:
            async with mcp_client(f"{base}/mcp") as client, anyio.create_task_group() as tg:
                for i in range(80):
                    tg.start_soon(one, client, i)
                while len(answered) < 30:  # noqa: ASYNC110 - results arrive on other tasks
                    await anyio.sleep(0.005)
                writers = children_of(process.pid)
                for pid in [process.pid, *writers]:
                    os.kill(pid, signal.SIGKILL)
                delivered.append(len(answered))
                assert writers, "the server's usage writer process"

        with contextlib.suppress(Exception):  # the client fails once its server is gone: that is the test
            await calls_until_killed()
        process.wait(timeout=10)
    (count,) = delivered
    db_check = sqlite3.connect(db)
    try:
        assert db_check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        recorded = db_check.execute("SELECT COUNT(*) FROM calls WHERE outcome = 'answer'").fetchone()[0]
    finally:
        db_check.close()
    assert recorded >= count >= 30
