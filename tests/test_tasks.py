"""Long calls the host runs as tasks, proven with task clients no one here wrote.

- 2025-11-25 (VS Code's generation): the TypeScript SDK 1.x's `client.experimental.tasks`, over stdio.
- 2026-07-28 (Claude Code's generation): `@modelcontextprotocol/ext-tasks` on the TypeScript SDK v2,
  over stateless streamable HTTP, on one instance and on two sharing Redis behind a proxy that sends
  each request to the next instance in turn.

The upstream sees one request per task in every case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import third_party
from tests.conftest import fake_env
from tests.fake_upstream import FakeUpstream, Reply, eventually
from tests.redis_server import RedisServer
from tests.servers import http_server
from tests.test_redis import deployment

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SCRIPT = Path(sys.executable).with_name("swarm-inference-mcp")
ASK_TOOLS = {"ask_fortytwo", "ask_swarm", "ask_both"}
TASKS = "io.modelcontextprotocol/tasks"
FAST = {"SWARM_MCP_TASK_POLL": "0.2", "SWARM_MCP_TASK_HANDOVER": "1"}
ALICE, BOB = "alice-token-0123456789abcdef", "bob-token-0123456789abcdef01"


@pytest.fixture(scope="module")
def sdk1() -> Path:
    return third_party.npm_clients()


@pytest.fixture(scope="module")
def sdk2() -> Path:
    return third_party.npm_v2_clients()


def run_v1(sdk1: Path, tmp_path: Path, env: dict[str, str], steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    plan = {"server": {"command": str(SCRIPT), "args": [], "env": {"PATH": os.environ["PATH"], **env}}, "steps": steps}
    plan_file = tmp_path / "tasks-plan.json"
    plan_file.write_text(json.dumps(plan))
    command = [third_party.node(), str(third_party.CLIENTS_DIR / "ts_tasks_client.cjs"), str(sdk1), str(plan_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes: list[dict[str, Any]] = json.loads(done.stdout.splitlines()[-1])
    return outcomes


def run_v2(sdk2: Path, tmp_path: Path, url: str, steps: list[dict[str, Any]], token: str | None = None) -> Any:
    plan_file = tmp_path / "v2-plan.json"
    plan_file.write_text(json.dumps({"url": url, "token": token, "steps": steps}))
    driver = third_party.v2_driver(sdk2)
    done = subprocess.run(
        [third_party.node(), str(driver), str(plan_file)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd=sdk2,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def raw_task_request(method: str, task_id: str, *, declare: bool = True) -> dict[str, Any]:
    capabilities: dict[str, Any] = {"extensions": {TASKS: {}}} if declare else {}
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    }
    return {"op": "raw", "request": {"method": method, "params": {"taskId": task_id, "_meta": meta}}}


def text_of(result: dict[str, Any]) -> str:
    (block,) = result["content"]
    text: str = block["text"]
    return text


# --- 2025-11-25: the TypeScript SDK 1.x's tasks client ------------------------------------------


def test_v1_a_slow_call_runs_as_a_task_to_its_answer_and_a_cancelled_one_aborts_upstream(
    sdk1: Path, fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.script("swarms", Reply(delay_s=2), Reply(hang=True))
    steps: list[dict[str, Any]] = [
        {"op": "stream", "name": "ask_swarm", "arguments": {"prompt": "slow question"}},
        {"op": "stream", "name": "ask_swarm", "arguments": {"prompt": "cancel me"}, "cancel": True},
        {"op": "stream", "name": "ask_swarm", "arguments": {"prompt": ""}},
        {"op": "list"},
    ]
    slow, cancelled, refused, listing = run_v1(sdk1, tmp_path, fake_env(fake, **FAST), steps)

    kinds = [message["type"] for message in slow["messages"]]
    assert kinds[0] == "taskCreated"
    assert kinds[-1] == "result"
    assert "taskStatus" in kinds
    created = slow["messages"][0]
    assert created["status"] == "working"
    assert created["pollInterval"] == 200
    assert "Swarms is still working on this" in created["statusMessage"]
    task_id = created["taskId"]
    assert len(task_id.split("-")[1]) == 24  # 96 random bits
    result = slow["messages"][-1]["result"]
    assert text_of(result) == "swarms says: slow question"
    assert result["structuredContent"]["status"] == "done"
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
    assert "get_result" not in json.dumps(result)  # the host polls: nothing asks the model to

    assert cancelled["cancelled"]["status"] == "cancelled"
    assert cancelled["messages"][-1]["type"] == "error"
    assert "was cancelled" in cancelled["messages"][-1]["error"]["message"]

    assert [message["status"] for message in refused["messages"] if "status" in message][-1] == "completed"
    assert refused["messages"][-1]["result"]["isError"] is True
    assert "invalid arguments" in text_of(refused["messages"][-1]["result"])

    assert listing["capabilities"]["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
    optional = {tool["name"] for tool in listing["tools"] if tool.get("execution", {}).get("taskSupport") == "optional"}
    assert optional == ASK_TOOLS
    listed = {task["taskId"]: task["status"] for task in listing["tasks"]}
    assert listed[task_id] == "completed"
    assert listed[cancelled["messages"][0]["taskId"]] == "cancelled"

    seen = fake.seen("swarms")
    asked = [request.body["messages"][-1]["content"] if request.body else None for request in seen]
    # The cancel comes as soon as the task exists: the request was still waiting for its usage row
    # (then it never left, and nothing was paid), or it was leaving or had left, and the cancel cut it
    # off (its body half sent, or whole).
    assert asked in (["slow question"], ["slow question", None], ["slow question", "cancel me"])
    assert all(request.disconnected is not None for request in seen[1:] if request.body)  # whole: aborted


def test_v1_a_task_and_a_plain_call_of_the_same_question_share_one_request(
    sdk1: Path, fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.script("fortytwo", Reply(delay_s=1.5))
    steps = [{"op": "stream", "name": "ask_fortytwo", "arguments": {"prompt": "same"}}]
    env = fake_env(fake, **FAST)
    (first,) = run_v1(sdk1, tmp_path, env, steps)
    assert text_of(first["messages"][-1]["result"]) == "fortytwo says: same"
    assert len(fake.seen("fortytwo")) == 1


# --- 2026-07-28: ext-tasks on the TypeScript SDK v2 ---------------------------------------------


def test_v2_a_slow_call_settles_through_a_task_a_fast_one_comes_back_directly(
    sdk2: Path, fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.script("swarms", Reply(delay_s=2.5), Reply(hang=True))
    with http_server(fake, tmp_path, "--stateless", **FAST) as (base, _):
        run = run_v2(
            sdk2,
            tmp_path,
            f"{base}/mcp",
            [
                {"op": "task", "name": "ask_swarm", "arguments": {"prompt": "slow question"}},
                {"op": "task", "name": "ask_swarm", "arguments": {"prompt": "cancel me"}, "cancel": True},
                {"op": "task", "name": "ask_swarm", "arguments": {"prompt": "fast question"}},
                raw_task_request("tasks/get", "j_000000-000000000000000000000000"),
            ],
        )
    slow, cancelled, fast, unknown = run["outcomes"]
    assert slow["ok"], slow
    assert slow["kind"] == "task"
    assert slow["status"] == "completed"
    assert text_of(slow["result"]) == "swarms says: slow question"
    statuses = [event["status"] for event in slow["events"] if event["type"] == "task"]
    assert statuses[0] == "working"
    assert statuses[-1] == "completed"
    assert "get_result" not in json.dumps(slow["result"])

    assert cancelled["kind"] == "task"
    assert cancelled["status"] == "cancelled"
    assert fast["kind"] == "immediate"
    assert text_of(fast["result"]) == "swarms says: fast question"

    assert unknown["reply"]["kind"] == "error"
    assert unknown["reply"]["error"]["code"] == -32602

    polls = [post for post in run["posted"] if post["method"] == "tasks/get"]
    assert polls
    assert all(post["headers"]["mcp-name"] == slow["taskId"] for post in polls[:-1])
    seen = fake.seen("swarms")
    assert [request.body["messages"][-1]["content"] for request in seen] == [
        "slow question",
        "cancel me",
        "fast question",
    ]
    assert seen[1].disconnected is not None


def test_v2_a_request_that_does_not_declare_the_extension_never_gets_a_task(
    sdk2: Path, fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.script("swarms", Reply(delay_s=2))
    with http_server(fake, tmp_path, "--stateless", **FAST, SWARM_MCP_WAIT="0") as (base, _):
        run = run_v2(
            sdk2,
            tmp_path,
            f"{base}/mcp",
            [
                {"op": "call", "name": "ask_swarm", "arguments": {"prompt": "plain"}},
                raw_task_request("tasks/get", "j_000000-000000000000000000000000", declare=False),
            ],
        )
    plain, undeclared = run["outcomes"]
    assert plain["result"]["structuredContent"]["status"] == "running"  # the job handle, as before
    assert "resultType" not in plain["result"] or plain["result"]["resultType"] == "complete"
    assert undeclared["reply"]["error"]["code"] == -32021


def test_v2_ordinary_calls_list_answer_refuse_and_report_progress(
    sdk2: Path, fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.script("fortytwo", Reply(status=401, json={"error": {"message": "bad key", "type": "auth"}}))
    fake.script("swarms", Reply(sse_delay_s=0.05))
    with http_server(fake, tmp_path, "--stateless", SWARM_MCP_MAX_RETRIES="0") as (base, _):
        run = run_v2(
            sdk2,
            tmp_path,
            f"{base}/mcp",
            [
                {"op": "list"},
                {"op": "call", "name": "ask_swarm", "arguments": {"prompt": "streamed"}, "progress": True},
                {"op": "call", "name": "ask_fortytwo", "arguments": {"prompt": "refused upstream"}},
                {"op": "call", "name": "ask_swarm", "arguments": {"prompt": ""}},
                {"op": "call", "name": "get_result", "arguments": {"job_id": "not-a-job"}},
            ],
        )
    listed, streamed, auth, invalid, unknown = run["outcomes"]
    assert listed["era"] == "modern"
    assert {tool["name"] for tool in listed["result"]["tools"]} >= ASK_TOOLS | {"get_result", "cancel_job"}
    assert streamed["ok"], streamed
    assert text_of(streamed["result"]) == "swarms says: streamed"
    assert streamed["progress"]
    for outcome, kind, said in [
        (auth, "auth", "Fortytwo: HTTP 401 (auth: bad key); check that FORTYTWO_API_KEY"),
        (invalid, "invalid_arguments", "ask_swarm: invalid arguments: `prompt`"),
        (unknown, "unknown_job", "get_result: job 'not-a-job' is not a job id"),
    ]:
        assert outcome["ok"], outcome
        result = outcome["result"]
        assert result["isError"] is True
        assert text_of(result).startswith(said), text_of(result)
        assert result["_meta"]["swarm-inference-mcp/error"]["kind"] == kind


def test_v2_a_task_is_polled_and_cancelled_through_either_instance_sharing_redis(
    sdk2: Path, fake: FakeUpstream, tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    tokens = tmp_path / "clients.txt"
    tokens.write_text(f"alice {ALICE}\nbob {BOB}\n")
    fake.script("swarms", Reply(delay_s=2.5), Reply(hang=True))
    with deployment(fake, tmp_path, redis_server.url, SWARM_MCP_TOKENS_FILE=str(tokens), **FAST) as proxy:
        run = run_v2(
            sdk2,
            tmp_path,
            f"{proxy.url}/mcp",
            [
                {"op": "task", "name": "ask_swarm", "arguments": {"prompt": "shared slow"}},
                {"op": "task", "name": "ask_swarm", "arguments": {"prompt": "shared cancel"}, "cancel": True},
            ],
            token=ALICE,
        )
        served = proxy.served()
        slow, cancelled = run["outcomes"]
        assert slow["status"] == "completed", slow
        assert text_of(slow["result"]) == "swarms says: shared slow"
        assert cancelled["status"] == "cancelled"
        polled_on = {index for what, index in served if what == "tasks/get"}
        assert polled_on == {0, 1}, served  # both instances answered polls of the same task
        assert [what for what, _ in served].count("tasks/cancel") == 1, served

        other = run_v2(sdk2, tmp_path, f"{proxy.url}/mcp", [raw_task_request("tasks/get", slow["taskId"])], token=BOB)
        (foreign,) = other["outcomes"]
        assert foreign["reply"]["kind"] == "error"
        assert foreign["reply"]["error"]["code"] == -32602  # another client's task is unknown to bob
    seen = fake.seen("swarms")
    assert [request.body["messages"][-1]["content"] for request in seen] == ["shared slow", "shared cancel"]
    assert seen[1].disconnected is not None  # cancelled wherever the cancel landed


async def test_a_task_id_is_a_job_id(fake: FakeUpstream, sdk2: Path, tmp_path: Path) -> None:
    """get_result collects a task by its id, and the task methods find a job handed out as a handle."""
    fake.script("swarms", Reply(delay_s=1.5))
    with http_server(fake, tmp_path, "--stateless", **FAST) as (base, _):
        run = run_v2(
            sdk2,
            tmp_path,
            f"{base}/mcp",
            [{"op": "call", "name": "ask_swarm", "arguments": {"prompt": "handle", "wait_s": 0}}],
        )
        handle = run["outcomes"][0]["result"]["structuredContent"]["job_id"]
        await eventually(lambda: len(fake.seen("swarms")) == 1)
        polled = run_v2(sdk2, tmp_path, f"{base}/mcp", [raw_task_request("tasks/get", handle)])
        task = polled["outcomes"][0]["reply"]["result"]
        assert task["taskId"] == handle
        assert task["status"] in ("working", "completed")
    assert len(fake.seen("swarms")) == 1
