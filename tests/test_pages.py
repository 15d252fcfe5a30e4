"""Answers that fit every host: a long answer comes in pages a model reads on with get_result, each
result within `SWARM_MCP_MAX_RESULT_CHARS` as a host receives it, and an upstream body has a bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, ResourceLink, TextContent

from tests.conftest import error_of, fake_env
from tests.fake_upstream import FakeUpstream, Reply
from tests.servers import http_server, mcp_client

pytestmark = pytest.mark.anyio

LIMIT = 60_000
"""The default `SWARM_MCP_MAX_RESULT_CHARS`."""


def long_text(chars: int) -> str:
    """Paragraphs of words with what JSON must escape and characters outside ASCII, `chars` long."""
    paragraph = 'A swarm "ranks" answers\tand notes: naïve façade, 蜂群, 🐝 emoji.\nSecond line of it.\n\n'
    return (paragraph * (chars // len(paragraph) + 1))[:chars]


def wire_size(result: CallToolResult) -> int:
    """The result's characters as a host receives them (its JSON), with room for the JSON-RPC envelope."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True)) + 60


async def read_all(client: Client, first: CallToolResult) -> list[CallToolResult]:
    """Every page of a long answer, following `next_offset` with get_result."""
    pages = [first]
    while (content := pages[-1].structured_content or {}).get("next_offset") is not None:
        pages.append(
            await client.call_tool("get_result", {"job_id": content["job_id"], "offset": content["next_offset"]})
        )
    return pages


def joined(pages: list[CallToolResult]) -> str:
    return "".join((page.structured_content or {})["text"] for page in pages)


def check_pages(pages: list[CallToolResult], whole: str) -> None:
    """Each page fits, says where it is, ends at a break where there is one, and the pages join to `whole`."""
    assert len(pages) > 1
    for number, page in enumerate(pages):
        assert not page.is_error
        assert wire_size(page) <= LIMIT, (number, wire_size(page))
        content = page.structured_content or {}
        assert content["total_chars"] == len(whole)
        text_block, link = page.content
        assert isinstance(text_block, TextContent)
        assert isinstance(link, ResourceLink)
        assert str(link.uri) == f"swarm://jobs/{content['job_id']}/answer"
        assert text_block.text.startswith(content["text"])  # the page, then where it is and how to read on
        last = number == len(pages) - 1
        assert ("next_offset" in content) is not last
        if not last:
            assert f"offset {content['next_offset']}" in text_block.text
            assert content["text"].endswith("\n")  # cut after a line, never inside one
    assert joined(pages) == whole


