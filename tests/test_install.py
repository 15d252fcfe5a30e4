"""Install as users do: the built wheel in a fresh environment, `uvx`, and the Claude Desktop bundle
started the way an MCPB host starts it; each ends in a stdio session that answers from the fake upstream.

The builds are real (`python -m build`, `bundle/build.py` with the pinned `mcpb`), and so are the
installs: pip and uv fetch the dependencies from the package index, uv into a cache kept between runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import TextContent

from bundle.build import version
from swarm_inference_mcp.server.environment import load_settings
from tests.conftest import error_of, fake_env
from tests.fake_upstream import FakeUpstream
from tests.third_party import cache_dir, esm_driver, node, npm_mcpb

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent
SESSION_TIMEOUT_S = 300
"""A first start under uv resolves and installs the dependencies before the server answers."""


def run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=900, check=False, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


NETWORK = ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")
"""How this machine reaches the package index; a host passes the user's own environment on to uv."""


def uv_env() -> dict[str, str]:
    """uv on this machine's Python (it never downloads one), with a cache that outlives the run."""
    return {name: os.environ[name] for name in NETWORK if name in os.environ} | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "UV_PYTHON": sys.executable,
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_CACHE_DIR": str(cache_dir() / "uv"),
        "UV_NO_PROGRESS": "1",
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel built from it, as `python -m build` makes them for an index."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, ROOT])
    return out


def wheel_of(dist: Path) -> Path:
    (wheel,) = dist.glob("*.whl")
    return wheel


async def first_answer(params: StdioServerParameters) -> tuple[set[str], str]:
    """Start the server as `params` says, list its tools and ask the Swarms API one question."""
    with anyio.fail_after(SESSION_TIMEOUT_S):
        async with Client(params) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            result = await client.call_tool("ask_swarm", {"prompt": "installed"})
    assert not result.is_error, result
    assert isinstance(result.content[0], TextContent)
    return names, result.content[0].text


TOOLS = {"ask_fortytwo", "ask_swarm", "ask_both", "get_result", "cancel_job", "list_models"}


def test_the_sdist_and_wheel_pass_twine_check_and_add_one_top_level_name(dist: Path) -> None:
    files = sorted(dist.iterdir())
    assert sorted(f.suffix for f in files) == [".gz", ".whl"], files
    run([sys.executable, "-m", "twine", "check", "--strict", *files])
    with zipfile.ZipFile(wheel_of(dist)) as wheel:
        names = wheel.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        fields = wheel.read(metadata).decode()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"swarm_inference_mcp"}
    assert "swarm_inference_mcp/server/py.typed" in names
    for field in ("Summary: ", "Keywords: ", "Classifier: ", "Project-URL: ", "License-Expression: MIT"):
        assert field in fields, field


async def test_the_wheel_in_a_fresh_environment_serves_over_stdio(
    dist: Path, tmp_path: Path, fake: FakeUpstream
) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel_of(dist)])
    outside = tmp_path / "elsewhere"  # not the repository, whose folders would shadow the install
    outside.mkdir()
    probe = "import importlib.util as u; print(u.find_spec('server'), u.find_spec('tools'))"
    clash = run([venv / "bin" / "python", "-c", probe], cwd=outside)
    assert clash.stdout.split() == ["None", "None"]
    printed = run([venv / "bin" / "python", "-m", "swarm_inference_mcp.server", "--version"], cwd=outside)
    assert printed.stdout.strip().endswith(version())

    env = fake_env(fake, SWARM_MCP_STATE_DB=str(tmp_path / "state.db"))
    script = StdioServerParameters(command=str(venv / "bin" / "swarm-inference-mcp"), env=env, cwd=outside)
    module = StdioServerParameters(  # what a user tries first, as with `python -m mcp_server_fetch`
        command=str(venv / "bin" / "python"), args=["-m", "swarm_inference_mcp"], env=env, cwd=outside
    )
    for params in (script, module):
        names, text = await first_answer(params)
        assert names == TOOLS
        assert text == "swarms says: installed"


