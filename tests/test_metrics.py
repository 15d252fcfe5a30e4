"""The gateway's metrics as a real Prometheus server scrapes them, and where they are (not) served."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.conftest import error_of, fake_env
from tests.fake_upstream import FakeUpstream, Reply
from tests.prometheus_server import Prometheus
from tests.servers import free_port, http_server, mcp_client, run_script
from tests.test_gateway import ALICE, BOB, BOB_HASH, session_of, tokens_file

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SCRAPER = "prometheus-scrape-token-0123456789"


async def test_prometheus_scrapes_calls_tokens_latency_and_budgets(fake: FakeUpstream, tmp_path: Path) -> None:
    """alice's answer spends her whole daily budget, so her next call is refused; bob meets a 429 from
    Fortytwo and streams an answer from Swarms. Prometheus, scraping with the scrape token, sees all of it."""
    clients = tokens_file(tmp_path, f"alice {ALICE} daily_tokens=8", f"bob {BOB_HASH}")
    fake.script("fortytwo", Reply(status=429, json={"error": {"message": "slow down", "type": "rate_limited"}}))
    env = {
        "SWARM_MCP_TOKENS_FILE": str(clients),
        "SWARM_MCP_METRICS_TOKEN": SCRAPER,
        "SWARM_MCP_STATE_DB": str(tmp_path / "state.db"),
        "SWARM_MCP_DAILY_TOKEN_BUDGET": "1000",
        "SWARM_MCP_MAX_RETRIES": "0",
    }
    with (
        http_server(fake, tmp_path, **env) as (base, _),
        Prometheus(tmp_path, base.removeprefix("http://"), SCRAPER) as prom,
    ):
        async with mcp_client(f"{base}/mcp", token=ALICE) as alice:
            answered = await alice.call_tool("ask_swarm", {"prompt": "one two three"})  # 3 + 5 tokens
            refused = await alice.call_tool("ask_swarm", {"prompt": "four five"})
        async with mcp_client(f"{base}/mcp", token=BOB) as bob:
            limited = await bob.call_tool("ask_fortytwo", {"prompt": "six seven"})
            seen: list[float] = []  # a progress token: the request is streamed

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append(progress)

            streamed = await bob.call_tool("ask_swarm", {"prompt": "six seven"}, progress_callback=on_progress)
            fake.script("swarms", Reply(delay_s=4))
            handle = await bob.call_tool("ask_swarm", {"prompt": "slow", "wait_s": 0})
            session_of(base, BOB)  # a 2025-06-18 session (the SDK's client above needs none)
            prom.wait_for(
                {
                    'max_over_time(swarm_mcp_jobs_running{provider="swarms",client="bob"}[1m])': 1,
                    'swarm_mcp_tool_calls_total{tool="ask_swarm",outcome="handle",client="bob"}': 1,
                    'swarm_mcp_sessions{client="bob"}': 1,
                }
            )
            assert handle.structured_content is not None
            slow = {"job_id": handle.structured_content["job_id"], "wait_s": 30}
            collected = await bob.call_tool("get_result", slow)  # ended: no reservation in flight any more
        assert handle.structured_content is not None
        assert handle.structured_content["status"] == "running"
        assert not answered.is_error
        assert error_of(refused)["kind"] == "budget"
        assert error_of(limited)["kind"] == "rate_limited"
        assert not streamed.is_error
        assert not collected.is_error
        assert seen
        prom.wait_for(
            {
                'up{job="swarm"}': 1,
                'swarm_mcp_tool_calls_total{tool="ask_swarm",outcome="answer",client="alice"}': 1,
                'swarm_mcp_tool_calls_total{tool="ask_swarm",outcome="budget",client="alice"}': 1,
                'swarm_mcp_tool_calls_total{tool="ask_fortytwo",outcome="rate_limited",client="bob"}': 1,
                'swarm_mcp_upstream_requests_total{provider="fortytwo",outcome="rate_limited",client="bob"}': 1,
                'swarm_mcp_upstream_requests_total{provider="swarms",outcome="answer",client="alice"}': 1,
                'swarm_mcp_tokens_total{provider="swarms",client="alice",type="prompt"}': 3,
                'swarm_mcp_tokens_total{provider="swarms",client="alice",type="completion"}': 5,
                'swarm_mcp_tokens_total{provider="swarms",client="bob",type="completion"}': 4 + 3,
                'swarm_mcp_upstream_request_duration_seconds_count{provider="swarms"}': 3,
                'swarm_mcp_upstream_request_duration_seconds_count{provider="fortytwo"}': 1,
                'swarm_mcp_upstream_first_chunk_seconds_count{provider="swarms"}': 1,
                'swarm_mcp_budget_limit_tokens{budget="daily_tokens",client="alice"}': 8,
                'swarm_mcp_budget_remaining_tokens{budget="daily_tokens",client="alice"}': 0,
                'swarm_mcp_budget_limit_tokens{budget="SWARM_MCP_DAILY_TOKEN_BUDGET",window="day"}': 1000,
                'swarm_mcp_budget_remaining_tokens{budget="SWARM_MCP_DAILY_TOKEN_BUDGET",window="day"}': 1000
                - 8
                - 6
                - 4,
                "swarm_mcp_usage_store_up": 1,
            }
        )
        latency = prom.value(
            'histogram_quantile(0.5, swarm_mcp_upstream_request_duration_seconds_bucket{provider="swarms"})'
        )
        assert latency is not None
        assert 0 < latency <= 0.5  # the fake answers at once: the first bucket
        for expression in dashboard_queries():  # Prometheus itself parses and evaluates each panel's query
            prom.query(expression.replace("$__rate_interval", "1m"))
        for series in prom.query('{__name__=~"swarm_mcp_.*"}'):
            labels = " ".join(f"{k}={v}" for k, v in series["metric"].items())
            for secret in (ALICE, BOB, SCRAPER, fake.keys["swarms"], fake.keys["fortytwo"], "one two three", "j_"):
                assert secret not in labels, labels


async def test_metrics_need_the_scrape_token_beside_mcp_and_none_on_their_own_bind(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """The metrics name every client and its spend: a client's token never reads them, the scrape token
    does, and without one they are not served beside /mcp at all."""
    clients = tokens_file(tmp_path, f"alice {ALICE}")
    scrape = {"SWARM_MCP_TOKENS_FILE": str(clients), "SWARM_MCP_METRICS_TOKEN": SCRAPER}
    with http_server(fake, tmp_path, **scrape) as (base, _):
        assert httpx2.get(f"{base}/metrics", timeout=10).status_code == 401
        as_alice = httpx2.get(f"{base}/metrics", headers={"Authorization": f"Bearer {ALICE}"}, timeout=10)
        scraped = httpx2.get(f"{base}/metrics", headers={"Authorization": f"Bearer {SCRAPER}"}, timeout=10)
        on_mcp = httpx2.post(f"{base}/mcp", json={}, headers={"Authorization": f"Bearer {SCRAPER}"}, timeout=10)
        assert as_alice.status_code == 401
        assert "swarm_mcp" not in as_alice.text
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "# TYPE swarm_mcp_tool_calls_total counter" in scraped.text
        assert on_mcp.status_code == 401  # the scrape token is no client
    with http_server(fake, tmp_path, name="unscraped", SWARM_MCP_TOKENS_FILE=str(clients)) as (base, _):
        unset = httpx2.get(f"{base}/metrics", headers={"Authorization": f"Bearer {ALICE}"}, timeout=10)
        assert unset.status_code == 404
    port = free_port()
    own = {"SWARM_MCP_TOKENS_FILE": str(clients), "SWARM_MCP_METRICS_ADDR": f"127.0.0.1:{port}"}
    with http_server(fake, tmp_path, name="own-bind", **own) as (base, _):
        async with mcp_client(f"{base}/mcp", token=ALICE) as alice:
            await alice.call_tool("ask_swarm", {"prompt": "counted"})
        served = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert served.status_code == 200
        assert 'swarm_mcp_tool_calls_total{client="alice",outcome="answer",tool="ask_swarm"} 1.0' in served.text
        assert httpx2.get(f"http://127.0.0.1:{port}/mcp", timeout=10).status_code == 404
        beside = httpx2.get(f"{base}/metrics", headers={"Authorization": f"Bearer {ALICE}"}, timeout=10)
        assert beside.status_code == 404  # served on their own bind only


DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "swarm-inference-mcp.json"
DOCS = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def exposed(scrape: str) -> set[str]:
    """The metric families a scrape declares (`# TYPE name kind`)."""
    return {line.split()[2] for line in scrape.splitlines() if line.startswith("# TYPE ")}


def test_the_docs_and_the_dashboard_name_exactly_the_series_served(fake: FakeUpstream, tmp_path: Path) -> None:
    port = free_port()
    with http_server(fake, tmp_path, SWARM_MCP_METRICS_ADDR=f"127.0.0.1:{port}"):
        families = exposed(httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
    families -= {name.removesuffix("_total") + "_created" for name in families}
    documented = set(re.findall(r"^\| `(swarm_mcp_\w+)` \|", DOCS, re.MULTILINE))
    assert documented == families | {"swarm_mcp_redis_up"}  # that one only with Redis
    used = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for q in dashboard_queries()
        for name in re.findall(r"swarm_mcp_\w+", q)
    }
    assert used <= documented
    assert used >= documented - {"swarm_mcp_requests_queued"} or used == documented


def test_metrics_on_a_bind_in_use_refuse_the_start_in_one_sentence(fake: FakeUpstream, tmp_path: Path) -> None:
    with http_server(fake, tmp_path) as (base, _):
        taken = base.removeprefix("http://")
        done = run_script(
            "--transport",
            "streamable-http",
            "--port",
            str(free_port()),
            env={**fake_env(fake), "SWARM_MCP_METRICS_ADDR": taken},
        )
    assert done.returncode == 2
    assert f"swarm-inference-mcp: the metrics cannot be served on {taken}: " in done.stderr
    assert "Traceback" not in done.stderr


def metric(port: int, series: str) -> float | None:
    """One series' value as the metrics bind serves it now, or None when it is not there."""
    for line in httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return None


