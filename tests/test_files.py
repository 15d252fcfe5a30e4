"""Files that belong to the user: the state folder and file are the user's alone, a state path that is a
symbolic link or another program's database is never written, and secrets others can read are named."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fake_env
from tests.fake_upstream import FakeUpstream
from tests.servers import run_script

pytestmark = pytest.mark.anyio


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_state_folder_and_file_are_the_users_alone(
    connect: Callable[..., Any], fake: FakeUpstream, tmp_path: Path
) -> None:
    async with connect() as client:
        assert not (await client.call_tool("ask_swarm", {"prompt": "hello"})).is_error
    folder = tmp_path / "state" / "swarm-inference-mcp"
    assert mode_of(folder) == 0o700
    assert mode_of(folder / "usage.sqlite3") == 0o600


def other_programs_database(path: Path) -> bytes:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE contacts (name TEXT)")
        db.execute("INSERT INTO contacts VALUES ('someone')")
    return path.read_bytes()


@pytest.mark.parametrize("how", ["a symbolic link to it", "the file itself"])
async def test_another_programs_database_is_refused_and_never_written(
    connect: Callable[..., Any], fake: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    theirs = tmp_path / "other-app.db"
    before = other_programs_database(theirs)
    state = theirs
    if how == "a symbolic link to it":
        state = tmp_path / "usage.sqlite3"
        state.symlink_to(theirs)
    with caplog.at_level(logging.ERROR):
        async with connect(SWARM_MCP_STATE_DB=str(state)) as client:
            assert not (await client.call_tool("ask_swarm", {"prompt": "hello"})).is_error
    assert theirs.read_bytes() == before
    assert sorted(entry.name for entry in os.scandir(tmp_path) if entry.name.startswith("other-app")) == [
        "other-app.db"
    ]
    logged = " ".join(record.getMessage() for record in caplog.records)
    said = "is a symbolic link" if how == "a symbolic link to it" else "is another program's SQLite database"
    assert said in logged
    assert "point SWARM_MCP_STATE_DB at a file of its own" in logged


def test_secret_files_others_can_read_get_one_warning(fake: FakeUpstream, tmp_path: Path) -> None:
    plain = tmp_path / "clients.txt"
    plain.write_text("alice alice-token-0123456789abcdef\n")
    plain.chmod(0o644)
    password = tmp_path / "redis-password"
    password.write_text("secret\n")
    password.chmod(0o640)
    env = {**fake_env(fake), "SWARM_MCP_TOKENS_FILE": str(plain), "SWARM_MCP_REDIS_PASSWORD_FILE": str(password)}
    done = run_script("check", env=env)
    warnings = [line for line in done.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 2, done.stderr
    assert any(f"chmod 600 {plain}" in line for line in warnings)
    assert any(f"chmod 600 {password}" in line for line in warnings)

    hashed = tmp_path / "hashed.txt"
    hashed.write_text(f"alice sha256:{hashlib.sha256(b'alice-token-0123456789abcdef').hexdigest()}\n")
    hashed.chmod(0o644)  # digests only: no secret in it
    plain.chmod(0o600)
    quiet = run_script("check", env={**fake_env(fake), "SWARM_MCP_TOKENS_FILE": str(hashed)})
    assert " WARNING " not in quiet.stderr.replace("has no API key", "")
