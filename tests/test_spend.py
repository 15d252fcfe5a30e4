"""A budget holds when calls pile up: it is checked as each request leaves the provider's queue, with
every request in flight counted, so it is overshot by at most what is in flight at once (one process,
or several sharing Redis)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.conftest import error_of
from tests.fake_upstream import FakeUpstream, Reply
from tests.redis_server import RedisServer
from tests.servers import http_server, mcp_client
from tests.test_gateway import ALICE, BOB, BOB_HASH, tokens_file
from tests.test_jobs import answer_of, handle_of
from tests.test_redis import deployment, through
from tests.test_usage import usage_of

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def prompt_of(n: int, words: int) -> str:
    """A distinct prompt the fake bills `2 * words + 2` tokens for (its words, then "swarms says:" and them)."""
    return " ".join([f"call{n}", *["w"] * (words - 1)])


def served_tokens(fake: FakeUpstream, provider: str) -> int:
    return sum(fake.completion(request)["usage"]["total_tokens"] for request in fake.seen(provider))


async def collect(client: Client, handles: list[dict[str, Any]]) -> list[str]:
    """Each job's end: `answer`, or its error's kind."""
    ends = []
    for handle in handles:
        result = await client.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 30})
        ends.append("answer" if not result.is_error else error_of(result)["kind"])
    return ends


async def test_twenty_queued_calls_stop_at_the_client_budget_plus_what_was_in_flight(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """alice (600 tokens a day; the server's daily budget 1,000; one Swarms request at a time) sends 20
    calls of about 500 tokens without waiting. Before, all 20 were sent: 10,060 tokens."""

    per_call = 2 * 249 + 2
    fake.script("swarms", *(Reply(delay_s=0.1) for _ in range(20)))
    env = {
        "SWARM_MCP_TOKENS_FILE": str(tokens_file(tmp_path, f"alice {ALICE} daily_tokens=600")),
        "SWARM_MCP_DAILY_TOKEN_BUDGET": "1000",
        "SWARMS_MAX_CONCURRENCY": "1",
        "SWARM_MCP_STATE_DB": str(tmp_path / "usage.sqlite3"),
    }
    with http_server(fake, tmp_path, **env) as (base, _):
        async with mcp_client(f"{base}/mcp", token=ALICE) as alice:
            handles: list[dict[str, Any]] = []

            async def ask(n: int) -> None:
                result = await alice.call_tool("ask_swarm", {"prompt": prompt_of(n, 249), "wait_s": 0})
                handles.append(handle_of(result))

            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(ask, n)
            ends = await collect(alice, handles)
    assert len(handles) == 20
    sent = len(fake.seen("swarms"))
    assert ends.count("answer") == sent
    assert ends.count("budget") == 20 - sent
    assert served_tokens(fake, "swarms") == sent * per_call
    assert served_tokens(fake, "swarms") <= 600 + per_call  # her budget, overshot by the one in flight


async def test_two_instances_on_redis_stop_at_the_shared_budget_plus_what_was_in_flight(
    fake: FakeUpstream, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Daily budget 1,000 shared through Redis, two requests at a time on each instance, 30 calls of 200
    tokens at once. Before, all 30 were sent: 6,000 tokens."""
    redis_server.flush()
    per_call = 2 * 99 + 2
    fake.script("swarms", *(Reply(delay_s=0.1) for _ in range(30)))
    env = {"SWARM_MCP_DAILY_TOKEN_BUDGET": "1000", "SWARMS_MAX_CONCURRENCY": "2"}
    with deployment(fake, tmp_path, redis_server.url, **env) as proxy:
        async with through(proxy) as client:
            ends: list[str] = []

            async def ask(n: int) -> None:
                result = await client.call_tool("ask_swarm", {"prompt": prompt_of(n, 99), "wait_s": 60})
                ends.append("answer" if not result.is_error else error_of(result)["kind"])
                if not result.is_error:
                    answer_of(result)

            async with anyio.create_task_group() as tg:
                for n in range(30):
                    tg.start_soon(ask, n)
    sent = len(fake.seen("swarms"))
    assert ends.count("answer") == sent
    assert ends.count("budget") == 30 - sent
    in_flight = 2 * 2  # two instances, two places each
    assert served_tokens(fake, "swarms") <= 1000 + in_flight * per_call


async def test_another_clients_identical_question_is_never_served_free_by_default(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """bob has spent his day; he asks alice's exact prompt while hers runs, and again while her answer is
    cached. Before, he got her answer both times: no budget check, no row of his, and `cached: true`
    told him someone else had asked exactly that."""
    clients = tokens_file(tmp_path, f"alice {ALICE}", f"bob {BOB_HASH} daily_tokens=1")
    env = {"SWARM_MCP_TOKENS_FILE": str(clients), "SWARM_MCP_CACHE_TTL": "60"}
    fake.script("swarms", Reply(), Reply(delay_s=1))
    question = {"prompt": "what is alice working on", "wait_s": 0}
    with http_server(fake, tmp_path, **env) as (base, _):
        async with mcp_client(f"{base}/mcp", token=ALICE) as alice, mcp_client(f"{base}/mcp", token=BOB) as bob:
            answer_of(await bob.call_tool("ask_swarm", {"prompt": "bob spends his day"}))
            handle = handle_of(await alice.call_tool("ask_swarm", question))
            while_running = await bob.call_tool("ask_swarm", question)
            answer_of(await alice.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 30}))
            while_cached = await bob.call_tool("ask_swarm", question)
    assert error_of(while_running)["kind"] == error_of(while_cached)["kind"] == "budget"
    assert [request.body["messages"][-1]["content"] for request in fake.seen("swarms")] == [
        "bob spends his day",
        "what is alice working on",
    ]


