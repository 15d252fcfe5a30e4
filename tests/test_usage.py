"""The usage state file: shared by every server process, kept across restarts, budgets that hold."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent, TextResourceContents

from swarm_inference_mcp.server.accounting.ledger import UsageRow
from swarm_inference_mcp.server.accounting.schema import _MIGRATIONS, SCHEMA_VERSION
from swarm_inference_mcp.server.accounting.sqlite import SqliteUsageStore
from tests.conftest import ERROR_META, error_of, fake_env
from tests.fake_upstream import FakeUpstream, Reply
from tests.servers import SCRIPT, http_server, mcp_client

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


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


@pytest.mark.parametrize(
    ("store", "budget"),
    [("state file", None), ("state file", "100000000"), ("redis", None)],
    ids=["no budget", "daily budget", "redis"],
)
async def test_a_killed_server_leaves_every_request_it_sent_on_file_and_a_restart_counts_them(
    fake: FakeUpstream, tmp_path: Path, store: str, budget: str | None
) -> None:
    """As a container stop or a cgroup OOM kill does it, with calls in flight: every request the upstream
    saw has its row (the answered ones settled, the rest still `sent` at their reservation), in the state
    file or in Redis' stream, so `swarm-inference-mcp usage` shows it; every answer delivered is settled;
    a restart counts them all; and the server ran no process of its own to get there."""
    from tests.redis_server import RedisServer  # noqa: PLC0415 - imports the redis client

    db = tmp_path / "killed.sqlite3"
    fake.script("fortytwo", *(Reply(delay_s=0.05 * i) for i in range(40)))
    answered: list[CallToolResult] = []
    env = {"SWARM_MCP_STATE_DB": str(db), "FORTYTWO_MAX_CONCURRENCY": "40"}
    if budget is not None:
        env["SWARM_MCP_DAILY_TOKEN_BUDGET"] = budget
    own_redis = RedisServer(tmp_path / "redis") if store == "redis" else None
    if own_redis is not None:  # a Redis of its own: the report reads every row there
        own_redis.start()
        env["SWARM_MCP_REDIS_URL"] = own_redis.url
    try:
        with http_server(fake, tmp_path, **env) as (base, process):

            async def one(client: Client, i: int) -> None:
                result = await client.call_tool("ask_fortytwo", {"prompt": f"call {i}"})
                if not result.is_error:
                    answered.append(result)

            delivered: list[int] = []
            children: list[list[int]] = []

            async def calls_until_killed() -> None:
                async with mcp_client(f"{base}/mcp") as client, anyio.create_task_group() as tg:
                    for i in range(40):
                        tg.start_soon(one, client, i)
                    while len(answered) < 13:  # noqa: ASYNC110 - results arrive on other tasks
                        await anyio.sleep(0.005)
                    children.append(children_of(process.pid))
                    process.send_signal(signal.SIGKILL)
                    delivered.append(len(answered))

            with contextlib.suppress(Exception):  # the client fails once its server is gone: that is the test
                await calls_until_killed()
            process.wait(timeout=10)
        assert children == [[]], "the server runs no process of its own"
        (count,) = delivered
        seen = len(fake.seen("fortytwo"))
        assert count < seen, "some requests were in flight when the server was killed"
        if own_redis is None:
            db_check = sqlite3.connect(db)
            try:
                assert db_check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                outcomes = [row[0] for row in db_check.execute("SELECT outcome FROM calls")]
            finally:
                db_check.close()
            assert outcomes.count("answer") >= count >= 13
            assert set(outcomes) <= {"answer", "sent"}
        report = json.loads((await anyio.run_process([SCRIPT, "usage", "--json"], env=fake_env(fake, **env))).stdout)
        reported = sum(row["calls"] for row in report["rows"])
        assert reported >= seen
        with http_server(fake, tmp_path, **env) as (base, _):
            async with mcp_client(f"{base}/mcp") as client:
                usage = await usage_of(client)
        assert usage["today"]["providers"]["fortytwo"]["calls"] == reported
        assert usage["today"]["total_tokens"] > 0
    finally:
        if own_redis is not None:
            own_redis.stop()


def children_of(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


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
    assert len(rows_of(path)) == 6  # the writer thread committed them once the lock was gone


async def test_a_burst_that_meets_a_locked_file_is_committed_whole(tmp_path: Path) -> None:
    path = tmp_path / "burst.sqlite3"
    store = SqliteUsageStore.open(path)
    row = UsageRow(
        at=time.time(), tool="ask_swarm", provider="swarms", model="m", outcome="answer", status=None, attempts=1,
        prompt_tokens=1, completion_tokens=2, total_tokens=3, latency_ms=1, job_id=None,
    )  # fmt: skip
    with write_lock(path):  # the writer thread cannot commit: the rows wait in its queue
        with anyio.move_on_after(0.5) as waited:
            async with anyio.create_task_group() as tg:
                for _ in range(5000):
                    tg.start_soon(_await, store.record(row))
        assert waited.cancelled_caught  # nothing was committed while the lock was held
        counted = await store.totals(row.periods)  # this process's rows count already, committed or not
    await anyio.to_thread.run_sync(store.close)
    assert counted[(row.periods[0], "swarms")].calls == 5000
    assert len(rows_of(path)) == 5000


async def test_with_a_shared_budget_a_request_leaves_once_its_row_is_on_file_and_the_loop_stays_free(
    connect: Callable[..., Any], fake: FakeUpstream, tmp_path: Path
) -> None:
    """Every process counts a request before it is sent: while another process holds the file locked, a
    request waits for its row (the server answering meanwhile), and goes as soon as the lock is gone."""
    path = tmp_path / "budget.sqlite3"
    async with connect(SWARM_MCP_STATE_DB=str(path), SWARM_MCP_DAILY_TOKEN_BUDGET="100000") as client:
        assert not (await client.call_tool("ask_swarm", {"prompt": "before"})).is_error
        assert [row["outcome"] for row in rows_of(path)] == ["answer"]  # settled when the call returned
        done = anyio.Event()

        async def held() -> None:
            assert not (await client.call_tool("ask_swarm", {"prompt": "held"})).is_error
            done.set()

        async with anyio.create_task_group() as tg:
            with write_lock(path):
                tg.start_soon(held)
                with anyio.fail_after(5):
                    while True:  # the server answers while the request waits for the lock
                        started = time.monotonic()
                        usage = await usage_of(client)
                        assert time.monotonic() - started < 0.5
                        if usage["today"]["providers"]["swarms"]["calls"] == 2:  # counted before it is sent
                            break
                await anyio.sleep(1)  # still held: its row is not on file, so it has not left
                assert len(fake.seen("swarms")) == 1
                assert not done.is_set()
            released = time.monotonic()
            with anyio.fail_after(3):
                await done.wait()
            assert time.monotonic() - released < 1  # it left once its row was on file, not after a timeout
        assert len(fake.seen("swarms")) == 2
        assert [row["outcome"] for row in rows_of(path)] == ["answer", "answer"]


async def _await(pending: Awaitable[None] | None) -> None:
    if pending is not None:
        await pending


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
        await _await(store.record(each))
    store.close()
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
