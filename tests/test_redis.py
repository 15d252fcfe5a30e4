"""Several stateless instances sharing one real Redis, behind a real round-robin proxy.

Jobs are reachable through any instance, identical requests are paid once, budgets and usage are
shared, a dead instance's job is reported lost in bounded time, and Redis trouble has the outcome
the README promises.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp_types import CallToolResult

from swarm_inference_mcp.server.scaleout.link import TIMEOUT_S
from tests.conftest import error_of, fake_env
from tests.fake_upstream import FakeUpstream, Reply, eventually
from tests.redis_server import PASSWORD, FreezingProxy, RedisServer
from tests.servers import SCRIPT, free_port, http_server, mcp_client, run_script, wait_until_up
from tests.test_jobs import answer_of, handle_of, jobs_listing, text_of
from tests.test_streaming import Progress
from tests.test_usage import usage_of

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
LEASE_S = 2.0


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


class Deployment:
    """Stateless instances sharing Redis, and the proxy in front of them."""

    def __init__(self, url: str, processes: list[subprocess.Popen[bytes]]) -> None:
        self.url = url
        self.processes = processes

    def served(self) -> list[tuple[str, int]]:
        return [(what, index) for what, index in httpx2.get(f"{self.url}/_proxy/served", timeout=5).json()]

    def next_backend(self) -> int:
        """Which instance the next request goes to (the proxy takes them in turn)."""
        return len(self.served()) % len(self.processes)

    def backend_of(self, tool: str) -> int:
        """The instance that served the last call of `tool`."""
        return [index for what, index in self.served() if what == f"tools/call {tool}"][-1]


@contextmanager
def deployment(fake: FakeUpstream, tmp_path: Path, redis_url: str | None, **env: str) -> Iterator[Deployment]:
    """Two instances: enough to show one sees what the other did (sharing `redis_url`, or nothing)."""
    shared = {} if redis_url is None else {"SWARM_MCP_REDIS_URL": redis_url, "SWARM_MCP_REDIS_LEASE": str(LEASE_S)}
    with ExitStack() as stack:
        bases, processes = [], []
        for n in range(2):
            base, process = stack.enter_context(
                http_server(
                    fake,
                    tmp_path,
                    "--stateless",
                    name=f"instance{n}",
                    **{**shared, **env},
                )
            )
            bases.append(base)
            processes.append(process)
        port = free_port()
        proxy = subprocess.Popen(
            [sys.executable, "-m", "tests.proxy", str(port), *bases],
            cwd=ROOT,
            env={**os.environ, "NO_PROXY": "127.0.0.1"},
            stdin=subprocess.DEVNULL,
        )
        stack.callback(proxy.wait, 10)
        stack.callback(proxy.terminate)
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/_proxy/served", proxy, "the proxy")
        yield Deployment(url, processes)


@asynccontextmanager
async def through(proxy: Deployment, mode: str = "auto") -> AsyncIterator[Client]:
    async with mcp_client(f"{proxy.url}/mcp", token=None, mode=mode) as client:
        yield client


async def steer(client: Client, proxy: Deployment, backend: int) -> None:
    """Make the next request go to instance `backend`: harmless requests until it is its turn."""
    while proxy.next_backend() != backend:
        await client.list_tools()


async def answered_again(client: Client, prompt: str) -> Any:
    """Call until a call answers again (Redis is back, and the link has tried it again)."""
    with anyio.fail_after(10):
        while (result := await client.call_tool("ask_swarm", {"prompt": prompt})).is_error:  # noqa: ASYNC110
            await anyio.sleep(0.2)  # the state is in another process: there is nothing to wait on
    return result


async def test_a_job_started_on_one_instance_is_collected_and_cancelled_through_the_other(
    fake: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    fake.script("swarms", Reply(delay_s=2.0), Reply(hang=True))
    with deployment(fake, tmp_path, redis_url) as proxy:
        async with through(proxy) as client:
            job = handle_of(await client.call_tool("ask_swarm", {"prompt": "slow question", "wait_s": 0}))
            owner = proxy.backend_of("ask_swarm")
            await steer(client, proxy, 1 - owner)
            answer = answer_of(await client.call_tool("get_result", {"job_id": job["job_id"], "wait_s": 30}))
            assert proxy.backend_of("get_result") == 1 - owner
            assert answer["text"] == "swarms says: slow question"

            doomed = handle_of(await client.call_tool("ask_swarm", {"prompt": "never answered", "wait_s": 0}))
            owner = proxy.backend_of("ask_swarm")
            await eventually(lambda: len(fake.seen("swarms")) == 2)
            await steer(client, proxy, 1 - owner)
            cancelled = await client.call_tool("cancel_job", {"job_id": doomed["job_id"]})
            assert proxy.backend_of("cancel_job") == 1 - owner
            assert cancelled.structured_content == {"job_id": doomed["job_id"], "status": "cancelled"}, text_of(
                cancelled
            )
            await eventually(lambda: fake.seen("swarms")[1].disconnected is not None)  # the request was aborted
            for _ in range(2):  # through both instances
                outcome = await client.call_tool("get_result", {"job_id": doomed["job_id"]})
                assert error_of(outcome)["kind"] == "cancelled"
            assert len(fake.seen("swarms")) == 2


async def test_without_redis_a_handle_reached_on_the_other_instance_says_collect_again_not_ask_again(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Two stateless instances with no Redis behind one address: a handle that reaches the instance that
    does not run its job is told to call get_result again (retryable), which reaches the other one: the
    answer is collected and paid for once."""
    fake.script("swarms", Reply(delay_s=1.0))
    with deployment(fake, tmp_path, None) as proxy:
        async with through(proxy) as client:
            job = handle_of(await client.call_tool("ask_swarm", {"prompt": "slow question", "wait_s": 0}))
            owner = proxy.backend_of("ask_swarm")
            await steer(client, proxy, 1 - owner)
            error = error_of(await client.call_tool("get_result", {"job_id": job["job_id"]}))
            await steer(client, proxy, owner)
            answer = answer_of(await client.call_tool("get_result", {"job_id": job["job_id"], "wait_s": 30}))
    assert error["kind"] == "unknown_job"
    assert error["retryable"] is True
    assert "call get_result again" in error["message"]
    assert answer["text"] == "swarms says: slow question"
    assert len(fake.seen("swarms")) == 1
    for n in range(2):  # each instance said at start what it cannot do alone
        assert "stateless without SWARM_MCP_REDIS_URL" in (tmp_path / f"instance{n}.stderr").read_text()


