"""The README's promises that a test can hold it to: the two commands, the settings tables, the example.

The host snippets are started for real in `tests/test_install.py`.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from swarm_inference_mcp.server.environment import VARIABLES
from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", README, re.DOTALL)


def test_readme_opens_with_install_and_test_commands_and_ci_runs_the_test_command() -> None:
    install, test = shell_blocks()[:2]
    assert "pip install ." in install
    assert install.endswith("swarm-inference-mcp")
    assert "[test]" in test
    assert test.endswith("python -m pytest")
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines, "CI must call the README's test command verbatim"


def test_every_setting_is_in_the_configuration_table() -> None:
    for variable in VARIABLES:
        assert f"`{variable.env}`" in CONFIGURATION, variable.env
        if variable.flag is not None:
            assert f"`{variable.flag}`" in CONFIGURATION, variable.name


def test_the_readme_settings_are_settings_with_the_defaults_it_gives() -> None:
    """The README's short table: each variable is a setting, its default the one the server uses."""
    section = README.split("## Settings people change")[1].split("\n## ")[0]
    rows = re.findall(r"^\| (`[^|]+) \| ([^|]+) \|", section, re.MULTILINE)
    assert len(rows) >= 5
    by_alias = {variable.env: variable for variable in VARIABLES}
    for names, default in rows:
        aliases = re.findall(r"`([A-Z0-9_]+)`", names)
        shown = re.findall(r"`([^`]+)`", default) or [default.strip()] * len(aliases)
        for alias, value in zip(aliases, shown, strict=True):
            assert alias in by_alias, alias
            expected = by_alias[alias].default
            if expected is None:
                assert value == "unset", alias
            else:
                assert value == f"{expected:g}" if isinstance(expected, float) else value == str(expected), alias


def test_claude_desktop_example_is_a_complete_server_entry() -> None:
    example = json.loads((ROOT / "claude_desktop_config.example.json").read_text())
    (entry,) = example["mcpServers"].values()
    assert entry["command"].endswith("swarm-inference-mcp")
    assert isinstance(entry["args"], list)
    assert set(entry["env"]) == {"FORTYTWO_API_KEY", "SWARMS_API_KEY"}
    assert json.dumps(example, indent=2) in README


def test_the_test_command_installs_from_the_lock_which_pins_the_toolchain() -> None:
    """A release of a test tool cannot change CI: the README's test command reads the lock, and the
    lock holds an exact version of every tool the checks run."""
    test = shell_blocks()[1]
    assert "-c tests/constraints.txt" in test
    pins = dict(
        line.split(" ;")[0].split("==")
        for line in (ROOT / "tests" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    )
    for tool in ("pytest", "ruff", "mypy", "redis", "mcp", "pydantic", "uvicorn"):
        assert tool in pins, tool


@pytest.mark.slow
def test_the_see_it_work_command_calls_a_tool_and_prints_the_answer(fake: FakeUpstream, tmp_path: Path) -> None:
    """The README's Inspector line as written, but for where this machine keeps things: the Inspector
    installed by the test run, the console script of this venv, the fake upstream's key and address."""
    from tests import third_party  # noqa: PLC0415 - installs the Inspector on first use
    from tests.servers import SCRIPT  # noqa: PLC0415
    from tests.test_cross_client import inspector  # noqa: PLC0415

    (line,) = [block for block in shell_blocks() if "inspector" in block]
    words = shlex.split(line.replace('"$SWARMS_API_KEY"', fake.keys["swarms"]))
    assert words[:3] == ["npx", f"@modelcontextprotocol/inspector@{third_party.INSPECTOR.rsplit('@', 1)[1]}", "--cli"]
    assert words[-1] == ".venv/bin/swarm-inference-mcp"
    here = ["-e", f"SWARMS_BASE_URL={fake.url('swarms')}", "-e", "SWARM_MCP_STATE_DB=off"]
    done = inspector({"npm": third_party.npm_clients()}, tmp_path, *here, *words[3:-1], str(SCRIPT))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["content"][0]["text"] == "swarms says: Name three uses of a swarm."
