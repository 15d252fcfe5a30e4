"""The descriptions of this package that others read: the registry's `server.json` and the bundle's
manifest say what the server is, and must agree with it and with each other."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from swarm_inference_mcp.server import __version__
from swarm_inference_mcp.server.environment import SECRET_FIELDS, VARIABLES

ROOT = Path(__file__).parent.parent
SERVER_JSON = json.loads((ROOT / "server.json").read_text())
MANIFEST = json.loads((ROOT / "bundle" / "manifest.json").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCHEMA = json.loads((ROOT / "tests" / "specs" / "registry-server.schema.json").read_text())
SECRET_ALIASES = {variable.env for variable in VARIABLES if variable.name in SECRET_FIELDS}
ALIASES = {variable.env for variable in VARIABLES}


def test_server_json_validates_against_the_registry_schema() -> None:
    jsonschema.validate(SERVER_JSON, SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    assert SERVER_JSON["$schema"] == SCHEMA["$id"]


def test_one_version_everywhere() -> None:
    version = PYPROJECT["project"]["version"]
    (package,) = SERVER_JSON["packages"]
    assert {__version__, SERVER_JSON["version"], package["version"], MANIFEST["version"]} == {version}


def test_server_json_names_the_pypi_package_run_with_uvx_over_stdio() -> None:
    (package,) = SERVER_JSON["packages"]
    assert package["registryType"] == "pypi"
    assert package["identifier"] == PYPROJECT["project"]["name"]
    assert package["runtimeHint"] == "uvx"
    assert package["transport"] == {"type": "stdio"}
    assert "swarm-inference-mcp" in PYPROJECT["project"]["scripts"]  # what uvx runs


def test_the_readme_carries_the_name_the_registry_checks_on_pypi() -> None:
    assert f"mcp-name: {SERVER_JSON['name']}" in (ROOT / "README.md").read_text()


def test_every_variable_described_is_a_setting_and_secret_exactly_when_it_is_one() -> None:
    (package,) = SERVER_JSON["packages"]
    for variable in package["environmentVariables"]:
        assert variable["name"] in ALIASES, variable["name"]
        assert variable["isSecret"] is (variable["name"] in SECRET_ALIASES), variable["name"]
        assert variable["isRequired"] is False, "one provider's key is enough, and every other setting has a default"
    bundle_env = MANIFEST["server"]["mcp_config"]["env"]
    assert set(bundle_env) == {variable["name"] for variable in package["environmentVariables"]}
    for alias, value in bundle_env.items():
        key = value.removeprefix("${user_config.").removesuffix("}")
        option = MANIFEST["user_config"][key]
        assert option.get("sensitive", False) is (alias in SECRET_ALIASES), alias
        assert option["required"] is False, alias


def test_the_bundle_icon_is_the_512_pixel_png_mcpb_recommends() -> None:
    png = (ROOT / "bundle" / MANIFEST["icon"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (512, 512)


def test_the_descriptions_fit_where_they_are_shown() -> None:
    assert len(SERVER_JSON["description"]) <= 100
    assert PYPROJECT["project"]["description"]
    repository = PYPROJECT["project"]["urls"]["Repository"]
    assert SERVER_JSON["repository"]["url"] == MANIFEST["repository"]["url"] == repository


@pytest.mark.anyio
async def test_the_manifest_lists_the_tools_the_server_serves(connect: Callable[..., Any]) -> None:
    async with connect() as client:
        served = {tool.name for tool in (await client.list_tools()).tools}
    assert {tool["name"] for tool in MANIFEST["tools"]} == served
