"""The two tools through the in-memory MCP client, against the loopback fake upstream."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent

from swarm_inference_mcp.server.app import create_server
from swarm_inference_mcp.server.environment import load_settings
from tests.conftest import error_of, trace_of
from tests.fake_upstream import FakeUpstream, Reply, error_body

pytestmark = pytest.mark.anyio


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def test_tools_are_listed_with_descriptions_schemas_and_annotations(connect: Callable[..., Any]) -> None:
    async with connect() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"ask_fortytwo", "ask_swarm", "ask_both", "list_models", "get_result", "cancel_job"}
    for tool in tools.values():
        assert tool.description
        assert len(tool.description) > 50
        assert tool.annotations is not None
        asks_upstream = tool.name not in ("get_result", "cancel_job")
        assert tool.annotations.read_only_hint is (tool.name != "cancel_job")
        assert tool.annotations.open_world_hint is asks_upstream
        for name, prop in tool.input_schema.get("properties", {}).items():
            assert prop.get("description"), f"{tool.name}.{name} has no description"
    for tool in (tools["ask_fortytwo"], tools["ask_swarm"], tools["ask_both"]):
        schema = tool.input_schema
        assert schema["additionalProperties"] is False
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{tool.name}.{name} has no description"
        assert tool.output_schema is not None
    for tool in (tools["ask_fortytwo"], tools["ask_swarm"]):
        assert tool.output_schema is not None
        assert {"status", "text", "finish_reason", "usage"} <= set(tool.output_schema["properties"])
        usage = tool.output_schema["properties"]["usage"]  # its counts named, their type described
        assert usage["required"] == ["prompt_tokens", "completion_tokens", "total_tokens"]
        assert "three integers" in usage["description"]
    assert set(tools["ask_fortytwo"].input_schema["properties"]) == {
        "prompt", "system", "messages", "model", "timeout_s", "wait_s", "max_tokens", "max_completion_tokens",
        "response_format",
    }  # fmt: skip
    assert set(tools["ask_swarm"].input_schema["properties"]) == {
        "prompt", "system", "messages", "model", "timeout_s", "wait_s", "temperature", "top_p", "n", "max_tokens",
        "max_completion_tokens", "presence_penalty", "frequency_penalty", "user", "max_loops",
    }  # fmt: skip


MODEL_FACING_MAX = 6_000
"""Characters of the tools' names, descriptions and input schemas together: what every host hands the
model in every conversation (about 1,500 tokens)."""
TOOLS_LIST_MAX = 12_000


async def test_the_tool_list_is_cheap_and_every_limit_still_holds(
    connect: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The model-facing part of tools/list stays under 6,000 characters and the whole under 12,000 (sizes
    printed for docs/tools.md); no schema repeats a limit, yet each limit is refused in one sentence."""
    async with connect() as client:
        listed = await client.list_tools()
        too_many = await client.call_tool("ask_swarm", {"prompt": "x", "n": 11})
        too_long = await client.call_tool("ask_swarm", {"prompt": "x", "user": "u" * 300})
    tools = [tool.model_dump(by_alias=True, mode="json", exclude_none=True) for tool in listed.tools]
    whole = len(json.dumps({"tools": tools}))
    facing = sum(len(t["name"]) + len(t.get("description", "")) + len(json.dumps(t["inputSchema"])) for t in tools)
    with capsys.disabled():
        sys.stdout.write(f"\ntools/list: {whole:,} characters; names, descriptions and input schemas: {facing:,}\n")
    assert facing < MODEL_FACING_MAX
    assert whole < TOOLS_LIST_MAX
    schemas = json.dumps([t["inputSchema"] for t in tools])
    assert not any(word in schemas for word in ("maxLength", "maximum", 'anyOf": [{"type": "null', "$defs"))
    assert "`n`" in error_of(too_many)["message"]
    assert "less than or equal to 10" in error_of(too_many)["message"]
    assert "`user`" in error_of(too_long)["message"]


