"""No key leaves the server in pieces: an upstream that echoes a key back at any offset around the point
where its message is clipped leaves no fragment of it in a result or a log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp_types import TextContent

from swarm_inference_mcp.tools.errors.reading import upstream_words
from tests.fake_upstream import FakeUpstream, Reply, error_body

pytestmark = pytest.mark.anyio

CLIP = 300
"""The length an upstream's message is clipped to (`tools.errors._MAX_UPSTREAM_TEXT`)."""
SHORTEST = 4
"""Fragments of a key this long or longer must not appear anywhere."""


def fragments(key: str) -> set[str]:
    return {key[i : i + n] for n in range(SHORTEST, len(key) + 1) for i in range(len(key) - n + 1)}


def leaked(key: str, text: str) -> list[str]:
    return sorted(f for f in fragments(key) if f in text)


async def test_an_echoed_key_leaves_no_fragment_at_any_offset_around_the_clip(
    connect: Callable[..., Any], fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    paddings = range(CLIP - 40, CLIP + 5)
    tools = {"fortytwo": "ask_fortytwo", "swarms": "ask_swarm"}
    with caplog.at_level(logging.DEBUG):
        async with connect(SWARM_MCP_MAX_RETRIES="0") as client:
            for provider, tool in tools.items():
                key = fake.keys[provider]
                for padding in paddings:
                    message = "x" * padding + key + " and more words after it"
                    fake.script(provider, Reply(status=401, json=error_body(message, "authentication_error")))
                    with anyio.fail_after(10):
                        result = await client.call_tool(tool, {"prompt": "hi"})
                    assert result.is_error
                    block = result.content[0]
                    assert isinstance(block, TextContent)
                    seen = block.text + json.dumps(result.meta)
                    assert leaked(key, seen) == [], (padding, block.text)
                    assert "check that" in block.text  # the sentence itself survives the redaction
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for provider in tools:
        assert leaked(fake.keys[provider], logged) == []


@pytest.mark.parametrize("padding", range(CLIP - 30, CLIP + 2))
def test_upstream_words_cut_no_key_of_any_length(padding: int) -> None:
    for key in ("k" * 8 + "Q7", "sk-live-0123456789abcdefghij", "abcd"):
        text = upstream_words("y" * padding + key + "z" * 10, (key,))
        assert len(text) <= CLIP
        assert leaked(key, text) == [] or len(key) < SHORTEST, (key, text)
        assert text.startswith("y" * min(padding, CLIP - 40))  # only the key's part is removed


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("ask_swarm", {"messages": [{"role": "user", "content": "x" * 400_000}] * 13}),
        ("ask_swarm", {"messages": [{"role": "user", "content": [{"type": "text", "text": "y" * 500_000}] * 14}]}),
        ("ask_fortytwo", {"messages": [{"role": "user", "content": "z" * 300_000}] * 2}),
        ("ask_both", {"messages": [{"role": "user", "content": "w" * 250_001}] * 2}),
        ("ask_fortytwo", {"prompt": "p" * 300_000, "system": "s" * 300_000}),
    ],
    ids=["swarms messages", "swarms parts", "fortytwo messages", "both messages", "prompt and system"],
)
async def test_the_text_limit_holds_for_the_whole_request(
    connect: Callable[..., Any], fake: FakeUpstream, tool: str, arguments: dict[str, Any]
) -> None:
    async with connect() as client:
        with anyio.fail_after(60):
            result = await client.call_tool(tool, arguments)
    assert result.is_error
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert "500000" in block.text, block.text
    assert "invalid arguments" in block.text
    assert fake.seen() == []