async def test_a_five_megabyte_answer_comes_in_pages_that_join_to_it_exactly(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    whole = long_text(5_000_000)
    fake.script("swarms", Reply(text=whole))
    async with connect() as client:
        first = await client.call_tool("ask_swarm", {"prompt": "long"})
        pages = await read_all(client, first)
        again = await client.call_tool("ask_swarm", {"prompt": "long"})  # the identical call, within the TTL
    check_pages(pages, whole)
    assert len(fake.seen("swarms")) == 1  # read on for free: one request, however many pages
    assert (again.structured_content or {})["job_id"] == (first.structured_content or {})["job_id"]
    assert (first.structured_content or {})["usage"]["total_tokens"] > 0


async def test_ten_long_choices_share_the_pages_each_labelled(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    text = long_text(40_000)
    fake.script("swarms", Reply(text=text))
    async with connect() as client:
        pages = await read_all(client, await client.call_tool("ask_swarm", {"prompt": "long", "n": 10}))
    check_pages(pages, "\n\n".join(f"[choice {i}]\n{text}" for i in range(1, 11)))


async def test_ask_both_with_two_long_answers_comes_in_pages_with_both_labelled(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    fortytwo, swarms = long_text(90_000), long_text(70_000).upper()
    fake.script("fortytwo", Reply(text=fortytwo))
    fake.script("swarms", Reply(text=swarms))
    async with connect() as client:
        pages = await read_all(client, await client.call_tool("ask_both", {"prompt": "long"}))
        again = await read_all(client, pages[0])  # reading again reads the same
    whole = joined(pages)
    check_pages(pages, whole)
    assert joined(again) == whole
    assert whole.startswith("## Fortytwo (")
    head, tail = whole.split("\n\n## Swarms (", 1)
    assert head.endswith(fortytwo)
    assert tail.endswith(swarms)


async def test_the_resource_link_reads_the_same_answer_in_parts(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    whole = long_text(200_000)
    fake.script("swarms", Reply(text=whole))
    async with connect() as client:
        first = await client.call_tool("ask_swarm", {"prompt": "long"})
        link = first.content[1]
        assert isinstance(link, ResourceLink)
        parts, uri = [], str(link.uri)
        while True:
            read = await client.read_resource(uri)
            (contents,) = read.contents
            assert len(json.dumps(read.model_dump(by_alias=True, mode="json"))) <= LIMIT
            parts.append(contents.text)
            meta = contents.meta or {}
            assert meta["total_chars"] == len(whole)
            if "next_offset" not in meta:
                break
            uri = f"{link.uri}/{meta['next_offset']}"
    assert "".join(parts) == whole
    assert len(parts) > 1


async def test_a_short_answer_looks_as_it_always_did(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect() as client:
        result = await client.call_tool("ask_swarm", {"prompt": "short"})
    assert [block.type for block in result.content] == ["text"]
    assert result.structured_content == {
        "status": "done",
        "text": "swarms says: short",
        "usage": result.structured_content["usage"],
    }


async def test_an_answer_past_the_response_limit_is_cut_off_and_fails_in_one_sentence(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    fake.script("swarms", Reply(text=long_text(300_000)))
    fake.script("fortytwo", Reply(text=long_text(300_000)))
    async with connect(SWARM_MCP_MAX_RESPONSE_BYTES="65536") as client:
        plain = await client.call_tool("ask_swarm", {"prompt": "too long"})
        streamed = await client.call_tool("ask_fortytwo", {"prompt": "too long"}, progress_callback=_ignore)
    for result, label in ((plain, "Swarms"), (streamed, "Fortytwo")):
        error = error_of(result)
        assert error["kind"] == "bad_response"
        assert error["message"].startswith(f"{label}: ")
        assert "65,536 bytes (SWARM_MCP_MAX_RESPONSE_BYTES)" in error["message"]


async def _ignore(progress: float, total: float | None, message: str | None) -> None:
    pass


@pytest.mark.slow
@pytest.mark.parametrize("client", ["typescript-sdk", "python-mcp1"])
def test_clients_no_one_here_wrote_read_every_page_and_the_resource_link(
    client: str, fake: FakeUpstream, tmp_path: Path
) -> None:
    """The TypeScript SDK 1.x (what Claude Code and most hosts embed) checks each page against the tool's
    output schema; it and the Python `mcp` 1.x client read every page and every part of the resource
    link, and both join to the upstream's answer exactly."""
    from tests import third_party  # noqa: PLC0415 - installs the clients on first use
    from tests.test_cross_client import run_plan  # noqa: PLC0415

    installed = {"npm": third_party.npm_clients(), "mcp1": third_party.mcp1_python()}
    five_mb, choice = long_text(5_000_000), long_text(40_000)
    fake.script("swarms", Reply(text=five_mb))
    fake.script("swarms", Reply(text=choice))
    fake.script("fortytwo", Reply(text=long_text(90_000)))
    fake.script("swarms", Reply(text=long_text(70_000).upper()))
    steps = [
        {"op": "pages", "name": "ask_swarm", "arguments": {"prompt": "five megabytes"}},
        {"op": "pages", "name": "ask_swarm", "arguments": {"prompt": "ten choices", "n": 10}},
        {"op": "pages", "name": "ask_both", "arguments": {"prompt": "both long"}},
    ]
    big, choices, both = run_plan(client, installed, tmp_path, fake_env(fake), steps, timeout_ms=120_000)
    expected = [five_mb, "\n\n".join(f"[choice {i}]\n{choice}" for i in range(1, 11))]
    for outcome, whole in zip((big, choices, both), [*expected, None], strict=True):
        assert outcome["ok"], outcome["error"]
        pages, reads = outcome["result"]["pages"], outcome["result"]["reads"]
        assert len(pages) > 1
        for page in pages:
            assert not page.get("isError"), page
            assert len(json.dumps(page, ensure_ascii=False)) + 60 <= LIMIT
        text = "".join(page["structuredContent"]["text"] for page in pages)
        assert text == (whole if whole is not None else text)
        assert "".join(read["contents"][0]["text"] for read in reads) == text
    both_text = "".join(page["structuredContent"]["text"] for page in both["result"]["pages"])
    assert both_text.startswith("## Fortytwo (")
    assert "\n\n## Swarms (" in both_text


@pytest.mark.slow
def test_a_huge_upstream_body_is_cut_off_in_bounded_memory(fake: FakeUpstream) -> None:
    """A 256 MiB answer against the default 32 MiB limit: the server stops reading at the limit, the call
    fails as bad_response, and the server's peak memory stays under 200 MiB (reading it whole would
    hold the body, then its parse, several times over)."""
    fake.script("swarms", Reply(body=b'{"choices": [{"message": {"content": "' + b"a" * (256 << 20) + b'"}}]}'))
    script = Path(sys.executable).with_name("swarm-inference-mcp")
    env = {"PATH": os.environ.get("PATH", ""), "NO_PROXY": "127.0.0.1", **fake_env(fake)}
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL}
    with subprocess.Popen([script], env=env, **pipes) as process:  # type: ignore[call-overload]
        stdin, stdout = process.stdin, process.stdout

        def send(message: dict[str, Any]) -> dict[str, Any]:
            stdin.write(json.dumps(message).encode() + b"\n")
            stdin.flush()
            reply: dict[str, Any] = json.loads(stdout.readline())
            return reply

        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
        stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
        params = {"name": "ask_swarm", "arguments": {"prompt": "huge"}}
        reply = send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params})
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
        stdin.close()
        process.wait(timeout=30)
    assert reply["result"]["isError"] is True
    error = reply["result"]["_meta"]["swarm-inference-mcp/error"]
    assert error["kind"] == "bad_response"
    assert "33,554,432 bytes (SWARM_MCP_MAX_RESPONSE_BYTES)" in error["message"]
    assert peak_kib < 200 * 1024, peak_kib


@pytest.mark.slow
async def test_a_tasks_long_answer_is_its_first_page_and_reads_on_with_the_task_id(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Tasks and handles agree: a long answer's task result (2025-11-25 through the TypeScript SDK 1.x's
    tasks client, 2026-07-28 through ext-tasks) is the same first page a plain call gets, its job id the
    task's, and get_result reads on from it."""
    from tests import third_party  # noqa: PLC0415 - installs the clients on first use
    from tests.test_tasks import FAST, run_v1, run_v2  # noqa: PLC0415

    whole = long_text(200_000)
    fake.script("swarms", Reply(delay_s=1.5, text=whole), Reply(delay_s=1.5, text=whole))
    step = {"op": "stream", "name": "ask_swarm", "arguments": {"prompt": "as a 2025 task"}}
    (v1,) = run_v1(third_party.npm_clients(), tmp_path, fake_env(fake, **FAST), [step])
    first_v1 = v1["messages"][-1]["result"]
    assert first_v1["structuredContent"]["job_id"] == v1["messages"][0]["taskId"]
    with http_server(fake, tmp_path, "--stateless", **FAST) as (base, _):
        step = {"op": "task", "name": "ask_swarm", "arguments": {"prompt": "as a 2026 task"}}
        (v2,) = run_v2(third_party.npm_v2_clients(), tmp_path, f"{base}/mcp", [step])["outcomes"]
        assert v2["kind"] == "task"
        first_v2 = CallToolResult.model_validate(v2["result"])
        assert (first_v2.structured_content or {})["job_id"] == v2["taskId"]
        async with mcp_client(f"{base}/mcp") as client:
            pages = await read_all(client, first_v2)
    check_pages(pages, whole)
    for first in (first_v1, v2["result"]):
        assert first["structuredContent"]["text"] == (pages[0].structured_content or {})["text"]
        assert first["structuredContent"]["next_offset"] == (pages[0].structured_content or {})["next_offset"]