async def test_fortytwo_maps_every_argument(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect() as client:
        result = await client.call_tool(
            "ask_fortytwo",
            {
                "prompt": "Is P = NP?",
                "system": "Be brief.",
                "model": "fortytwo-prime",
                "max_tokens": 64,
                "max_completion_tokens": 48,
                "response_format": {"type": "json_object", "extra": {"nested": [1, 2]}},
            },
        )
    assert not result.is_error, text_of(result)
    (request,) = fake.seen("fortytwo")
    assert request.schema_errors == []
    assert request.headers["authorization"] == f"Bearer {fake.keys['fortytwo']}"
    assert "x-api-key" not in request.headers
    assert request.body == {
        "model": "fortytwo-prime",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is P = NP?"}],
        "max_tokens": 64,
        "max_completion_tokens": 48,
        "response_format": {"type": "json_object", "extra": {"nested": [1, 2]}},
    }


async def test_only_set_arguments_are_sent_and_the_default_model_comes_from_the_env(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    async with connect(FORTYTWO_MODEL="fortytwo-custom", SWARMS_MODEL="swarm-custom") as client:
        await client.call_tool("ask_fortytwo", {"prompt": "hi", "max_tokens": None})
        await client.call_tool("ask_swarm", {"prompt": "hi"})
    assert fake.seen("fortytwo")[0].body == {
        "model": "fortytwo-custom",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert fake.seen("swarms")[0].body == {"model": "swarm-custom", "messages": [{"role": "user", "content": "hi"}]}


async def test_built_in_default_models(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect() as client:
        await client.call_tool("ask_fortytwo", {"prompt": "hi"})
        await client.call_tool("ask_swarm", {"prompt": "hi"})
    assert fake.seen("fortytwo")[0].body["model"] == "fortytwo-prime"
    assert fake.seen("swarms")[0].body["model"] == "gpt-4.1-mini"


async def test_swarm_maps_every_argument(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello", "name": "ada"},
        {"role": "assistant", "content": "Hi."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            ],
        },
    ]
    async with connect() as client:
        result = await client.call_tool(
            "ask_swarm",
            {
                "messages": messages,
                "model": "gpt-4.1",
                "temperature": 0.7,
                "top_p": 0.9,
                "n": 1,
                "max_tokens": 100,
                "max_completion_tokens": 90,
                "presence_penalty": -0.5,
                "frequency_penalty": 1.5,
                "user": "user-42",
                "max_loops": 3,
            },
        )
    assert not result.is_error, text_of(result)
    (request,) = fake.seen("swarms")
    assert request.schema_errors == []
    assert request.headers["x-api-key"] == fake.keys["swarms"]
    assert "authorization" not in request.headers
    assert request.body == {
        "model": "gpt-4.1",
        "messages": messages,
        "temperature": 0.7,
        "top_p": 0.9,
        "n": 1,
        "max_tokens": 100,
        "max_completion_tokens": 90,
        "presence_penalty": -0.5,
        "frequency_penalty": 1.5,
        "user": "user-42",
        "max_loops": 3,
    }


async def test_result_text_and_structured_content(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect() as client:
        result = await client.call_tool("ask_fortytwo", {"prompt": "what is 6 x 7"})
    assert not result.is_error
    assert text_of(result) == "fortytwo says: what is 6 x 7"
    data = result.structured_content
    assert data is not None
    assert "provider" not in data  # the tool says it, and so does the trace's key
    assert data["text"] == "fortytwo says: what is 6 x 7"
    assert "finish_reason" not in data  # it ended normally (stop): only an early end is said
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert "choices" not in data  # only when several came back
    assert "cached" not in data  # only when a recent answer was reused
    trace = trace_of(result, "fortytwo")  # how the answer came about, for programs and logs
    assert trace["model"] == "fortytwo-prime"
    assert "model" not in data
    assert trace["id"].startswith("chatcmpl-")
    assert isinstance(trace["latency_ms"], int)
    assert trace["latency_ms"] >= 0
    assert trace["attempts"] == 1


async def test_several_choices_are_labelled(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect() as client:
        result = await client.call_tool("ask_swarm", {"prompt": "name a colour", "n": 3})
    assert not result.is_error
    assert text_of(result) == (
        "[choice 1]\nswarms says: name a colour\n\n"
        "[choice 2]\nswarms says: name a colour (choice 2)\n\n"
        "[choice 3]\nswarms says: name a colour (choice 3)"
    )
    data = result.structured_content
    assert data is not None
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert data["text"] == "swarms says: name a colour"


@pytest.mark.parametrize(
    ("arguments", "names"),
    [
        ({}, "exactly one of `prompt`"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "exactly one of `prompt`"),
        ({"messages": [{"role": "user", "content": "b"}], "system": "s"}, "`system` goes with `prompt`"),
        ({"prompt": "a", "temperature": 0.5}, "temperature"),
        ({"prompt": "a", "bogus": 1}, "bogus"),
        ({"prompt": ""}, "prompt"),
        ({"messages": [{"role": "robot", "content": "b"}]}, "role"),
        ({"messages": []}, "messages"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "a", "timeout_s": 0.5}, "timeout_s"),
        ({"prompt": "a", "response_format": "json"}, "response_format"),
    ],
)
async def test_fortytwo_argument_errors(
    connect: Callable[..., Any], fake: FakeUpstream, arguments: dict[str, Any], names: str
) -> None:
    async with connect() as client:
        result = await client.call_tool("ask_fortytwo", arguments)
        assert result.is_error
        assert names in text_of(result)
        assert text_of(result).startswith("ask_fortytwo: invalid arguments: ")
        assert text_of(result).endswith("Nothing was sent.")
        assert "\n" not in text_of(result)
        assert error_of(result)["kind"] == "invalid_arguments"
        assert not (await client.call_tool("ask_fortytwo", {"prompt": "still fine"})).is_error
    assert len(fake.seen()) == 1


@pytest.mark.parametrize(
    ("arguments", "names"),
    [
        ({"prompt": "a", "temperature": 2.5}, "temperature"),
        ({"prompt": "a", "top_p": -0.1}, "top_p"),
        ({"prompt": "a", "n": 11}, "n"),
        ({"prompt": "a", "presence_penalty": 3}, "presence_penalty"),
        ({"prompt": "a", "frequency_penalty": -2.5}, "frequency_penalty"),
        ({"prompt": "a", "max_loops": 0}, "max_loops"),
        ({"prompt": "a", "response_format": {"type": "json_object"}}, "response_format"),
        ({"messages": [{"role": "user", "content": [{"type": "audio", "data": "x"}]}]}, "messages.0"),
    ],
)
async def test_swarm_argument_errors(
    connect: Callable[..., Any], fake: FakeUpstream, arguments: dict[str, Any], names: str
) -> None:
    async with connect() as client:
        result = await client.call_tool("ask_swarm", arguments)
    assert result.is_error
    assert names in text_of(result)
    assert fake.seen() == []


async def test_argument_error_sentences_name_each_argument(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect() as client:
        result = await client.call_tool("ask_swarm", {"prompt": "a", "temperature": 3, "bogus": 1, "n": 0})
        union = await client.call_tool("ask_swarm", {"messages": [{"role": "user", "content": [{"type": "x"}]}]})
    assert text_of(result) == (
        "ask_swarm: invalid arguments: `temperature`: input should be less than or equal to 2 (got 3); "
        "`n`: input should be greater than or equal to 1 (got 0); `bogus` is not an argument of this tool. "
        "Nothing was sent."
    )
    assert text_of(union) == (
        "ask_swarm: invalid arguments: `messages.0.content` matches none of its allowed forms "
        "(see the tool's input schema). Nothing was sent."
    )
    assert fake.seen() == []


async def test_lists_sent_as_json_text_are_decoded(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    """Some clients (Claude Desktop among them) send list and object arguments as JSON strings."""
    async with connect() as client:
        result = await client.call_tool(
            "ask_fortytwo",
            {"messages": '[{"role": "user", "content": "as text"}]', "response_format": '{"type": "json_object"}'},
        )
    assert not result.is_error, text_of(result)
    assert fake.seen("fortytwo")[0].body["messages"] == [{"role": "user", "content": "as text"}]
    assert fake.seen("fortytwo")[0].body["response_format"] == {"type": "json_object"}


async def test_missing_key_still_lists_tools_and_names_the_variable(fake: FakeUpstream) -> None:
    settings = load_settings({"FORTYTWO_BASE_URL": fake.url("fortytwo"), "SWARMS_BASE_URL": fake.url("swarms")})
    async with Client(create_server(settings)) as client:
        assert {"ask_fortytwo", "ask_swarm"} <= {t.name for t in (await client.list_tools()).tools}
        for tool, variable in (("ask_fortytwo", "FORTYTWO_API_KEY"), ("ask_swarm", "SWARMS_API_KEY")):
            result = await client.call_tool(tool, {"prompt": "hi"})
            assert variable in text_of(result)
            assert error_of(result)["kind"] == "config"
    assert fake.seen() == []


SPEC_ERRORS = [
    (400, error_body("Missing required field: model_id", "invalid_request_error"), "bad_request"),
    (401, error_body("Invalid authentication credentials", "authentication_error"), "auth"),
    (402, error_body("Insufficient credits", "payment_required"), "payment"),
    (403, {"detail": "Forbidden"}, "auth"),
    (404, error_body("Model not found", "model_not_found"), "not_found"),
    (422, {"detail": [{"loc": ["body", "messages"], "msg": "field required", "type": "missing"}]}, "bad_request"),
    (500, error_body("Internal server error", "internal_error"), "upstream"),
]


@pytest.mark.parametrize(("status", "body", "kind"), SPEC_ERRORS)
@pytest.mark.parametrize("tool", ["ask_fortytwo", "ask_swarm"])
async def test_error_statuses_become_one_clear_sentence(
    connect: Callable[..., Any], fake: FakeUpstream, tool: str, status: int, body: Any, kind: str
) -> None:
    provider = "fortytwo" if tool == "ask_fortytwo" else "swarms"
    fake.script(provider, Reply(status=status, json=body))
    async with connect() as client:
        result = await client.call_tool(tool, {"prompt": "hi"})
    error = error_of(result)
    sentence = text_of(result)
    assert error["kind"] == kind
    assert error["status"] == status
    assert error["attempts"] == 1
    assert sentence.startswith("Fortytwo: " if provider == "fortytwo" else "Swarms: ")
    assert f"HTTP {status}" in sentence
    assert "\n" not in sentence
    assert "Traceback" not in sentence
    assert "hi" not in sentence.split(";")[0].replace("HTTP", "")  # the request body is never echoed
    upstream_words = body["error"]["message"] if "error" in body else "Forbidden" if status == 403 else "messages"
    assert upstream_words in sentence
    if kind == "auth":
        assert ("FORTYTWO_API_KEY" if provider == "fortytwo" else "SWARMS_API_KEY") in sentence


@pytest.mark.parametrize(
    ("reply", "request_id"),
    [
        (
            Reply(status=500, json=error_body("boom", "internal_error"), headers={"x-request-id": "req_7f3a"}),
            "req_7f3a",
        ),
        (Reply(status=429, json={"id": "gen-123", "error": {"message": "slow down", "type": "rate"}}), "gen-123"),
        (Reply(status=500, json=error_body("boom", "oops"), headers={"x-request-id": "<b>x</b>"}), None),
        (Reply(status=401, json=error_body("no", "auth"), headers={"x-request-id": "KEY"}), None),
    ],
    ids=["header", "body id", "not an id", "the key echoed"],
)
async def test_a_failure_keeps_the_upstreams_request_id_for_its_support(
    connect: Callable[..., Any], fake: FakeUpstream, reply: Reply, request_id: str | None
) -> None:
    if reply.headers.get("x-request-id") == "KEY":
        reply.headers["x-request-id"] = fake.keys["swarms"]
    fake.script("swarms", reply)
    async with connect(SWARM_MCP_MAX_RETRIES="0") as client:
        result = await client.call_tool("ask_swarm", {"prompt": "hi"})
    assert error_of(result).get("request_id") == request_id
    assert fake.keys["swarms"] not in json.dumps(result.model_dump())


async def test_calls_made_while_the_http_client_is_still_being_built_all_get_their_answers(
    connect: Callable[..., Any], fake: FakeUpstream
) -> None:
    # Sent the moment the server is up: most arrive before the client (built in a thread) is ready,
    # wait for it, then go on one by one.
    async with connect() as client:
        results: dict[int, CallToolResult] = {}

        async def ask(n: int) -> None:
            results[n] = await client.call_tool("ask_fortytwo", {"prompt": f"early {n}"})

        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(ask, n)
    assert [text_of(results[n]) for n in range(50)] == [f"fortytwo says: early {n}" for n in range(50)]
    assert len(fake.seen("fortytwo")) == 50


async def test_tls_settings_that_cannot_load_fail_calls_in_one_sentence_not_the_start(
    connect: Callable[..., Any], fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The HTTP client is built while the server starts, off the event loop; what it cannot load
    # reaches each call as one sentence, and the server itself still starts and lists its tools.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-bundle.pem"))
    async with connect() as client:
        assert "ask_fortytwo" in {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("ask_fortytwo", {"prompt": "hi"})
    assert error_of(result)["kind"] == "config"
    assert text_of(result).startswith("Fortytwo: the HTTP client could not be set up (")
    assert "SSL_CERT_FILE" in text_of(result)
    assert fake.seen("fortytwo") == []


async def test_wrong_key_is_an_auth_error_naming_the_variable(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect(SWARMS_API_KEY="sw-wrong-key-9999") as client:
        result = await client.call_tool("ask_swarm", {"prompt": "hi"})
    assert error_of(result)["kind"] == "auth"
    assert "SWARMS_API_KEY" in text_of(result)
    assert "sw-wrong-key-9999" not in text_of(result)


@pytest.mark.parametrize(
    ("reply", "kind", "words"),
    [
        (Reply(status=502, body=b"<html><body>Bad gateway</body></html>", content_type="text/html"), "upstream", ""),
        (Reply(body=b"<html>maintenance</html>", content_type="text/html"), "bad_response", "not valid JSON"),
        (Reply(body=b'{"id": "x", "choices": [{"message": {"content": "cut'), "bad_response", "not valid JSON"),
        (Reply(json={"id": "x", "choices": [], "usage": None}), "bad_response", "no choices"),
        (Reply(json={"id": "x", "choices": [{"index": 0, "message": {"content": None}}]}), "bad_response", "no text"),
        (Reply(body=b""), "bad_response", "not valid JSON"),
    ],
)
async def test_malformed_answers(
    connect: Callable[..., Any], fake: FakeUpstream, reply: Reply, kind: str, words: str
) -> None:
    fake.script("fortytwo", reply)
    async with connect(SWARM_MCP_MAX_RETRIES="0") as client:
        result = await client.call_tool("ask_fortytwo", {"prompt": "hi"})
    assert error_of(result)["kind"] == kind
    assert words in text_of(result)
    assert "<html" not in text_of(result)


async def test_an_answer_that_ended_early_says_why(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    cut = {"index": 0, "message": {"content": "The answer goes on and"}, "finish_reason": "length"}
    fake.script("fortytwo", Reply(json={"id": "x", "model": "m", "choices": [cut]}))
    whole = {"index": 1, "message": {"content": "Short."}, "finish_reason": "stop"}
    fake.script("swarms", Reply(json={"id": "y", "model": "m", "choices": [cut, whole]}))
    async with connect() as client:
        early = await client.call_tool("ask_fortytwo", {"prompt": "go on"})
        several = await client.call_tool("ask_swarm", {"prompt": "go on", "n": 2})
    assert early.structured_content is not None
    assert early.structured_content["finish_reason"] == "length"
    assert several.structured_content is not None
    choices = several.structured_content["choices"]
    assert choices[0]["finish_reason"] == "length"
    assert "finish_reason" not in choices[1]  # ended normally
    assert several.structured_content["finish_reason"] == "length"  # the first choice's is the answer's


async def test_missing_usage_is_null_not_an_error(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    answer = {"id": "x", "model": "m", "choices": [{"index": 0, "message": {"content": "ok"}}], "usage": None}
    fake.script("swarms", Reply(json=answer))
    async with connect() as client:
        result = await client.call_tool("ask_swarm", {"prompt": "hi"})
    assert not result.is_error
    assert result.structured_content is not None
    assert "usage" not in result.structured_content  # left out, never invented
    assert "finish_reason" not in result.structured_content


async def test_unreachable_upstream_is_a_network_error(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    async with connect(FORTYTWO_BASE_URL="http://127.0.0.1:9/v1", SWARM_MCP_MAX_RETRIES="0") as client:
        result = await client.call_tool("ask_fortytwo", {"prompt": "hi"})
    error = error_of(result)
    assert error["kind"] == "network"
    assert "could not connect" in text_of(result)


async def test_any_openai_compatible_base_url_works(connect: Callable[..., Any], fake: FakeUpstream) -> None:
    """A base URL is used as given (a trailing slash is fine): requests go to {base}/chat/completions."""
    async with connect(FORTYTWO_BASE_URL=fake.url("fortytwo") + "/") as client:
        result = await client.call_tool("ask_fortytwo", {"prompt": "hi"})
    assert not result.is_error
    assert fake.seen("fortytwo")[0].path == "/fortytwo/v1/chat/completions"
