"""The console script over stdio, driven by clients no one on this project wrote.

The TypeScript SDK 1.x (inside most desktop and IDE hosts) checks every result that carries
structured content against the tool's output schema, error results included, and turns a mismatch
into a protocol error; the Python `mcp` 1.x client checks successful results. The MCP Inspector
lints the tool schemas for portability. Each is installed by the test run (`tests/third_party.py`).
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
from tests.conftest import ERROR_META, TRACE_META, fake_env
from tests.fake_upstream import FakeUpstream, Reply

pytestmark = pytest.mark.slow

SCRIPT = Path(sys.executable).with_name("swarm-inference-mcp")
CLIENTS = ["typescript-sdk", "python-mcp1"]
TOOLS = {"ask_fortytwo", "ask_swarm", "ask_both", "list_models", "get_result", "cancel_job"}


@pytest.fixture(scope="module")
def installed() -> dict[str, Path]:
    return {"npm": third_party.npm_clients(), "mcp1": third_party.mcp1_python()}


def run_plan(
    client: str,
    installed: dict[str, Path],
    tmp_path: Path,
    env: dict[str, str],
    steps: list[dict[str, Any]],
    timeout_ms: int = 60_000,
) -> list[dict[str, Any]]:
    """Launch the console script from `client`, run `steps`, return each step's outcome."""
    plan = {
        "server": {"command": str(SCRIPT), "args": [], "env": {"PATH": os.environ["PATH"], **env}},
        "timeout_ms": timeout_ms,
        "steps": steps,
    }
    plan_file = tmp_path / f"{client}-plan.json"
    plan_file.write_text(json.dumps(plan))
    if client == "typescript-sdk":
        sdk_dir = installed["npm"]
        command = [third_party.node(), str(third_party.CLIENTS_DIR / "ts_client.cjs"), str(sdk_dir), str(plan_file)]
    else:
        command = [str(installed["mcp1"]), str(third_party.CLIENTS_DIR / "mcp1_client.py"), str(plan_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes: list[dict[str, Any]] = json.loads(done.stdout.splitlines()[-1])
    assert len(outcomes) == len(steps)
    return outcomes


def call(name: str, progress: bool = False, **arguments: Any) -> dict[str, Any]:
    return {"op": "call", "name": name, "arguments": arguments, "progress": progress}


def answer(outcome: dict[str, Any]) -> dict[str, Any]:
    """A successful tool result, as the client handed it over."""
    assert outcome["ok"], outcome["error"]
    result: dict[str, Any] = outcome["result"]
    assert not result.get("isError"), result
    return result


def tool_error(outcome: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """An error result that reached the caller as a tool error (not a protocol error): its text and `_meta` error."""
    assert outcome["ok"], f"a protocol error instead of a tool error: {outcome['error']}"
    result = outcome["result"]
    assert result["isError"] is True
    assert "structuredContent" not in result
    (block,) = result["content"]
    assert block["type"] == "text"
    return block["text"], result["_meta"][ERROR_META]


@pytest.mark.parametrize("client", CLIENTS)
def test_tools_listed_answered_and_streamed(
    client: str, installed: dict[str, Path], tmp_path: Path, fake: FakeUpstream
) -> None:
    outcomes = run_plan(
        client,
        installed,
        tmp_path,
        fake_env(fake),
        [
            {"op": "list"},
            call("ask_fortytwo", prompt="from another client"),
            call("ask_swarm", prompt="from another client", max_loops=2),
            call("ask_swarm", progress=True, prompt="stream this answer to another client"),
            call("ask_both", prompt="both please"),
        ],
    )
    listed, fortytwo, swarm, streamed, both = outcomes
    assert listed["ok"], listed
    assert {tool["name"] for tool in listed["result"]["tools"]} == TOOLS

    for outcome, provider in ((fortytwo, "fortytwo"), (swarm, "swarms")):
        result = answer(outcome)
        assert result["content"][0]["text"] == f"{provider} says: from another client"
        assert result["structuredContent"]["status"] == "done"
        assert list(result["_meta"][TRACE_META]) == [provider]  # how the answer came about, by provider
        assert result["structuredContent"]["usage"]["total_tokens"] > 0

    result = answer(streamed)
    assert result["content"][0]["text"] == "swarms says: stream this answer to another client"
    assert streamed["progress"], "no progress notification reached the client"
    assert fake.seen("swarms")[1].body["stream"] is True  # the second Swarms request was streamed

    result = answer(both)
    assert [r["answer"]["text"] for r in result["structuredContent"]["results"]] == [
        "fortytwo says: both please",
        "swarms says: both please",
    ]


@pytest.mark.parametrize("client", CLIENTS)
def test_failures_reach_the_caller_as_our_sentence(
    client: str, installed: dict[str, Path], tmp_path: Path, fake: FakeUpstream
) -> None:
    env = fake_env(fake, FORTYTWO_API_KEY="ft-revoked-key-0000")
    del env["SWARMS_API_KEY"]
    outcomes = run_plan(
        client,
        installed,
        tmp_path,
        env,
        [
            {"op": "list"},  # as hosts do: the TypeScript SDK checks results only against schemas it has listed
            call("ask_fortytwo", prompt="with a revoked key"),
            call("ask_swarm", prompt="with no key"),
            call("ask_fortytwo", prompt="bad argument", max_tokens=0),
            call("ask_both", prompt="both fail"),
        ],
    )
    unauthorised, missing, invalid, both = (tool_error(outcome) for outcome in outcomes[1:])
    assert unauthorised[0] == (
        "Fortytwo: HTTP 401 (authentication_error: Invalid authentication credentials); "
        "check that FORTYTWO_API_KEY holds a valid key with access to this model."
    )
    assert unauthorised[1]["kind"] == "auth"
    assert unauthorised[1]["status"] == 401
    assert missing[0] == "Swarms: no API key is set; set SWARMS_API_KEY in the server's environment."
    assert missing[1]["kind"] == "config"
    assert invalid[0] == (
        "ask_fortytwo: invalid arguments: `max_tokens`: input should be greater than or equal to 1 (got 0). "
        "Nothing was sent."
    )
    assert invalid[1]["kind"] == "invalid_arguments"
    assert both[1]["kind"] == "all_failed"
    assert [e["kind"] for e in both[1]["errors"]] == ["auth", "config"]
    assert len(fake.seen("fortytwo")) == 2  # the revoked-key calls; the invalid one was never sent


def test_a_job_longer_than_the_clients_timeout_completes_through_handles(
    installed: dict[str, Path], tmp_path: Path, fake: FakeUpstream
) -> None:
    fake.script("fortytwo", Reply(delay_s=5.0))  # longer than the client will wait for any one call
    env = fake_env(fake, SWARM_MCP_WAIT="1")
    steps: list[dict[str, Any]] = [
        {"op": "list"},
        {"op": "collect", "name": "ask_fortytwo", "arguments": {"prompt": "take your time"}},
    ]
    listed, collected = run_plan("typescript-sdk", installed, tmp_path, env, steps, timeout_ms=3000)
    assert listed["ok"]
    result = answer(collected)
    assert result["content"][0]["text"] == "fortytwo says: take your time"
    assert result["structuredContent"]["status"] == "done"
    assert collected["polls"] >= 2  # handed back, collected with get_result, no client timeout on the way
    assert len(fake.seen("fortytwo")) == 1


def test_pydantic_ai_shows_the_model_our_sentence(tmp_path: Path, fake: FakeUpstream) -> None:
    env = fake_env(fake, FORTYTWO_API_KEY="ft-revoked-key-0000")
    del env["SWARMS_API_KEY"]
    plan = {
        "server": {"command": str(SCRIPT), "args": [], "env": {"PATH": os.environ["PATH"], **env}},
        "steps": [
            call("ask_fortytwo", prompt="with a revoked key"),
            call("ask_swarm", prompt="with no key"),
            call("ask_fortytwo", prompt="bad argument", max_tokens=0),
        ],
    }
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    driver = third_party.CLIENTS_DIR / "pydantic_ai_client.py"
    done = subprocess.run(
        [str(third_party.pydantic_ai_python()), str(driver), str(plan_file)],
        capture_output=True, text=True, timeout=180, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    unauthorised, missing, invalid = json.loads(done.stdout.splitlines()[-1])
    assert unauthorised["error"]["message"] == (
        "Fortytwo: HTTP 401 (authentication_error: Invalid authentication credentials); "
        "check that FORTYTWO_API_KEY holds a valid key with access to this model."
    )
    assert missing["error"]["message"] == "Swarms: no API key is set; set SWARMS_API_KEY in the server's environment."
    assert invalid["error"]["message"] == (
        "ask_fortytwo: invalid arguments: `max_tokens`: input should be greater than or equal to 1 (got 0). "
        "Nothing was sent."
    )


def inspector(installed: dict[str, Path], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    launcher = installed["npm"] / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients" / "launcher"
    return subprocess.run(
        [third_party.node(), str(launcher / "build" / "index.js"), "--cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MCP_CATALOG_PATH": str(tmp_path / "catalog.json")},
    )


def test_inspector_finds_no_schema_portability_problem(installed: dict[str, Path], tmp_path: Path) -> None:
    done = inspector(installed, tmp_path, "--method", "tools/list", "--strict", str(SCRIPT))
    assert done.returncode == 0, done.stderr[-3000:]
    assert {tool["name"] for tool in json.loads(done.stdout)["tools"]} == TOOLS
    for line in done.stderr.splitlines():
        assert not line.startswith(("Warning:", "Error:", "Schema portability")), done.stderr[-3000:]


def test_inspector_shows_a_failure_as_a_tool_error_with_our_sentence(
    installed: dict[str, Path], tmp_path: Path, fake: FakeUpstream
) -> None:
    env = [f"{name}={value}" for name, value in fake_env(fake, SWARMS_API_KEY="sw-revoked-key-0000").items()]
    flags = [arg for pair in env for arg in ("-e", pair)]
    done = inspector(
        installed, tmp_path, *flags, "--method", "tools/call", "--tool-name", "ask_swarm",
        "--tool-arg", "prompt=hello", "--", str(SCRIPT),
    )  # fmt: skip
    result = json.loads(done.stdout)
    assert result["isError"] is True
    assert result["content"][0]["text"].startswith("Swarms: HTTP 401 (authentication_error: ")
    assert "Tool 'ask_swarm' returned isError:true" in done.stderr
    assert "schema" not in done.stderr.lower()