async def test_uvx_from_the_wheel_serves_over_stdio(dist: Path, tmp_path: Path, fake: FakeUpstream) -> None:
    env = uv_env() | {"UV_TOOL_DIR": str(tmp_path / "tools")}
    uvx = ["tool", "run", "--from", str(wheel_of(dist)), "swarm-inference-mcp"]
    run([BIN / "uv", *uvx, "--version"], env=env, cwd=tmp_path)  # builds uv's environment once
    params = StdioServerParameters(
        command=str(BIN / "uv"),
        args=uvx,
        env=env | fake_env(fake, SWARM_MCP_STATE_DB=str(tmp_path / "state.db")),
        cwd=tmp_path,
    )
    names, text = await first_answer(params)
    assert names == TOOLS
    assert text == "swarms says: installed"


@pytest.fixture(scope="module")
def mcpb() -> Path:
    node()
    return npm_mcpb()


@pytest.fixture(scope="module")
def bundle(mcpb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle as `python bundle/build.py` builds it, `mcpb validate` and `mcpb pack` included."""
    out = tmp_path_factory.mktemp("bundle")
    run([sys.executable, ROOT / "bundle" / "build.py", "--out", out, "--mcpb", mcpb / "node_modules" / ".bin" / "mcpb"])
    (built,) = out.glob("*.mcpb")
    assert built.name == f"swarm-inference-mcp-{version()}.mcpb"
    return built


async def test_the_bundle_starts_as_a_host_starts_it_and_answers(
    bundle: Path, mcpb: Path, tmp_path: Path, fake: FakeUpstream
) -> None:
    """Unpacked and configured by the MCPB library (as Claude Desktop does) with one provider's key and
    the wait set; the other key and the budget are left empty, so their placeholders stay unfilled."""
    user_config = tmp_path / "user_config.json"
    user_config.write_text(json.dumps({"swarms_api_key": fake.keys["swarms"], "wait_s": 30}))
    host = run([node(), esm_driver(mcpb, "mcpb_host.mjs"), bundle, tmp_path / "unpacked", user_config])
    started = json.loads(host.stdout)
    config, manifest = started["config"], started["manifest"]
    assert manifest["server"]["type"] == "uv"
    assert manifest["manifest_version"] == "0.4"
    assert {tool["name"] for tool in manifest["tools"]} == TOOLS
    assert config["env"]["SWARMS_API_KEY"] == fake.keys["swarms"]
    assert config["env"]["SWARM_MCP_WAIT"] == "30"
    assert config["env"]["FORTYTWO_API_KEY"] == "${user_config.fortytwo_api_key}"

    upstream = {name: value for name, value in fake_env(fake).items() if name.endswith("_BASE_URL")}
    state = {"SWARM_MCP_STATE_DB": str(tmp_path / "state.db")}
    assert config["command"] == "uv"
    params = StdioServerParameters(
        command=str(BIN / "uv"), args=config["args"], env=uv_env() | config["env"] | upstream | state
    )
    with anyio.fail_after(SESSION_TIMEOUT_S):
        async with Client(params) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            answer = await client.call_tool("ask_swarm", {"prompt": "bundled"})
            unset = await client.call_tool("ask_fortytwo", {"prompt": "bundled"})
    assert names == TOOLS
    assert isinstance(answer.content[0], TextContent)
    assert answer.content[0].text == "swarms says: bundled"
    assert error_of(unset)["kind"] == "config"
    assert fake.seen("fortytwo") == []

    # The MCPB spec makes `mcp_config` optional for a uv bundle: a host may run `uv run <entry_point>`
    # from the unpacked folder, which puts `server/` first on sys.path (no module there may hide one
    # of the standard library's).
    entry = StdioServerParameters(
        command=str(BIN / "uv"),
        args=["run", "--no-dev", manifest["server"]["entry_point"]],
        env=uv_env() | config["env"] | upstream | state,
        cwd=tmp_path / "unpacked",
    )
    names, text = await first_answer(entry)
    assert names == TOOLS
    assert text == "swarms says: installed"


README = (ROOT / "README.md").read_text()
PLACEHOLDER_PATH = "/absolute/path/to/swarm-inference-mcp"


def host_snippets() -> dict[str, tuple[str, list[str], dict[str, str]]]:
    """Each host's snippet in the README, as the command, arguments and environment it starts (the
    line for a clone goes in any of them, with their keys)."""
    blocks = re.findall(r"```(json|sh)\n(.*?)\n```", README, re.DOTALL)
    found: dict[str, tuple[str, list[str], dict[str, str]]] = {}
    for kind, text in blocks:
        if kind == "sh" and text.startswith("claude mcp add "):
            words = shlex.split(text)
            split = words.index("--")
            options, (name,) = words[3 : split - 1], words[split - 1 : split]
            assert name == "swarm-inference"
            assert options[:2] == ["--transport", "stdio"]
            env = dict(value.split("=", 1) for flag, value in zip(options[2::2], options[3::2], strict=True))
            assert set(options[2::2]) == {"--env"}
            found["claude code"] = (words[split + 1], words[split + 2 :], env)
        elif kind == "sh" and text.startswith("uvx --from "):
            command, *args = shlex.split(text)
            found["a clone"] = (command, args, dict.fromkeys(("FORTYTWO_API_KEY", "SWARMS_API_KEY"), ""))
        elif kind == "json" and '"inputs"' in text:
            config = json.loads(text)
            inputs = {entry["id"]: entry for entry in config["inputs"]}
            (server,) = config["servers"].values()
            assert server["type"] == "stdio"
            for value in server["env"].values():
                (used,) = re.findall(r"^\$\{input:([^}]+)\}$", value)
                assert inputs[used]["type"] == "promptString"
                assert inputs[used]["password"] is True, "a key is typed in as a password"
            found["vs code"] = (server["command"], server["args"], server["env"])
        elif kind == "json" and '"mcpServers"' in text:
            (server,) = json.loads(text)["mcpServers"].values()
            host = "cursor" if server["command"] == "uvx" else "claude desktop"
            found[host] = (server["command"], server["args"], server["env"])
    return found


def test_the_readme_shows_each_host() -> None:
    assert set(host_snippets()) == {"claude desktop", "claude code", "vs code", "cursor", "a clone"}
    assert "python bundle/build.py" in README


@pytest.mark.parametrize("host", ["claude desktop", "claude code", "vs code", "cursor", "a clone"])
async def test_each_host_snippet_starts_a_server_that_answers(
    host: str, dist: Path, tmp_path: Path, fake: FakeUpstream
) -> None:
    """The snippet's command as written, but for where this machine keeps it: the package comes from the
    built wheel (it is on no index here), a clone is this repository, the venv is the test run's own."""
    command, args, env = host_snippets()[host]
    assert set(env) <= {"FORTYTWO_API_KEY", "SWARMS_API_KEY"}
    if command == "uvx":
        source = {
            ("swarm-inference-mcp",): str(wheel_of(dist)),
            ("--from", PLACEHOLDER_PATH, "swarm-inference-mcp"): str(clone(tmp_path / "clone")),
        }[tuple(args)]
        command, args = str(BIN / "uv"), ["tool", "run", "--from", source, "swarm-inference-mcp"]
    else:
        assert command == f"{PLACEHOLDER_PATH}/.venv/bin/swarm-inference-mcp"
        assert args == []
        command = str(BIN / "swarm-inference-mcp")
    keys = {name: value for name, value in fake_env(fake).items() if name in env or name.endswith("_BASE_URL")}
    state = {"SWARM_MCP_STATE_DB": str(tmp_path / "state.db"), "UV_TOOL_DIR": str(tmp_path / "tools")}
    params = StdioServerParameters(command=command, args=args, env=uv_env() | keys | state, cwd=tmp_path)
    names, text = await first_answer(params)
    assert names == TOOLS
    assert text == "swarms says: installed"


def clone(into: Path) -> Path:
    """The repository's files as a clone has them (uv builds in the folder it is given)."""
    tracked = run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for name in filter(None, tracked):
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            (into / name).write_bytes((ROOT / name).read_bytes())
    return into


def test_an_unfilled_bundle_placeholder_counts_as_unset() -> None:
    settings = load_settings(
        {"SWARMS_API_KEY": "sw-key", "FORTYTWO_API_KEY": "${user_config.fortytwo_api_key}", "SWARM_MCP_WAIT": "12"}
    )
    assert settings.provider("swarms").api_key is not None
    assert settings.provider("fortytwo").api_key is None
    assert settings.wait == 12
    assert load_settings({"FORTYTWO_API_KEY": "ft-${user_config.x}"}).provider("fortytwo").api_key is not None
