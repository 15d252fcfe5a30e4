"""A Redis URL of any shape works or is refused in one sentence, by the server, `check` and `usage` alike:
passwords with `/`, `#`, `?`, `@` or `%`, no port, a Unix socket; never a traceback, never the password."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import fake_env
from tests.fake_upstream import FakeUpstream
from tests.redis_server import RedisServer
from tests.servers import run_script

pytestmark = pytest.mark.slow

AWKWARD = "Pw/r#e?s@t%zz:x"
"""A password with every character that ends a URL's authority early (and a `%` that is no escape)."""
COMMANDS = [(), ("check",), ("usage",)]


@pytest.fixture(scope="module")
def awkward_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-awkward"), AWKWARD, unix_socket=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    "shape",
    ["as typed", "percent-encoded", "unix socket", "no port, password file"],
)
def test_every_shape_of_url_reaches_redis(
    fake: FakeUpstream, awkward_redis: RedisServer, tmp_path: Path, shape: str
) -> None:
    env = fake_env(fake)
    port = awkward_redis.port
    if shape == "as typed":
        env["SWARM_MCP_REDIS_URL"] = f"redis://:{AWKWARD}@127.0.0.1:{port}/0"
    elif shape == "percent-encoded":
        env["SWARM_MCP_REDIS_URL"] = f"redis://:{quote(AWKWARD, safe='')}@127.0.0.1:{port}/0"
    elif shape == "unix socket":
        env["SWARM_MCP_REDIS_URL"] = f"unix://:{AWKWARD}@{awkward_redis.socket}?db=1"
    else:  # the default port is 6379, which is not ours: a password file and an explicit host say the rest
        (tmp_path / "pw").write_text(AWKWARD)
        env["SWARM_MCP_REDIS_URL"] = f"redis://127.0.0.1:{port}"
        env["SWARM_MCP_REDIS_PASSWORD_FILE"] = str(tmp_path / "pw")
    checked = run_script("check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Redis: OK, reachable and authorised at" in checked.stdout
    usage = run_script("usage", "--json", env=env)
    assert usage.returncode == 0, usage.stderr
    assert json.loads(usage.stdout)["rows"] == []
    for done in (checked, usage):
        for piece in ("Pw/", "r#e", "s@t", "%zz"):
            assert piece not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (f"redis://:{AWKWARD}@127.0.0.1:notaport/0", "the port of host 127.0.0.1 is not a number"),
        (f"redis://:{AWKWARD}@/0", "names no host"),
        (f"redis://:{AWKWARD}@10.9.8.7:6379/zero", "the database of host 10.9.8.7 is not a number"),
        (f"http://:{AWKWARD}@127.0.0.1:6379/0", "must start with redis://, rediss:// (TLS) or unix://"),
        (f"unix://:{AWKWARD}@relative/sock", "names the socket's absolute path"),
    ],
)
@pytest.mark.parametrize("command", COMMANDS, ids=["serve", "check", "usage"])
def test_a_wrong_url_is_one_sentence_without_the_password(
    fake: FakeUpstream, url: str, said: str, command: tuple[str, ...]
) -> None:
    done = run_script(*command, env={**fake_env(fake), "SWARM_MCP_REDIS_URL": url})
    assert done.returncode == 2
    line = one_sentence(done.stderr)
    assert line.startswith("swarm-inference-mcp: invalid configuration: SWARM_MCP_REDIS_URL: ")
    assert said in line
    for piece in ("Pw/", "r#e", "s@t", "%zz"):
        assert piece not in line
    assert done.stdout == ""


@pytest.mark.parametrize("command", COMMANDS, ids=["serve", "check", "usage"])
def test_redis_without_its_extra_names_the_extra(fake: FakeUpstream, tmp_path: Path, command: tuple[str, ...]) -> None:
    """An interpreter that cannot import `redis`, as after `pip install swarm-inference-mcp` without `[redis]`."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoRedis:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'redis' or name.startswith('redis.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'redis'\", name=name)\n"
        "sys.meta_path.insert(0, NoRedis())\n"
    )
    env = {**fake_env(fake), "PYTHONPATH": str(tmp_path), "SWARM_MCP_REDIS_URL": "redis://127.0.0.1:6379/0"}
    done = run_script(*command, env=env)
    assert done.returncode == 2
    line = one_sentence(done.stderr)
    assert "pip install 'swarm-inference-mcp[redis]'" in line, line
