"""The README's promises that a test can hold it to: the two commands, the settings tables, the example.

The host snippets are started for real in `tests/test_install.py`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from swarm_inference_mcp.server.environment import VARIABLES

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
