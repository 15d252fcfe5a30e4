"""One contract, every store of the built-in authorization server's grants: SQLite in memory, the state
file, and Redis (two links: two instances). A code or refresh token is marked used once, by one caller,
however many race; a family is revoked whole; an expired grant is gone."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from swarm_inference_mcp.server.gateway.grants import Grant, Grants, SqliteGrants, digest

pytestmark = pytest.mark.anyio

STORES = ["memory", "state file", pytest.param("redis", marks=pytest.mark.slow)]


@pytest.fixture(params=STORES)
async def two(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Grants, Grants]]:
    """Two views of one store, as two instances (or two threads of one) see it."""
    if request.param == "memory":
        one = SqliteGrants(None)
        yield one, one
        await one.aclose()
    elif request.param == "state file":
        first, second = SqliteGrants(tmp_path / "state.sqlite3"), SqliteGrants(tmp_path / "state.sqlite3")
        yield first, second
        await first.aclose()
        await second.aclose()
    else:
        from swarm_inference_mcp.server.scaleout.grants import RedisGrants  # noqa: PLC0415

        server: Any = request.getfixturevalue("redis_server")
        first_link, second_link = RedisGrants(server.url, None), RedisGrants(server.url, None)
        yield first_link, second_link
        await first_link.aclose()
        await second_link.aclose()


def grant(family: str, lasts_s: float = 60.0, kind: str = "code") -> Grant:
    return Grant(kind=kind, family=family, expires_at=time.time() + lasts_s, data={"client_id": "c", "n": 1})


async def test_a_grant_is_found_by_its_secret_only(two: tuple[Grants, Grants]) -> None:
    a, b = two
    code, family = secrets.token_urlsafe(16), secrets.token_hex(8)
    await a.put(digest("code", code), grant(family))
    found = await b.get(digest("code", code))
    assert found is not None
    assert found.data == {"client_id": "c", "n": 1}
    assert not found.used
    assert await b.get(digest("code", code + "x")) is None
    assert await b.get(digest("access", code)) is None  # another kind, the same string


async def test_only_one_of_many_racing_callers_uses_a_grant(two: tuple[Grants, Grants]) -> None:
    a, b = two
    key = digest("refresh", secrets.token_urlsafe(16))
    await a.put(key, grant(secrets.token_hex(8)))
    firsts: list[bool] = []

    async def use(store: Grants) -> None:
        firsts.append((await store.use(key))[1])

    async with anyio.create_task_group() as group:
        for n in range(20):
            group.start_soon(use, a if n % 2 else b)
    assert firsts.count(True) == 1
    used = await a.get(key)
    assert used is not None
    assert used.used
    assert await a.use(digest("refresh", "never issued")) == (None, False)


async def test_a_family_is_revoked_whole_and_alone(two: tuple[Grants, Grants]) -> None:
    a, b = two
    family, other = secrets.token_hex(8), secrets.token_hex(8)
    keys = [digest(kind, secrets.token_urlsafe(16)) for kind in ("code", "access", "refresh")]
    for key in keys:
        await a.put(key, grant(family))
    kept = digest("access", secrets.token_urlsafe(16))
    await a.put(kept, grant(other))
    await b.revoke(family)
    assert [await a.get(key) for key in keys] == [None, None, None]
    assert await a.get(kept) is not None


async def test_an_expired_grant_is_gone(two: tuple[Grants, Grants]) -> None:
    a, b = two
    key = digest("code", secrets.token_urlsafe(16))
    await a.put(key, grant(secrets.token_hex(8), lasts_s=-1))
    assert await b.get(key) is None
    assert (await b.use(key))[1] is False