@pytest.mark.parametrize("bobs_budget", ["", " daily_tokens=1"], ids=["bob has budget", "bob has spent his day"])
async def test_with_sharing_on_a_joiner_passes_its_own_budget_and_gets_a_shared_row(
    fake: FakeUpstream, tmp_path: Path, bobs_budget: str
) -> None:
    """`SWARM_MCP_SHARE_BETWEEN_CLIENTS`: bob joins alice's identical request in flight; the upstream is
    asked and paid once, bob's own usage counts the answer, the team's total counts it once."""
    clients = tokens_file(tmp_path, f"alice {ALICE}", f"bob {BOB_HASH}{bobs_budget}")
    env = {
        "SWARM_MCP_TOKENS_FILE": str(clients),
        "SWARM_MCP_SHARE_BETWEEN_CLIENTS": "true",
        "SWARM_MCP_STATE_DB": str(tmp_path / "usage.sqlite3"),
    }
    spends = bool(bobs_budget)
    fake.script("swarms", *([Reply()] if spends else []), Reply(delay_s=1))
    question = {"prompt": "one shared question", "wait_s": 0}
    with http_server(fake, tmp_path, **env) as (base, _):
        async with mcp_client(f"{base}/mcp", token=ALICE) as alice, mcp_client(f"{base}/mcp", token=BOB) as bob:
            if spends:
                answer_of(await bob.call_tool("ask_swarm", {"prompt": "bob spends his day"}))
            handle = handle_of(await alice.call_tool("ask_swarm", question))
            joined = await bob.call_tool("ask_swarm", {**question, "wait_s": 30})
            answer_of(await alice.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 30}))
            bobs, alices = await usage_of(bob), await usage_of(alice)
    shared_tokens = 3 + 5  # "one shared question", then "swarms says: one shared question"
    assert len(fake.seen("swarms")) == 1 + spends
    if spends:
        assert error_of(joined)["kind"] == "budget"
        return
    assert answer_of(joined)["cached"] is True
    assert bobs["client"]["today"]["total_tokens"] == shared_tokens  # his own usage is true
    assert alices["client"]["today"]["total_tokens"] == shared_tokens
    assert bobs["today"]["providers"]["swarms"]["total_tokens"] == shared_tokens  # paid once
