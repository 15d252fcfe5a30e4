"""The README's promises that a test can hold it to: the two commands, the config table, the example."""

from __future__ import annotations

import json
import re
from pathlib import Path

from swarm_inference_mcp.server.config import SECRET_FIELDS, Settings

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


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
    for name, field in Settings.model_fields.items():
        assert f"`{field.alias}`" in README, field.alias
        if name not in SECRET_FIELDS:
            assert f"`--{name.replace('_', '-')}`" in README, name


def test_claude_desktop_example_is_a_complete_server_entry() -> None:
    example = json.loads((ROOT / "claude_desktop_config.example.json").read_text())
    (entry,) = example["mcpServers"].values()
    assert entry["command"].endswith("swarm-inference-mcp")
    assert isinstance(entry["args"], list)
    assert set(entry["env"]) == {"FORTYTWO_API_KEY", "SWARMS_API_KEY"}
    assert json.dumps(example, indent=2) in README