async def test_a_job_its_instance_forgot_is_still_collected_from_redis(
    fake: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    """The instance that ran a job made room for newer ones (SWARM_MCP_MAX_JOBS), while Redis still keeps
    the job for its TTL: a local miss looks there before it says the job is gone (before, the instance
    told the client to ask, and pay, again)."""
    with deployment(fake, tmp_path, redis_url, SWARM_MCP_MAX_JOBS="1") as proxy:
        async with through(proxy) as client:
            first = handle_of(await client.call_tool("ask_swarm", {"prompt": "first question", "wait_s": 0}))
            owner = proxy.backend_of("ask_swarm")
            await eventually(lambda: len(fake.seen("swarms")) == 1 and fake.seen("swarms")[0].finished is not None)
            await steer(client, proxy, owner)
            second = handle_of(await client.call_tool("ask_swarm", {"prompt": "second question", "wait_s": 0}))
            assert proxy.backend_of("ask_swarm") == owner
            await steer(client, proxy, owner)
            answer_of(await client.call_tool("get_result", {"job_id": second["job_id"], "wait_s": 30}))
            await steer(client, proxy, owner)
            collected = await client.call_tool("get_result", {"job_id": first["job_id"], "wait_s": 30})
            assert proxy.backend_of("get_result") == owner
    assert answer_of(collected)["text"] == "swarms says: first question"
    assert len(fake.seen("swarms")) == 2


async def test_swarm_jobs_lists_the_client_s_jobs_of_every_instance(
    fake: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    fake.script("fortytwo", Reply(hang=True))
    with deployment(fake, tmp_path, redis_url) as proxy:
        async with through(proxy) as client:
            job = handle_of(await client.call_tool("ask_fortytwo", {"prompt": "listed", "wait_s": 0}))
            answer_of(await client.call_tool("ask_swarm", {"prompt": "answered at once"}))  # no handle: not listed
            listings = [await jobs_listing(client) for _ in range(2)]  # one read per instance
            assert sorted(index for what, index in proxy.served() if what == "resources/read") == [0, 1]
            for listed in listings:
                (entry,) = listed
                assert entry["id"] == job["job_id"]
                assert entry["status"] == "running"
                assert entry["tool"] == "ask_fortytwo"
            await client.call_tool("cancel_job", {"job_id": job["job_id"]})
            for _ in range(2):
                (entry,) = await jobs_listing(client)
                assert entry["status"] == "cancelled"
                assert entry["forget_in_s"] > 0


async def test_get_result_on_the_other_instance_relays_the_running_job_s_progress(
    fake: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    fake.script("swarms", Reply(sse_delay_s=0.3))
    prompt = "one two three four five six seven eight"
    with deployment(fake, tmp_path, redis_url) as proxy:
        async with through(proxy, mode="legacy") as client:  # the mode in which the SDK's client takes progress
            job = handle_of(
                await client.call_tool("ask_swarm", {"prompt": prompt, "wait_s": 0}, progress_callback=Progress())
            )
            await steer(client, proxy, 1 - proxy.backend_of("ask_swarm"))
            progress = Progress()
            result = await client.call_tool(
                "get_result", {"job_id": job["job_id"], "wait_s": 30}, progress_callback=progress
            )
    assert answer_of(result)["text"] == f"swarms says: {prompt}"
    relayed = [message for message in progress.messages() if "chunks received" in message]
    assert len(relayed) >= 2, progress.messages()
    assert progress.values == sorted(set(progress.values))  # rising, as MCP requires


async def test_identical_requests_through_both_instances_make_one_upstream_call(
    fake: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    fake.script("fortytwo", Reply(delay_s=1.5))
    results: list[Any] = []
    with deployment(fake, tmp_path, redis_url) as proxy:
        async with through(proxy) as first, through(proxy) as second, anyio.create_task_group() as tg:

            async def ask(client: Client) -> None:
                results.append(await client.call_tool("ask_fortytwo", {"prompt": "the same question"}))

            tg.start_soon(ask, first)
            await eventually(lambda: len(fake.seen("fortytwo")) == 1)
            await steer(second, proxy, 1 - proxy.backend_of("ask_fortytwo"))
            tg.start_soon(ask, second)
        calls = [index for what, index in proxy.served() if what == "tools/call ask_fortytwo"]
    assert sorted(calls) == [0, 1]
    assert len(fake.seen("fortytwo")) == 1
    assert [answer_of(result)["text"] for result in results] == ["fortytwo says: the same question"] * 2


async def test_a_shared_budget_stops_both_instances_at_the_same_total(
    fake: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    per_call = 4  # "hello" is 1 prompt token; "swarms says: hello" 3 completion tokens
    budget = 3 * per_call + 1
    with deployment(fake, tmp_path, redis_url, SWARM_MCP_DAILY_TOKEN_BUDGET=str(budget)) as proxy:
        async with through(proxy) as client:
            for _ in range(4):
                answer_of(await client.call_tool("ask_swarm", {"prompt": "hello"}))
            refused_on = []
            for _ in range(2):
                error = error_of(await client.call_tool("ask_swarm", {"prompt": "hello"}))
                assert error["kind"] == "budget"
                assert f"({4 * per_call} used)" in error["message"]
                refused_on.append(proxy.backend_of("ask_swarm"))
            usage = await usage_of(client)
        answered_on = [index for what, index in proxy.served() if what == "tools/call ask_swarm"][:4]
    assert sorted(set(answered_on)) == [0, 1]
    assert sorted(refused_on) == [0, 1]
    assert len(fake.seen("swarms")) == 4
    assert usage["redis"].endswith(f"127.0.0.1:{redis_url.rsplit(':', 1)[1]}")
    assert PASSWORD not in json.dumps(usage)
    assert usage["today"]["providers"]["swarms"]["calls"] == 4
    assert usage["today"]["budgets"][0]["used"] == 4 * per_call


async def test_the_lifetime_budget_counts_every_instance(fake: FakeUpstream, tmp_path: Path, redis_url: str) -> None:
    with deployment(fake, tmp_path, redis_url, SWARM_MCP_TOKEN_BUDGET="5") as proxy:
        async with through(proxy) as client:
            answer_of(await client.call_tool("ask_swarm", {"prompt": "hello"}))
            answer_of(await client.call_tool("ask_swarm", {"prompt": "hello again"}))
            error = error_of(await client.call_tool("ask_swarm", {"prompt": "hello"}))
            refused = error_of(await client.call_tool("ask_swarm", {"prompt": "hello"}))
    assert error["kind"] == refused["kind"] == "budget"
    assert "every instance sharing Redis" in error["message"]


async def test_a_killed_instance_s_job_is_reported_lost_within_the_bound(
    fake: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    fake.script("fortytwo", Reply(hang=True))
    with deployment(fake, tmp_path, redis_url) as proxy:
        async with through(proxy) as client:
            job = handle_of(await client.call_tool("ask_fortytwo", {"prompt": "doomed", "wait_s": 0}))
            owner = proxy.backend_of("ask_fortytwo")
            await eventually(lambda: len(fake.seen("fortytwo")) == 1)
            proxy.processes[owner].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            result = await client.call_tool("get_result", {"job_id": job["job_id"], "wait_s": 60})
            took = time.monotonic() - killed
    error = error_of(result)
    assert error["kind"] == "instance_lost", error
    assert error["retryable"] is True
    assert job["job_id"] in error["message"]
    assert took < LEASE_S + LEASE_S / 3 + 1.5, took


async def test_redis_lost_with_a_budget_refuses_calls_fast_and_recovers(fake: FakeUpstream, tmp_path: Path) -> None:
    own = RedisServer(tmp_path / "redis")
    own.start()
    try:
        env = {"SWARM_MCP_REDIS_URL": own.url, "SWARM_MCP_DAILY_TOKEN_BUDGET": "100000"}
        with http_server(fake, tmp_path, "--stateless", **env) as (base, _):
            async with mcp_client(f"{base}/mcp", token=None) as client:
                answer_of(await client.call_tool("ask_swarm", {"prompt": "before"}))
                own.stop()
                started = time.monotonic()
                error = error_of(await client.call_tool("ask_swarm", {"prompt": "during"}))
                assert time.monotonic() - started < 3
                assert error["kind"] == "config"
                assert f"127.0.0.1:{own.port}" in error["message"]
                assert PASSWORD not in error["message"]
                assert "budget" in error["message"]
                own.start()
                answer_of(await answered_again(client, "after"))
                assert (await usage_of(client))["today"]["providers"]["swarms"]["calls"] == 1  # a new, empty Redis
        assert len(fake.seen("swarms")) == 2  # the refused call sent nothing
        assert PASSWORD not in (tmp_path / "server.stderr").read_text()
    finally:
        own.stop()


async def test_a_redis_that_hangs_holds_no_call_for_longer_than_its_timeout(
    fake: FakeUpstream, tmp_path: Path, redis_server: RedisServer, redis_url: str
) -> None:
    relay = FreezingProxy(redis_server.port)
    try:
        env = {"SWARM_MCP_REDIS_URL": relay.url, "SWARM_MCP_DAILY_TOKEN_BUDGET": "100000"}
        with http_server(fake, tmp_path, "--stateless", **env) as (base, _):
            async with mcp_client(f"{base}/mcp", token=None) as client:
                answer_of(await client.call_tool("ask_swarm", {"prompt": "before"}))
                relay.freeze()
                for n in range(4):
                    started = time.monotonic()
                    error = error_of(await client.call_tool("ask_swarm", {"prompt": f"frozen {n}"}))
                    assert time.monotonic() - started < TIMEOUT_S + 1.5  # one command's timeout, no more
                    assert error["kind"] == "config"
                    assert f"127.0.0.1:{relay.port}" in error["message"]
                relay.thaw()
                answer_of(await answered_again(client, "after"))
        assert len(fake.seen("swarms")) == 2
    finally:
        relay.close()


async def test_redis_lost_without_a_budget_goes_on_unshared_and_catches_up(fake: FakeUpstream, tmp_path: Path) -> None:
    own = RedisServer(tmp_path / "redis")
    own.start()
    try:
        with http_server(fake, tmp_path, "--stateless", SWARM_MCP_REDIS_URL=own.url) as (base, _):
            async with mcp_client(f"{base}/mcp", token=None) as client:
                own.stop()
                for n in range(3):
                    started = time.monotonic()
                    answer_of(await client.call_tool("ask_swarm", {"prompt": f"during {n}"}))
                    assert time.monotonic() - started < 3
                problem = (await usage_of(client))["problem"]
                assert f"127.0.0.1:{own.port}" in problem
                own.start()
                calls = 3
                with anyio.fail_after(10):  # once the link tries Redis again, the kept rows go with the next one
                    while (await usage_of(client)).get("today", {}).get("providers", {}).get("swarms", {}).get(
                        "calls"
                    ) != calls:
                        answer_of(await client.call_tool("ask_swarm", {"prompt": "after"}))
                        calls += 1
                        await anyio.sleep(0.2)
                assert calls > 3
        log = (tmp_path / "server.stderr").read_text()
        assert "cannot be reached" in log
        assert "answers again" in log
        assert PASSWORD not in log
    finally:
        own.stop()


def test_an_unreachable_redis_refuses_the_start_naming_the_host_not_the_password(fake: FakeUpstream) -> None:
    port = free_port()
    secret = "hunter2-do-not-show"
    done = run_script(
        env={
            **fake_env(fake),
            "SWARM_MCP_REDIS_URL": f"redis://:{secret}@127.0.0.1:{port}/2",
        }
    )
    assert done.returncode == 2
    assert f"redis://127.0.0.1:{port}/2" in done.stderr
    assert secret not in done.stderr
    assert done.stdout == ""


def test_a_wrong_password_refuses_the_start(fake: FakeUpstream, redis_server: RedisServer, tmp_path: Path) -> None:
    wrong = tmp_path / "redis-password"
    wrong.write_text("not-the-password\n")
    done = run_script(
        env={
            **fake_env(fake),
            "SWARM_MCP_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
            "SWARM_MCP_REDIS_PASSWORD_FILE": str(wrong),
        }
    )
    assert done.returncode == 2
    assert "not starting: Redis at" in done.stderr
    assert "not-the-password" not in done.stderr


async def test_a_password_file_and_the_usage_command_read_the_shared_rows(
    fake: FakeUpstream, tmp_path: Path, redis_server: RedisServer, redis_url: str
) -> None:
    password = tmp_path / "redis-password"
    password.write_text(PASSWORD + "\n")
    env = {
        "SWARM_MCP_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
        "SWARM_MCP_REDIS_PASSWORD_FILE": str(password),
    }
    with deployment(fake, tmp_path, redis_url, **env) as proxy:
        async with through(proxy) as client:
            for n in range(3):
                answer_of(await client.call_tool("ask_swarm", {"prompt": f"question {n}"}))
            answer_of(await client.call_tool("ask_fortytwo", {"prompt": "question"}))
    command_env = {"PATH": os.environ.get("PATH", ""), **env}
    shown = await anyio.run_process([SCRIPT, "usage", "--json"], env=command_env)
    report = json.loads(shown.stdout)
    assert report["redis"] == f"redis://127.0.0.1:{redis_server.port}/0"
    rows = {row["provider"]: row for row in report["rows"]}
    assert rows["swarms"]["calls"] == 3
    assert rows["fortytwo"]["calls"] == 1
    assert rows["swarms"]["total_tokens"] == sum(
        r.body and (len(r.body["messages"][-1]["content"].split()) * 2 + 2) for r in fake.seen("swarms")
    )
    table = (await anyio.run_process([SCRIPT, "usage"], env=command_env)).stdout.decode()
    assert "swarms" in table
    assert "4 calls" in table


def test_check_names_the_redis_it_reaches_never_its_password(fake: FakeUpstream, redis_server: RedisServer) -> None:
    done = run_script("check", env={**fake_env(fake), "SWARM_MCP_REDIS_URL": redis_server.url})
    assert f"Redis: OK, reachable and authorised at redis://127.0.0.1:{redis_server.port}/0" in done.stdout
    assert f"SWARM_MCP_REDIS_URL = redis://127.0.0.1:{redis_server.port}/0" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    assert done.returncode == 0, done.stdout


async def test_one_clients_refusal_is_never_handed_to_another_through_shared_work(
    fake: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    """carol's daily budget is spent; she and alice ask the same question at the same moment through
    two instances: alice always gets the answer, never carol's refusal (nor her name and usage)."""
    carol, alice = "carol-token-0123456789abcd", "alice-token-0123456789abcd"
    tokens = tmp_path / "clients.txt"
    tokens.write_text(f"carol {carol} daily_tokens=5\nalice {alice}\n")
    env = {"SWARM_MCP_REDIS_URL": redis_url, "SWARM_MCP_TOKENS_FILE": str(tokens)}
    with (
        http_server(fake, tmp_path, "--stateless", name="first", **env) as (first, _),
        http_server(fake, tmp_path, "--stateless", name="second", **env) as (second, _),
    ):
        async with (
            mcp_client(f"{first}/mcp", token=carol) as carols,
            mcp_client(f"{second}/mcp", token=alice) as alices,
        ):
            answer_of(await carols.call_tool("ask_swarm", {"prompt": "spend all of carol's budget at once"}))
            for n in range(30):
                question = {"prompt": f"the same question {n}"}
                answers: list[CallToolResult] = []
                async with anyio.create_task_group() as tg:
                    tg.start_soon(carols.call_tool, "ask_swarm", question)
                    tg.start_soon(_answer_into, answers, alices, question)
                (alices_answer,) = answers
                assert not alices_answer.is_error, (n, text_of(alices_answer))
                assert "carol" not in text_of(alices_answer)


def _status(base: str, token: str) -> int:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    return httpx2.post(f"{base}/mcp", json=body, headers=headers, timeout=10).status_code


async def test_a_rotated_token_takes_over_its_name_without_touching_redis(
    fake: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    """alice's token is rotated in the tokens file and the server restarted on the same Redis: within a
    lease her new token works and the old one does not; nobody touched Redis. Then rotated again with
    SIGHUP on both instances of a deployment: the same."""
    old, new, newer = "alice-old-token-0123456789", "alice-new-token-0123456789", "alice-newer-token-012345678"
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"alice {old}\n")
    env = {"SWARM_MCP_TOKENS_FILE": str(tokens), "SWARM_MCP_REDIS_URL": redis_url, "SWARM_MCP_REDIS_LEASE": "2"}
    with http_server(fake, tmp_path, "--stateless", name="before", **env) as (base, _):
        assert _status(base, old) == 200
    tokens.write_text(f"alice {new}\n")
    with http_server(fake, tmp_path, "--stateless", name="after", **env) as (base, _):
        await eventually(lambda: _status(base, new) == 200, timeout_s=4 * LEASE_S)
        assert _status(base, old) == 401
    with deployment(fake, tmp_path, redis_url, SWARM_MCP_TOKENS_FILE=str(tokens)) as proxy:
        await eventually(lambda: _status(proxy.url, new) == 200 and _status(proxy.url, new) == 200, timeout_s=8)
        tokens.write_text(f"alice {newer}\n")
        for process in proxy.processes:
            process.send_signal(signal.SIGHUP)
        await eventually(lambda: [_status(proxy.url, newer), _status(proxy.url, newer)] == [200, 200], timeout_s=8)
        assert [_status(proxy.url, new), _status(proxy.url, new)] == [401, 401]  # through each instance in turn


async def test_sighup_cannot_take_another_deployments_name(fake: FakeUpstream, tmp_path: Path, redis_url: str) -> None:
    """A second deployment on the same Redis adds an "alice" of its own to its tokens file and gets SIGHUP:
    the check at start runs then too, so its alice is refused while the first deployment serves hers."""
    first_alice, second_alice = "alice-first-token-01234567", "alice-second-token-0123456"
    (tmp_path / "first.txt").write_text(f"alice {first_alice}\n")
    second_file = tmp_path / "second.txt"
    second_file.write_text("bob bob-token-0123456789abcd\n")
    shared = {"SWARM_MCP_REDIS_URL": redis_url, "SWARM_MCP_REDIS_LEASE": "2"}
    with (
        http_server(
            fake, tmp_path, "--stateless", name="first", SWARM_MCP_TOKENS_FILE=str(tmp_path / "first.txt"), **shared
        ) as (
            first,
            _,
        ),
        http_server(fake, tmp_path, "--stateless", name="second", SWARM_MCP_TOKENS_FILE=str(second_file), **shared) as (
            second,
            process,
        ),
    ):
        second_file.write_text(f"bob bob-token-0123456789abcd\nalice {second_alice}\n")
        process.send_signal(signal.SIGHUP)
        await eventually(lambda: "client alice of" in (tmp_path / "second.stderr").read_text(), timeout_s=8)
        assert _status(second, second_alice) == 401
        assert _status(second, "bob-token-0123456789abcd") == 200
        assert _status(first, first_alice) == 200


async def _answer_into(into: list[CallToolResult], client: Client, question: dict[str, Any]) -> None:
    into.append(await client.call_tool("ask_swarm", question))


async def test_a_name_is_one_client_across_instances_sharing_redis(
    fake: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    """Two instances, each with its own tokens file naming an "alice" with another token: the second one
    refuses its alice (and says so), so she can neither see nor cancel the first alice's jobs."""
    first_alice, second_alice = "alice-one-token-0123456789", "alice-two-token-0123456789"
    (tmp_path / "first.txt").write_text(f"alice {first_alice}\n")
    (tmp_path / "second.txt").write_text(f"alice {second_alice}\nbob bob-token-0123456789abcd\n")
    base_env = {"SWARM_MCP_REDIS_URL": redis_url}
    with (
        http_server(
            fake, tmp_path, "--stateless", name="first", SWARM_MCP_TOKENS_FILE=str(tmp_path / "first.txt"), **base_env
        ) as (first, _),
        http_server(
            fake,
            tmp_path,
            "--stateless",
            name="second",
            SWARM_MCP_TOKENS_FILE=str(tmp_path / "second.txt"),
            **base_env,
        ) as (second, _),
    ):
        refused = httpx2.post(
            f"{second}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Authorization": f"Bearer {second_alice}", "Accept": "application/json, text/event-stream"},
            timeout=10,
        )
        assert refused.status_code == 401
        async with mcp_client(f"{second}/mcp", token="bob-token-0123456789abcd") as bob:
            assert (await bob.list_tools()).tools  # the rest of the file still serves
        async with mcp_client(f"{first}/mcp", token=first_alice) as alice:
            assert (await alice.list_tools()).tools
    log = (tmp_path / "second.stderr").read_text()
    assert "client alice of" in log
    assert "has another token than the client of that name the instances sharing" in log
    assert second_alice not in log
