"""Generated arguments of every shape thrown at both tools: each call ends in an answer or an
argument error, never a crash, a hang, or a request the upstream's schema refuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp_types import TextContent

from tests.conftest import error_of
from tests.fake_upstream import FakeUpstream

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

NAMES = [
    "prompt", "system", "messages", "model", "timeout_s", "max_tokens", "max_completion_tokens", "response_format",
    "temperature", "top_p", "n", "presence_penalty", "frequency_penalty", "user", "max_loops", "stream", "bogus",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["", "user", "robot", "system", "x" * 600_000, "1e999", "[1, 2]", '{"a": 1}']),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from([*NAMES, "role", "content"]), inner),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", ""]), "content": json_values},
        optional={"name": json_values, "extra": json_values},
    ),
    max_size=3,
)


def _nest(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"content": value}
    return value


deep = st.integers(min_value=20, max_value=150).map(_nest)  # the SDK client refuses to send deeper
arguments = st.dictionaries(st.sampled_from(NAMES), json_values | messages | deep, max_size=6) | st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=50)},
    optional={name: json_values for name in NAMES if name != "prompt"},
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tool=st.sampled_from(["ask_fortytwo", "ask_swarm"]), args=arguments)
async def test_any_arguments_end_in_an_answer_or_an_argument_error(
    connect: Callable[..., Any], fake: FakeUpstream, tool: str, args: dict[str, Any]
) -> None:
    fake.reset()
    async with connect() as client:
        with anyio.fail_after(20):
            result = await client.call_tool(tool, args)
        block = result.content[0]
        assert isinstance(block, TextContent)
        if result.is_error:
            assert error_of(result)["kind"] == "invalid_arguments", block.text
            assert block.text.startswith(f"{tool}: invalid arguments: ")
            assert "\n" not in block.text
            assert fake.seen() == []
        else:
            (request,) = fake.seen()
            assert request.schema_errors == []
        with anyio.fail_after(20):
            assert not (await client.call_tool(tool, {"prompt": "next"})).is_error
