"""ask_both, model discovery, the usage ledger and budget, shared in-flight calls, the answer cache,
and the `check` command — against the loopback fake upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent, TextResourceContents

from swarm_inference_mcp.server.app import create_server
from swarm_inference_mcp.server.environment import load_settings
from tests.conftest import error_of, fake_env, trace_of
from tests.fake_upstream import FakeUpstream, Reply, error_body, eventually

pytestmark = pytest.mark.anyio

SCRIPT = Path(sys.executable).with_name("swarm-inference-mcp")


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


# --- ask_both ------------------------------------------------------------------------------------


async def test_ask_both_runs_concurrently_and_labels_each_answer(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    fake.script("fortytwo", Reply(delay_s=1.0))
    fake.script("swarms", Reply(delay_s=0.3))
    async with connect() as client:
        started = time.monotonic()
        result = await client.call_tool("ask_both", {"prompt": "which is better?", "swarms_model": "gpt-4.1"})
        elapsed = time.monotonic() - started
    assert not result.is_error
    assert 1.0 <= elapsed < 1.25, elapsed  # the slower provider's time, not the sum
    data = result.structured_content
    assert data is not None
    fortytwo, swarms = data["results"]
    assert fortytwo["provider"] == "fortytwo"
    assert fortytwo["answer"]["text"] == "fortytwo says: which is better?"
    assert trace_of(result, "fortytwo")["latency_ms"] >= 1000
    assert trace_of(result, "swarms")["model"] == "gpt-4.1"  # how the answer came about
    assert "model" not in swarms["answer"]
    assert swarms["answer"]["usage"]["total_tokens"] > 0
    assert fake.seen("swarms")[0].body == {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "which is better?"}],
    }
    text = text_of(result)
    assert text.startswith("## Fortytwo (fortytwo-prime, ")
    assert "## Swarms (gpt-4.1, " in text
    assert "fortytwo says: which is better?" in text
    assert "swarms says: which is better?" in text


async def test_ask_both_with_one_failure_returns_the_other_answer(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    fake.script("swarms", Reply(status=401, json=error_body("Invalid key", "authentication_error")))
    async with connect() as client:
        result = await client.call_tool("ask_both", {"prompt": "q"})
    assert not result.is_error
    data = result.structured_content
    assert data is not None
    fortytwo, swarms = data["results"]
    assert fortytwo["answer"]["text"] == "fortytwo says: q"
    assert "error" not in fortytwo
    assert "answer" not in swarms
    assert swarms["error"]["kind"] == "auth"
    assert swarms["error"]["status"] == 401
    assert "## Swarms (failed)\nSwarms: HTTP 401" in text_of(result)


async def test_ask_both_fails_only_when_both_fail(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("fortytwo", Reply(status=404, json=error_body("Model not found", "model_not_found")))
    fake.script("swarms", Reply(reset=True))
    async with connect() as client:
        result = await client.call_tool("ask_both", {"messages": [{"role": "user", "content": "q"}]})
    error = error_of(result)
    assert error["kind"] == "all_failed"
    assert [e["kind"] for e in error["errors"]] == ["not_found", "network"]
    assert error["retryable"] is False
    assert "## Fortytwo (failed)\nFortytwo: HTTP 404" in text_of(result)


async def test_ask_both_progress_stays_monotonic(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    values: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        values.append(progress)

    async with connect(mode="legacy") as client:
        result = await client.call_tool("ask_both", {"prompt": "a b c d e f"}, progress_callback=on_progress)
    assert not result.is_error
    assert values
    assert values == sorted(set(values))


# --- models --------------------------------------------------------------------------------------


async def test_list_models_lists_both_and_caches(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect() as client:
        first = await client.call_tool("list_models", {})
        second = await client.call_tool("list_models", {})
        resource = await client.read_resource("swarm://models")
    assert not first.is_error
    assert first.structured_content == second.structured_content
    providers = (first.structured_content or {})["providers"]
    assert providers["fortytwo"]["models"] == ["fortytwo-prime"]
    assert providers["swarms"]["models"] == ["gpt-4.1", "gpt-4.1-mini"]
    assert providers["swarms"]["default_model"] == "gpt-4.1-mini"
    assert first.content[0].text == (
        "Fortytwo (ask_fortytwo): default fortytwo-prime; also no others.\n"
        "Swarms (ask_swarm): default gpt-4.1-mini; also gpt-4.1."
    )
    assert len(fake.seen("fortytwo", "/models")) == 1
    assert len(fake.seen("swarms", "/models")) == 1
    assert fake.seen("fortytwo", "/models")[0].headers["authorization"] == f"Bearer {fake.keys['fortytwo']}"
    (contents,) = resource.contents
    assert isinstance(contents, TextResourceContents)
    assert json.loads(contents.text) == first.structured_content


async def test_list_models_reports_an_unconfigured_provider(fake: FakeUpstream) -> None:
    env = fake_env(fake)
    del env["SWARMS_API_KEY"]
    async with Client(create_server(load_settings(env))) as client:
        result = await client.call_tool("list_models", {})
    providers = (result.structured_content or {})["providers"]
    assert providers["fortytwo"]["models"] == ["fortytwo-prime"]
    assert providers["swarms"]["configured"] is False
    assert "SWARMS_API_KEY" in providers["swarms"]["error"]
    assert "models" not in providers["swarms"]  # left out, not null
    assert "error" not in providers["fortytwo"]
    assert fake.seen("swarms", "/models") == []


# --- ledger and budget ---------------------------------------------------------------------------


async def test_ledger_counts_calls_errors_and_tokens(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("swarms", Reply(status=400, json=error_body("bad", "invalid_request_error")))
    async with connect() as client:
        ok1 = await client.call_tool("ask_fortytwo", {"prompt": "one two"})
        failed = await client.call_tool("ask_swarm", {"prompt": "three"})
        ok2 = await client.call_tool("ask_swarm", {"prompt": "four five six"})
        await client.call_tool("ask_swarm", {"prompt": "x", "bogus": 1})  # argument error: never sent
        resource = await client.read_resource("swarm://usage")
    usage = json.loads(_text(resource))
    served_ft = fake.completion(fake.seen("fortytwo")[0])["usage"]
    served_sw = fake.completion(fake.seen("swarms")[1])["usage"]
    unbudgeted = {"token_budget": None, "budget_remaining": None}
    assert usage["providers"]["fortytwo"] == {"calls": 1, "errors": 0, **served_ft, **unbudgeted}
    assert usage["providers"]["swarms"] == {"calls": 2, "errors": 1, **served_sw, **unbudgeted}
    assert usage["total_tokens"] == served_ft["total_tokens"] + served_sw["total_tokens"]
    assert (ok2.structured_content or {})["usage"] == served_sw
    assert (ok1.structured_content or {})["usage"] == served_ft
    assert error_of(failed)["kind"] == "bad_request"


async def test_budget_refuses_the_call_after_it_is_spent(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect(SWARM_MCP_TOKEN_BUDGET="8") as client:
        first = await client.call_tool("ask_fortytwo", {"prompt": "spend some tokens here"})
        spent = json.loads(_text(await client.read_resource("swarm://usage")))
        assert spent["total_tokens"] >= 8
        assert spent["budget_remaining"] == 0
        refused = await client.call_tool("ask_swarm", {"prompt": "and more"})
    assert not first.is_error
    error = error_of(refused)
    assert error["kind"] == "budget"
    assert "SWARM_MCP_TOKEN_BUDGET" in text_of(refused)
    assert fake.seen("swarms") == []


async def test_a_provider_budget_refuses_only_that_provider(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect(FORTYTWO_TOKEN_BUDGET="5") as client:
        first = await client.call_tool("ask_fortytwo", {"prompt": "spend the fortytwo budget"})
        refused = await client.call_tool("ask_fortytwo", {"prompt": "once more"})
        other = await client.call_tool("ask_swarm", {"prompt": "swarms has no budget"})
        usage = json.loads(_text(await client.read_resource("swarm://usage")))
    assert not first.is_error
    ledger = usage["providers"]["fortytwo"]
    assert ledger["token_budget"] == 5
    assert ledger["budget_remaining"] == 0
    assert error_of(refused)["kind"] == "budget"
    assert "FORTYTWO_TOKEN_BUDGET" in text_of(refused)
    assert not other.is_error
    assert len(fake.seen("fortytwo")) == 1


async def test_budget_lets_calls_through_until_spent(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect(SWARM_MCP_TOKEN_BUDGET="1000") as client:
        for _ in range(3):
            assert not (await client.call_tool("ask_swarm", {"prompt": "small"})).is_error
    assert len(fake.seen("swarms")) == 3


# --- never pay twice ----------------------------------------------------------------------------


async def test_identical_concurrent_calls_share_one_upstream_request(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    fake.script("fortytwo", Reply(delay_s=0.5))
    results: list[CallToolResult] = []
    async with connect() as client:

        async def call() -> None:
            results.append(await client.call_tool("ask_fortytwo", {"prompt": "the same question"}))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(call)
        usage = json.loads(_text(await client.read_resource("swarm://usage")))
    assert len(fake.seen("fortytwo")) == 1
    assert len(results) == 5
    assert len({text_of(r) for r in results}) == 1
    assert len({json.dumps((r.structured_content or {})["usage"]) for r in results}) == 1
    assert usage["providers"]["fortytwo"]["calls"] == 1


async def test_different_requests_are_not_merged(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("swarms", Reply(delay_s=0.3), Reply(delay_s=0.3))
    async with connect() as client, anyio.create_task_group() as tg:
        tg.start_soon(client.call_tool, "ask_swarm", {"prompt": "same"})
        tg.start_soon(client.call_tool, "ask_swarm", {"prompt": "same", "temperature": 0.1})
        tg.start_soon(client.call_tool, "ask_fortytwo", {"prompt": "same"})
    assert len(fake.seen("swarms")) == 2
    assert len(fake.seen("fortytwo")) == 1


async def test_a_caller_leaving_does_not_cancel_the_shared_job(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("fortytwo", Reply(delay_s=0.6))
    survivor: list[CallToolResult] = []
    async with connect() as client:

        async def second() -> None:
            await eventually(lambda: len(fake.seen("fortytwo")) == 1)  # the first call's request is out
            survivor.append(await client.call_tool("ask_fortytwo", {"prompt": "shared"}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            with anyio.move_on_after(0.2) as first_gave_up:
                await client.call_tool("ask_fortytwo", {"prompt": "shared"})
        assert first_gave_up.cancelled_caught
    assert len(survivor) == 1
    assert not survivor[0].is_error
    assert len(fake.seen("fortytwo")) == 1
    assert fake.seen("fortytwo")[0].disconnected is None


async def test_a_joiner_asking_for_progress_gets_heartbeats_from_a_plain_job(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    fake.script("swarms", Reply(delay_s=1.2))
    beats: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        beats.append(message)

    results: list[CallToolResult] = []
    async with connect(mode="legacy", SWARM_MCP_HEARTBEAT="0.25") as client:

        async def joiner() -> None:
            await eventually(lambda: len(fake.seen("swarms")) == 1)  # the first call's request is out
            results.append(await client.call_tool("ask_swarm", {"prompt": "slow"}, progress_callback=on_progress))

        async with anyio.create_task_group() as tg:
            tg.start_soon(joiner)
            results.append(await client.call_tool("ask_swarm", {"prompt": "slow"}))  # no progress token
    assert len(fake.seen("swarms")) == 1
    assert "stream" not in fake.seen("swarms")[0].body
    assert len(results) == 2
    assert text_of(results[0]) == text_of(results[1])
    assert len(beats) >= 2
    assert all(b and "no answer text yet" in b for b in beats)


async def test_cache_serves_exact_repeats_within_its_ttl(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect(SWARM_MCP_CACHE_TTL="60") as client:
        first = await client.call_tool("ask_swarm", {"prompt": "cache me"})
        second = await client.call_tool("ask_swarm", {"prompt": "cache me"})
        other = await client.call_tool("ask_swarm", {"prompt": "not me"})
    assert len(fake.seen("swarms")) == 2
    assert text_of(first) == text_of(second)
    assert (second.structured_content or {})["cached"] is True
    assert "cached" not in (first.structured_content or {})  # left out unless reused
    assert not other.is_error


async def test_cache_is_off_by_default(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect() as client:
        await client.call_tool("ask_swarm", {"prompt": "again"})
        await client.call_tool("ask_swarm", {"prompt": "again"})
    assert len(fake.seen("swarms")) == 2


def _text(result: Any) -> str:
    (contents,) = result.contents
    assert isinstance(contents, TextResourceContents)
    return str(contents.text)


# --- check ---------------------------------------------------------------------------------------


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "NO_PROXY": "127.0.0.1", **env},
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_check_all_good(fake: FakeUpstream) -> None:
    done = run_check(fake_env(fake))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fortytwo: OK, reachable and authorised" in done.stdout
    assert "swarms: OK, reachable and authorised" in done.stdout
    assert f"FORTYTWO_API_KEY = …{fake.keys['fortytwo'][-4:]}" in done.stdout
    assert "SWARM_MCP_STATE_DB = None" not in done.stdout  # the file it will use, never None
    for key in fake.keys.values():
        assert key not in done.stdout + done.stderr
    assert not fake.seen(path_suffix="/chat/completions")


@pytest.mark.parametrize("state_db", [None, "off"], ids=["default", "off"])
def test_check_names_where_usage_is_kept(fake: FakeUpstream, tmp_path: Path, state_db: str | None) -> None:
    env = fake_env(fake, XDG_STATE_HOME=str(tmp_path / "state"))
    if state_db is not None:
        env["SWARM_MCP_STATE_DB"] = state_db
    done = run_check(env)
    expected = tmp_path / "state" / "swarm-inference-mcp" / "usage.sqlite3" if state_db is None else None
    shown = str(expected) if expected is not None else "off (usage kept in memory)"
    assert f"SWARM_MCP_STATE_DB = {shown}\n" in done.stdout


def test_usage_on_a_missing_state_file_says_so(tmp_path: Path) -> None:
    """Before, it said "No calls recorded." for a path that may simply be mistyped."""
    missing = tmp_path / "typo.sqlite3"
    done = subprocess.run(
        [SCRIPT, "usage"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "SWARM_MCP_STATE_DB": str(missing)},
        check=False,
    )
    assert done.returncode == 2
    assert f"the usage state file {missing} does not exist yet" in done.stdout + done.stderr
    assert not missing.exists()  # reading usage never creates the file


def test_check_bad_key_names_provider_and_reason(fake: FakeUpstream) -> None:
    done = run_check(fake_env(fake, SWARMS_API_KEY="sw-this-key-is-wrong-123"))
    assert done.returncode != 0
    (line,) = [line for line in done.stdout.splitlines() if line.strip().startswith("swarms:")]
    assert "FAILED" in line
    assert "HTTP 401" in line
    assert "SWARMS_API_KEY" in line
    assert "fortytwo: OK" in done.stdout
    assert "sw-this-key-is-wrong-123" not in done.stdout + done.stderr


def test_check_unreachable_upstream(fake: FakeUpstream) -> None:
    done = run_check(fake_env(fake, FORTYTWO_BASE_URL="http://127.0.0.1:9/v1", SWARM_MCP_CONNECT_TIMEOUT="2"))
    assert done.returncode != 0
    assert "fortytwo: FAILED at http://127.0.0.1:9/v1: Fortytwo: could not connect" in done.stdout


def test_check_with_no_provider_configured_fails(fake: FakeUpstream) -> None:
    env = {"FORTYTWO_BASE_URL": fake.url("fortytwo"), "SWARMS_BASE_URL": fake.url("swarms")}
    done = run_check(env)
    assert done.returncode != 0
    assert "fortytwo: not configured; set FORTYTWO_API_KEY" in done.stdout
