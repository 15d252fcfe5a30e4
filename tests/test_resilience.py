"""The fault matrix: each way the upstream can misbehave, over both tools, with a canary key.

Each case asserts the error kind (or the recovered answer), how many requests the fake upstream
saw, that the call ended within its deadline, and that the next call succeeds. The canary keys
must appear in no result, no error message and no log line.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent, TextResourceContents

from tests.conftest import error_of, trace_of
from tests.fake_upstream import FakeUpstream, Reply, cancel_when, error_body, eventually
from tests.test_usage import usage_of

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CANARY = {"fortytwo": "ft-CANARY-5b1d9c0e", "swarms": "sw-CANARY-a77f3e21"}
TOOLS = {"fortytwo": "ask_fortytwo", "swarms": "ask_swarm"}


@pytest.fixture
def canary_fake(fake: FakeUpstream) -> Iterator[FakeUpstream]:
    saved = dict(fake.keys)
    fake.keys.update(CANARY)
    yield fake
    fake.keys.update(saved)


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def html_body() -> bytes:
    return b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def http_date_in(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


@dataclass
class Fault:
    name: str
    replies: list[Reply]
    kind: str | None  # None: the call recovers and answers
    attempts: int
    max_s: float
    timeout_s: float = 10.0


def rate_limited(message: str = "Too many concurrent requests", **headers: str) -> Reply:
    return Reply(status=429, json=error_body(message, "rate_limit_exceeded"), headers=headers)


FAULTS = [
    Fault("400", [Reply(status=400, json=error_body("Missing field", "invalid_request_error"))], "bad_request", 1, 3),
    Fault("401", [Reply(status=401, json=error_body("Invalid credentials", "authentication_error"))], "auth", 1, 3),
    Fault("402", [Reply(status=402, json=error_body("No credit", "insufficient_quota"))], "payment", 1, 3),
    Fault("403", [Reply(status=403, json={"detail": "Not allowed"})], "auth", 1, 3),
    Fault("404", [Reply(status=404, json=error_body("Model not found", "model_not_found"))], "not_found", 1, 3),
    Fault(
        "422", [Reply(status=422, json={"detail": [{"loc": ["body"], "msg": "bad", "type": "x"}]})], "bad_request", 1, 3
    ),
    Fault("500", [Reply(status=500, json=error_body("Internal server error", "internal_error"))], "upstream", 1, 3),
    Fault("429 retry-after header", [rate_limited(**{"Retry-After": "1"})] * 3, "rate_limited", 3, 6),
    Fault("429 retry-after date then ok", [rate_limited(**{"Retry-After": http_date_in(1)})], None, 2, 5),
    Fault("429 wait in text then ok", [rate_limited("Too many concurrent requests. Retry after 1s")], None, 2, 4),
    Fault(
        "429 wait beyond deadline",
        [rate_limited("Too many concurrent requests. Retry after 10s")],
        "rate_limited",
        1,
        2,
        3,
    ),
    Fault("429 then success", [rate_limited()], None, 2, 4),
    Fault("503 then success", [Reply(status=503, json=error_body("overloaded", "unavailable"))], None, 2, 4),
    Fault(
        "502 html three times", [Reply(status=502, body=html_body(), content_type="text/html")] * 3, "upstream", 3, 8
    ),
    Fault("html error page", [Reply(status=500, body=html_body(), content_type="text/html")], "upstream", 1, 3),
    Fault("html with 200", [Reply(body=html_body(), content_type="text/html")], "bad_response", 1, 3),
    Fault(
        "truncated json",
        [Reply(json={"id": "x", "choices": [{"message": {"content": "x" * 50}}]}, truncate=True)],
        "network",
        1,
        3,
    ),
    Fault("cut json body", [Reply(body=b'{"id": "x", "choices": [{"mess')], "bad_response", 1, 3),
    Fault("empty choices", [Reply(json={"id": "x", "choices": [], "usage": None})], "bad_response", 1, 3),
    Fault(
        "null content",
        [Reply(json={"id": "x", "choices": [{"message": {"role": "assistant", "content": None}}]})],
        "bad_response",
        1,
        3,
    ),
    Fault(
        "missing usage",
        [Reply(json={"id": "x", "choices": [{"message": {"content": "fine"}}], "usage": None})],
        None,
        1,
        3,
    ),
    Fault("connection reset", [Reply(reset=True)], "network", 1, 3),
    Fault("never answers", [Reply(hang=True)], "timeout", 1, 4, 1.5),
    Fault(
        "slow trickle within deadline",
        [Reply(json={"id": "t", "choices": [{"message": {"content": "ok"}}]}, trickle_s=0.01)],
        None,
        1,
        6,
    ),
    Fault(
        "slow trickle past deadline",
        [Reply(json={"id": "t", "choices": [{"message": {"content": "x" * 200}}]}, trickle_s=0.05)],
        "timeout",
        1,
        4,
        1.5,
    ),
    Fault(
        "key echoed in message",
        [
            Reply(
                status=401,
                json=error_body(f"bad key {CANARY['fortytwo']} / {CANARY['swarms']}", "authentication_error"),
            )
        ],
        "auth",
        1,
        3,
    ),
]


@pytest.mark.parametrize("provider", ["fortytwo", "swarms"])
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_fault(
    connect: Callable[..., Any],
    canary_fake: FakeUpstream,
    provider: str,
    fault: Fault,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG")
    fake = canary_fake
    fake.script(provider, *fault.replies)
    tool = TOOLS[provider]
    env = {"FORTYTWO_API_KEY": CANARY["fortytwo"], "SWARMS_API_KEY": CANARY["swarms"]}
    async with connect(**env) as client:
        started = time.monotonic()
        result = await client.call_tool(tool, {"prompt": "fault matrix", "timeout_s": fault.timeout_s})
        elapsed = time.monotonic() - started
        following = await client.call_tool(tool, {"prompt": "and now?"})

    assert elapsed < fault.max_s, f"took {elapsed:.2f} s"
    assert elapsed < fault.timeout_s + 0.5
    if fault.kind is None:
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        assert trace_of(result, provider)["attempts"] == fault.attempts
    else:
        structured = error_of(result)
        assert structured["kind"] == fault.kind, text_of(result)
        assert structured["attempts"] == fault.attempts
        assert structured["message"] == text_of(result)
        assert {"kind", "message", "provider", "retryable", "attempts"} <= set(structured)
        assert None not in structured.values()
        assert text_of(result).count("\n") == 0
    assert len(fake.seen(provider)) == fault.attempts + 1
    assert not following.is_error, text_of(following)
    assert text_of(following) == f"{provider} says: and now?"

    everything = text_of(result) + result.model_dump_json() + caplog.text + "".join(capsys.readouterr())
    for secret in CANARY.values():
        assert secret not in everything


async def test_rate_limit_says_when_to_retry(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("fortytwo", rate_limited("Too many concurrent requests. Retry after 30s"))
    async with connect(SWARM_MCP_MAX_RETRIES="0") as client:
        result = await client.call_tool("ask_fortytwo", {"prompt": "x"})
    error = error_of(result)
    assert error["retry_after_s"] == 30
    assert error["retryable"] is True
    assert "retry after 30 s" in text_of(result)


async def test_max_retries_zero_turns_retries_off(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("swarms", Reply(status=503, json=error_body("overloaded", "unavailable")))
    async with connect(SWARM_MCP_MAX_RETRIES="0") as client:
        result = await client.call_tool("ask_swarm", {"prompt": "x"})
    assert result.is_error
    assert len(fake.seen("swarms")) == 1


async def test_retry_server_errors_opt_in_retries_a_500(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("swarms", Reply(status=500, json=error_body("boom", "internal_error")))
    async with connect(SWARM_MCP_RETRY_SERVER_ERRORS="true") as client:
        result = await client.call_tool("ask_swarm", {"prompt": "x"})
    assert not result.is_error
    assert len(fake.seen("swarms")) == 2


async def test_timeout_is_clamped_to_the_maximum(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("swarms", Reply(hang=True))
    async with connect(SWARM_MCP_MAX_TIMEOUT="1") as client:
        started = time.monotonic()
        result = await client.call_tool("ask_swarm", {"prompt": "x", "timeout_s": 3600})
    assert time.monotonic() - started < 3
    assert error_of(result)["kind"] == "timeout"


async def test_default_deadline_comes_from_the_setting(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("fortytwo", Reply(hang=True))
    async with connect(SWARM_MCP_TIMEOUT="1") as client:
        started = time.monotonic()
        result = await client.call_tool("ask_fortytwo", {"prompt": "x"})
    assert time.monotonic() - started < 3
    assert "1 s deadline" in text_of(result)


async def fortytwo_errors(client: Client) -> int:
    errors: int = (await usage_of(client))["today"]["providers"].get("fortytwo", {}).get("errors", 0)
    return errors


async def test_cancelling_a_call_aborts_the_upstream_request(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("fortytwo", Reply(hang=True))
    async with connect() as client:
        cancelled_at = await cancel_when(
            lambda: client.call_tool("ask_fortytwo", {"prompt": "never mind"}), lambda: bool(fake.seen("fortytwo"))
        )
        (request,) = fake.seen("fortytwo")
        await eventually(lambda: request.disconnected is not None)
        assert request.disconnected is not None
        assert request.disconnected - cancelled_at < 1.0
        # Its usage row is settled only once the request's retry loop has ended for good: then one
        # request, cancelled, is all there will ever be.
        with anyio.fail_after(5):
            while await fortytwo_errors(client) != 1:  # noqa: ASYNC110 - the server's state, read over MCP
                await anyio.sleep(0.02)
        assert len(fake.seen("fortytwo")) == 1  # nothing was retried
        after = await client.call_tool("ask_fortytwo", {"prompt": "still serving?"})
    assert not after.is_error


async def test_concurrency_cap_holds_calls_in_line(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    fake.script("swarms", *[Reply(delay_s=0.2) for _ in range(10)])
    results: list[CallToolResult] = []
    async with connect(SWARMS_MAX_CONCURRENCY="2") as client:

        async def call(i: int) -> None:
            results.append(await client.call_tool("ask_swarm", {"prompt": f"question {i}"}))

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(call, i)
    assert len(results) == 10
    assert all(not r.is_error for r in results)
    assert fake.max_in_flight == 2
    assert len(fake.seen("swarms")) == 10


async def test_a_request_that_waited_out_its_deadline_in_the_queue_is_never_sent(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    """Queued behind a cap of one: requests sent with too little deadline left would be cut off (and
    perhaps billed); they fail unsent instead, say so, and leave no ledger row."""
    fake.script("fortytwo", *(Reply(delay_s=1.0) for _ in range(8)))
    env = {"FORTYTWO_MAX_CONCURRENCY": "1", "SWARM_MCP_TIMEOUT": "4", "SWARM_MCP_SEND_FLOOR": "1.5"}
    results: list[Any] = []
    async with connect(**env) as client:

        async def one(n: int) -> None:
            results.append(await client.call_tool("ask_fortytwo", {"prompt": f"queued {n}", "wait_s": 60}))

        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(one, n)
        (usage,) = (await client.read_resource("swarm://usage")).contents
    seen = fake.seen("fortytwo")
    assert all(request.disconnected is None for request in seen), "a sent request was cut off"
    answered = [r for r in results if not r.is_error]
    refused = [r for r in results if r.is_error]
    assert len(answered) == len(seen) >= 2
    assert refused
    for result in refused:
        assert error_of(result)["kind"] == "timeout"
        block = result.content[0]
        assert isinstance(block, TextContent)
        assert "waited its whole deadline of 4 s in the queue" in block.text
        assert "was not sent" in block.text
    assert isinstance(usage, TextResourceContents)
    assert json.loads(usage.text)["providers"]["fortytwo"]["calls"] == len(seen)