async def test_redis_down_shows_in_redis_up_and_in_the_rows_kept_back(fake: FakeUpstream, tmp_path: Path) -> None:
    """Without a budget calls go on while Redis is down, their usage rows kept for later: both show."""
    from tests.redis_server import RedisServer  # noqa: PLC0415 - imports the redis client

    own = RedisServer(tmp_path / "redis")
    own.start()
    port = free_port()
    env = {"SWARM_MCP_REDIS_URL": own.url, "SWARM_MCP_METRICS_ADDR": f"127.0.0.1:{port}"}
    try:
        with http_server(fake, tmp_path, "--stateless", **env) as (base, _):
            async with mcp_client(f"{base}/mcp", token=None) as client:
                assert not (await client.call_tool("ask_swarm", {"prompt": "before"})).is_error
                assert (metric(port, "swarm_mcp_redis_up"), metric(port, "swarm_mcp_usage_backlog_rows")) == (1, 0)
                own.stop()
                assert not (await client.call_tool("ask_swarm", {"prompt": "during"})).is_error
                assert (metric(port, "swarm_mcp_redis_up"), metric(port, "swarm_mcp_usage_backlog_rows")) == (0, 1)
                own.start()
                with anyio.fail_after(10):  # the link tries Redis again a second after it failed
                    for attempt in itertools.count():
                        assert not (await client.call_tool("ask_swarm", {"prompt": f"after {attempt}"})).is_error
                        if metric(port, "swarm_mcp_redis_up") == 1:
                            break
                        await anyio.sleep(0.2)
                assert metric(port, "swarm_mcp_usage_backlog_rows") == 0  # the rows kept back were sent
    finally:
        own.stop()
