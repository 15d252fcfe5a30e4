"""Job handles: a slow answer comes back as a handle in time, and get_result / cancel_job act on it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent, TextResourceContents

from tests.conftest import MovableClock, error_of
from tests.fake_upstream import FakeUpstream, Reply, eventually
from tests.servers import http_server, mcp_client

pytestmark = pytest.mark.anyio


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def handle_of(result: CallToolResult) -> dict[str, Any]:
    """A `running` result: not an error, with a job id and the words that tell a model what to do."""
    assert not result.is_error, text_of(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    assert content["status"] == "running", content
    assert content["job_id"] in text_of(result)
    assert "get_result" in text_of(result)
    assert "Do not ask again" in text_of(result)
    return content


def answer_of(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    assert content["status"] == "done", content
    return content


async def jobs_listing(client: Client) -> list[dict[str, Any]]:
    (contents,) = (await client.read_resource("swarm://jobs")).contents
    assert isinstance(contents, TextResourceContents)
    jobs: list[dict[str, Any]] = json.loads(contents.text)["jobs"]
    return jobs


async def test_a_slow_answer_comes_back_as_a_handle_and_get_result_collects_it(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    fake.script("fortytwo", Reply(delay_s=3.0))
    async with connect(SWARM_MCP_WAIT="1") as client:
        started = time.monotonic()
        first = await client.call_tool("ask_fortytwo", {"prompt": "a hard question"})
        handed_out = time.monotonic() - started
        handle = handle_of(first)
        assert handle["tool"] == "ask_fortytwo"
        assert handle["providers"] == ["fortytwo"]
        assert 0.9 <= handle["elapsed_s"] <= 1.5
        assert handle["forget_after_s"] == 3600
        assert text_of(first).startswith("Fortytwo is still working on this (1 s so far;")
        (listed,) = await jobs_listing(client)
        assert listed["status"] == "running"
        assert "hard question" not in json.dumps(listed)  # no prompt text
        result = await client.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 10})
        (finished,) = await jobs_listing(client)
    assert 0.9 <= handed_out < 1.6, handed_out
    assert answer_of(result)["text"] == "fortytwo says: a hard question"
    assert text_of(result) == "fortytwo says: a hard question"
    assert len(fake.seen("fortytwo")) == 1
    assert finished["status"] == "done"
    assert finished["usage"]["fortytwo"]["total_tokens"] > 0


async def test_an_answer_in_time_comes_back_as_before(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect(SWARM_MCP_WAIT="5") as client:
        result = await client.call_tool("ask_swarm", {"prompt": "quick"})
        assert await jobs_listing(client) == []  # nobody holds its id, so it is not kept
    assert answer_of(result)["text"] == "swarms says: quick"


async def test_wait_s_zero_hands_back_a_handle_at_once(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("swarms", Reply(delay_s=0.5))
    async with connect() as client:
        started = time.monotonic()
        handle = handle_of(await client.call_tool("ask_swarm", {"prompt": "later", "wait_s": 0}))
        assert time.monotonic() - started < 0.3
        still = handle_of(await client.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 0}))
        assert still["job_id"] == handle["job_id"]
        result = await client.call_tool("get_result", {"job_id": handle["job_id"]})
    assert answer_of(result)["text"] == "swarms says: later"


async def test_a_wait_longer_than_the_deadline_waits_for_the_outcome(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    fake.script("fortytwo", Reply(hang=True))
    async with connect() as client:
        result = await client.call_tool("ask_fortytwo", {"prompt": "x", "timeout_s": 1, "wait_s": 1})
    assert error_of(result)["kind"] == "timeout"  # the outcome, not a handle that would be stale at once


async def test_a_cancelled_get_result_leaves_the_job_running(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("fortytwo", Reply(delay_s=1.5))
    async with connect(SWARM_MCP_WAIT="0.2") as client:
        handle = handle_of(await client.call_tool("ask_fortytwo", {"prompt": "keep going"}))
        with anyio.move_on_after(0.3):
            await client.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 10})
        result = await client.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 10})
    assert answer_of(result)["text"] == "fortytwo says: keep going"
    (request,) = fake.seen("fortytwo")
    assert request.disconnected is None


async def test_a_client_that_disconnects_leaves_the_job_to_another(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.script("swarms", Reply(delay_s=1.5))
    with http_server(fake, tmp_path, SWARM_MCP_WAIT="0.3") as (base, _):
        async with mcp_client(f"{base}/mcp") as first:
            handle = handle_of(await first.call_tool("ask_swarm", {"prompt": "outlive me"}))
        async with mcp_client(f"{base}/mcp") as second:
            result = await second.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 10})
    assert answer_of(result)["text"] == "swarms says: outlive me"
    (request,) = fake.seen("swarms")
    assert request.disconnected is None


async def test_cancel_job_aborts_the_upstream_request(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("fortytwo", Reply(hang=True))
    async with connect(SWARM_MCP_WAIT="0.2") as client:
        handle = handle_of(await client.call_tool("ask_fortytwo", {"prompt": "never mind"}))
        cancelled_at = time.monotonic()
        cancelled = await client.call_tool("cancel_job", {"job_id": handle["job_id"]})
        (request,) = fake.seen("fortytwo")
        await eventually(lambda: request.disconnected is not None)
        later = await client.call_tool("get_result", {"job_id": handle["job_id"]})
        again = await client.call_tool("cancel_job", {"job_id": handle["job_id"]})
        (listed,) = await jobs_listing(client)
    assert cancelled.structured_content == {"job_id": handle["job_id"], "status": "cancelled"}
    assert "aborted" in text_of(cancelled)
    assert request.disconnected is not None
    assert request.disconnected - cancelled_at < 0.5
    error = error_of(later)
    assert error["kind"] == "cancelled"
    assert "cancel_job" in error["message"]
    assert again.structured_content == {"job_id": handle["job_id"], "status": "finished"}
    assert "already finished (cancelled)" in text_of(again)
    assert listed["status"] == "cancelled"


async def test_identical_calls_share_the_job_while_it_runs_and_after_within_the_ttl(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    fake.script("fortytwo", Reply(delay_s=1.0))
    ask = {"prompt": "the same question", "model": "fortytwo-prime"}
    clock = MovableClock()
    async with connect(SWARM_MCP_WAIT="0.2", SWARM_MCP_JOB_TTL="60", clock=clock) as client:
        first = handle_of(await client.call_tool("ask_fortytwo", ask))
        second = handle_of(await client.call_tool("ask_fortytwo", ask))
        assert second["job_id"] == first["job_id"]  # joined, not asked again
        answer = answer_of(await client.call_tool("get_result", {"job_id": first["job_id"], "wait_s": 5}))
        again = answer_of(await client.call_tool("ask_fortytwo", ask))
        assert again == answer  # the kept outcome, within the TTL
        assert len(fake.seen("fortytwo")) == 1
        clock.advance(59)
        kept = answer_of(await client.call_tool("ask_fortytwo", ask))  # still kept a second before the TTL
        assert len(fake.seen("fortytwo")) == 1
        (contents,) = (await client.read_resource("swarm://jobs")).contents
        assert isinstance(contents, TextResourceContents)
        (entry,) = json.loads(contents.text)["jobs"]
        assert 0 < entry["forget_in_s"] <= 1  # what the listing says is what the expiry reads
        clock.advance(1)  # the TTL has passed
        fresh = answer_of(await client.call_tool("ask_fortytwo", ask))
        expired = await client.call_tool("get_result", {"job_id": first["job_id"]})
    assert kept == answer
    assert fresh["text"] == answer["text"]
    assert len(fake.seen("fortytwo")) == 2
    error = error_of(expired)
    assert error["kind"] == "unknown_job"
    assert "SWARM_MCP_JOB_TTL" in error["message"]


async def test_unknown_ids_say_why(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect() as client:
        malformed = await client.call_tool("get_result", {"job_id": "not-a-job"})
        other_process = await client.call_tool("cancel_job", {"job_id": "j_000000-0123456789ab"})
        handle = handle_of(await client.call_tool("ask_swarm", {"prompt": "x", "wait_s": 0}))
        instance = handle["job_id"][2:8]
        never = await client.call_tool("get_result", {"job_id": f"j_{instance}-0123456789ab"})
    assert error_of(malformed)["kind"] == "unknown_job"
    assert "is not a job id" in text_of(malformed)
    assert "restarted" in text_of(other_process)
    assert "was never started by this server" in text_of(never)


async def test_at_most_max_jobs_outcomes_are_kept(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect(SWARM_MCP_MAX_JOBS="1") as client:
        first = handle_of(await client.call_tool("ask_swarm", {"prompt": "one", "wait_s": 0}))
        await client.call_tool("get_result", {"job_id": first["job_id"]})
        second = handle_of(await client.call_tool("ask_swarm", {"prompt": "two", "wait_s": 0}))
        await client.call_tool("get_result", {"job_id": second["job_id"]})
        evicted = await client.call_tool("get_result", {"job_id": first["job_id"]})
        kept = await client.call_tool("get_result", {"job_id": second["job_id"]})
        assert [job["id"] for job in await jobs_listing(client)] == [second["job_id"]]
    assert "SWARM_MCP_MAX_JOBS" in error_of(evicted)["message"]
    assert answer_of(kept)["text"] == "swarms says: two"


async def test_ask_both_hands_back_one_handle_for_both_providers(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    fake.script("swarms", Reply(delay_s=1.5))
    async with connect(SWARM_MCP_WAIT="0.5") as client:
        handle = handle_of(await client.call_tool("ask_both", {"prompt": "fast and slow"}))
        assert handle["providers"] == ["fortytwo", "swarms"]
        assert "Fortytwo and Swarms are still working" in text_of(await client.call_tool(
            "get_result", {"job_id": handle["job_id"], "wait_s": 0}
        ))  # fmt: skip
        result = await client.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 5})
    both = answer_of(result)
    assert [r["answer"]["text"] for r in both["results"]] == [
        "fortytwo says: fast and slow",
        "swarms says: fast and slow",
    ]
    assert "## Fortytwo" in text_of(result)
    assert len(fake.seen("fortytwo")) == 1
    assert len(fake.seen("swarms")) == 1


async def test_get_result_with_a_progress_token_gets_heartbeats(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    fake.script("fortytwo", Reply(delay_s=1.2))
    beats: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        beats.append(message)

    async with connect(mode="legacy", SWARM_MCP_WAIT="0", SWARM_MCP_HEARTBEAT="0.3") as client:
        handle = handle_of(await client.call_tool("ask_fortytwo", {"prompt": "plain job"}))
        result = await client.call_tool(
            "get_result", {"job_id": handle["job_id"], "wait_s": 5}, progress_callback=on_progress
        )
    assert answer_of(result)["text"] == "fortytwo says: plain job"
    assert len(beats) >= 2
    assert all("Fortytwo is working" in (beat or "") for beat in beats)
