"""Streaming and progress: when the client sends a progress token, the answer is streamed upstream
and its growth reported; silence gets heartbeats; a broken stream keeps its partial text.

The in-memory client runs in "legacy" mode here: that path carries the progress token in `_meta`
exactly as stdio and HTTP do (the direct in-process dispatcher keeps it to itself). The same
behaviour over a real stdio subprocess is in test_stdio.py.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
from mcp_types import CallToolResult, TextContent

from tests.conftest import error_of, trace_of
from tests.fake_upstream import FakeUpstream, Reply, cancel_when, chunk, error_body, eventually, sse_frame

pytestmark = pytest.mark.anyio


class Progress:
    """Collects (time, progress, message) as the client's progress callback sees them."""

    def __init__(self) -> None:
        self.updates: list[tuple[float, float, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.updates.append((time.monotonic(), progress, message))

    @property
    def values(self) -> list[float]:
        return [p for _, p, _ in self.updates]

    def messages(self) -> list[str]:
        return [m or "" for _, _, m in self.updates]


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def comparable(result: CallToolResult) -> dict[str, Any]:
    return dict(result.structured_content or {})  # the varying id and latency are in `_meta`


async def test_streamed_answer_reports_progress_and_matches_the_plain_answer(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    progress = Progress()
    prompt = "tell me about swarms " * 5
    async with connect(mode="legacy") as client:
        plain = await client.call_tool("ask_swarm", {"prompt": prompt})
        streamed = await client.call_tool("ask_swarm", {"prompt": prompt}, progress_callback=progress)
    plain_request, streamed_request = fake.seen("swarms")[:2]
    assert "stream" not in plain_request.body
    assert streamed_request.body["stream"] is True
    assert streamed_request.schema_errors == []
    assert not streamed.is_error
    assert text_of(streamed) == text_of(plain)
    assert comparable(streamed) == comparable(plain)
    assert streamed.structured_content is not None
    assert plain.structured_content is not None
    assert streamed.structured_content["usage"] == plain.structured_content["usage"]
    assert progress.updates
    assert progress.values == sorted(set(progress.values))
    assert "tell me about swarms" in progress.messages()[-1]


async def test_progress_is_coalesced_not_one_per_token(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    words = [f"w{i}" for i in range(400)]
    frames = [sse_frame(chunk(" " + w)) for w in words] + [sse_frame(chunk(finish="stop")), sse_frame("[DONE]")]
    fake.script("fortytwo", Reply(sse=frames, sse_delay_s=0.004))
    progress = Progress()
    async with connect(mode="legacy") as client:
        started = time.monotonic()
        result = await client.call_tool("ask_fortytwo", {"prompt": "long"}, progress_callback=progress)
        elapsed = time.monotonic() - started
    assert not result.is_error
    assert text_of(result) == " " + " ".join(words)
    assert result.structured_content is not None
    assert "usage" not in result.structured_content  # the stream sent none; none is invented
    assert 2 <= len(progress.updates) <= elapsed * 4 + 2
    assert progress.values == sorted(set(progress.values))
    assert "w399" in progress.messages()[-1]


async def test_silence_before_the_stream_gets_heartbeats(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("fortytwo", Reply(delay_s=1.3))
    progress = Progress()
    async with connect(mode="legacy", SWARM_MCP_HEARTBEAT="0.25") as client:
        started = time.monotonic()
        result = await client.call_tool("ask_fortytwo", {"prompt": "think hard"}, progress_callback=progress)
    assert not result.is_error
    beats = [(t, m) for t, _, m in progress.updates if m and "no answer text yet" in m]
    assert 3 <= len(beats) <= 6
    assert beats[0][0] - started == pytest.approx(0.25, abs=0.15)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(beats)]
    assert all(0.15 < gap < 0.45 for gap in gaps), gaps
    assert progress.values == sorted(set(progress.values))


async def test_stream_cut_after_three_chunks_keeps_the_partial_text(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    frames = [sse_frame(chunk(t)) for t in ("The answer", " is forty", " and then")]
    fake.script("swarms", Reply(sse=frames, sse_cut=True))
    async with connect(mode="legacy") as client:
        result = await client.call_tool("ask_swarm", {"prompt": "q"}, progress_callback=Progress())
        following = await client.call_tool("ask_swarm", {"prompt": "q"}, progress_callback=Progress())
    assert result.is_error
    error = error_of(result)
    assert error["kind"] == "network"
    assert error["attempts"] == 1
    assert error["partial_text"] == "The answer is forty and then"
    assert "[partial answer, incomplete]\nThe answer is forty and then" in text_of(result)
    assert len(fake.seen("swarms")) == 2  # nothing retried once part of an answer had come
    assert not following.is_error


async def test_error_event_inside_the_stream_is_reported(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    frames = [
        sse_frame(chunk("Partial")),
        sse_frame(chunk(" words")),
        sse_frame(error_body("node pool exhausted", "server_error"), event="error"),
    ]
    fake.script("fortytwo", Reply(sse=frames))
    async with connect(mode="legacy") as client:
        result = await client.call_tool("ask_fortytwo", {"prompt": "q"}, progress_callback=Progress())
    error = error_of(result)
    assert error["kind"] == "upstream"
    assert "server_error: node pool exhausted" in error["message"]
    assert error["partial_text"] == "Partial words"


async def test_error_object_in_a_data_event_is_reported(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    frames = [sse_frame(chunk("Half")), sse_frame(error_body("quota exceeded", "insufficient_quota"))]
    fake.script("swarms", Reply(sse=frames))
    async with connect(mode="legacy") as client:
        result = await client.call_tool("ask_swarm", {"prompt": "q"}, progress_callback=Progress())
    assert result.is_error
    assert "insufficient_quota: quota exceeded" in text_of(result)


async def test_error_status_before_streaming_is_retried_like_any_call(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    fake.script("swarms", Reply(status=503, json=error_body("warming up", "unavailable")))
    async with connect(mode="legacy") as client:
        result = await client.call_tool("ask_swarm", {"prompt": "q"}, progress_callback=Progress())
    assert not result.is_error
    assert result.structured_content is not None
    assert trace_of(result, "swarms")["attempts"] == 2


async def test_server_that_ignores_stream_and_answers_json_still_works(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    answer = {"id": "j", "model": "m", "choices": [{"index": 0, "message": {"content": "whole"}}], "usage": None}
    fake.script("fortytwo", Reply(json=answer))
    async with connect(mode="legacy") as client:
        result = await client.call_tool("ask_fortytwo", {"prompt": "q"}, progress_callback=Progress())
    assert text_of(result) == "whole"


async def test_deadline_mid_stream_reports_partial_text(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    frames = [sse_frame(chunk(t)) for t in ("slow", " and", " slower", " still")]
    fake.script("swarms", Reply(sse=frames, sse_delay_s=0.6))
    async with connect(mode="legacy") as client:
        result = await client.call_tool("ask_swarm", {"prompt": "q", "timeout_s": 1.5}, progress_callback=Progress())
    error = error_of(result)
    assert error["kind"] == "timeout"
    assert error["partial_text"] == "slow and"


async def test_cancelling_mid_stream_closes_the_upstream_connection(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    frames = [sse_frame(chunk(f" part{i}")) for i in range(50)]
    fake.script("fortytwo", Reply(sse=frames, sse_delay_s=0.1))
    progress = Progress()
    async with connect(mode="legacy") as client:
        cancelled_at = await cancel_when(
            lambda: client.call_tool("ask_fortytwo", {"prompt": "q"}, progress_callback=progress),
            lambda: len(progress.updates) >= 1,
        )
        (request,) = fake.seen("fortytwo")
        await eventually(lambda: request.disconnected is not None)
        assert request.disconnected is not None
        assert request.disconnected - cancelled_at < 1.0
        assert not (await client.call_tool("ask_fortytwo", {"prompt": "again"})).is_error
    assert len(fake.seen("fortytwo")) == 2
