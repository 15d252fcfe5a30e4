"""The built-in authorization server's grants in Redis, so that every instance honours what another
issued (`server.gateway.grants` says what a grant is). Keys under `swarm-mcp:oauth:`:

- `swarm-mcp:oauth:<kind>:<sha256>`: a hash `grant` (its JSON) and `used` (how often it was marked
  used), expiring with the grant;
- `swarm-mcp:oauth-family:<family>`: the set of a family's keys, expiring with its last grant.

Each operation is one script, atomic like every Redis script: two instances marking one code used
cannot both be first. The link is opened on first use (the routes are built before the event loop).
"""

from __future__ import annotations

import time

import anyio

from swarm_inference_mcp.server.gateway.grants import Grant
from swarm_inference_mcp.server.scaleout.link import RedisLink

PREFIX = "swarm-mcp:oauth:"
FAMILY = "swarm-mcp:oauth-family:"

_PUT = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'grant', ARGV[1], 'used', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], KEYS[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
"""
_USE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HINCRBY', KEYS[1], 'used', 1)
"""
_REVOKE = """
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', key) end
redis.call('DEL', KEYS[1])
"""


class RedisGrants:
    def __init__(self, url: str, password_file: str | None) -> None:
        self._url = url
        self._password_file = password_file
        self._link: RedisLink | None = None
        self._opening = anyio.Lock()

    async def put(self, key: str, grant: Grant) -> None:
        link = await self._linked()
        expires_ms = int(grant.expires_at * 1000)
        args = [grant.model_dump_json(), int(grant.used), expires_ms, max(1, expires_ms - int(time.time() * 1000))]
        await link.run(lambda client: client.eval(_PUT, 2, PREFIX + key, FAMILY + grant.family, *args))

    async def get(self, key: str) -> Grant | None:
        link = await self._linked()
        found, used = await link.run(lambda client: client.hmget(PREFIX + key, "grant", "used"))
        if found is None:
            return None
        grant = Grant.model_validate_json(found)
        return grant.model_copy(update={"used": int(used or 0) > 0})

    async def use(self, key: str) -> tuple[Grant | None, bool]:
        link = await self._linked()
        marks = await link.run(lambda client: client.eval(_USE, 1, PREFIX + key))
        return await self.get(key), int(marks) == 1

    async def revoke(self, family: str) -> None:
        link = await self._linked()
        await link.run(lambda client: client.eval(_REVOKE, 1, FAMILY + family))

    async def aclose(self) -> None:
        if self._link is not None:
            await self._link.aclose()

    async def _linked(self) -> RedisLink:
        async with self._opening:
            if self._link is None:
                self._link = await RedisLink.open(self._url, self._password_file)
            return self._link
