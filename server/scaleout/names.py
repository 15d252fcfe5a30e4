"""One name, one client, across the instances sharing a Redis, for as long as they serve it.

A client name of the tokens file is registered in Redis (`client:<name>`) with its token's digest,
for one lease (`SWARM_MCP_REDIS_LEASE`), and every instance that admits the name with that digest
renews it every third of the lease. An instance whose file gives the name another digest refuses
the name while a live registration says otherwise, and asks again each third of a lease:

- **A rotated token** (the tokens file changed, then a restart or SIGHUP on every instance) takes
  over once no instance serves the old one: its registration lapses within a lease of the last
  instance letting go, and nobody touches Redis. Meanwhile instances on the new token refuse the
  name (one line in the log) and those on the old one serve it.
- **Another deployment** sharing the Redis by mistake, with a client of the same name, cannot take
  that name while this one runs: its instances refuse it and say so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import anyio

from swarm_inference_mcp.server.clients import Admitted
from swarm_inference_mcp.server.scaleout.link import PREFIX, RedisDown, RedisLink

log = logging.getLogger(__name__)

_ADMIT = """
local admitted = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if current and current ~= ARGV[i] then
    admitted[i] = 0
  else
    redis.call('SET', key, ARGV[i], 'PX', ARGV[#ARGV])
    admitted[i] = 1
  end
end
return admitted
"""
"""For each name: renew (or take) its registration if it is free or ours, else refuse it. One round trip."""


async def open_names(url: str, password_file: str | None, lease_s: float, tokens_file: str) -> Names | None:
    """The names of `tokens_file` as the instances sharing the Redis at `url` agree on them; None (and one
    line in the log) when Redis cannot be reached at start: then the file's clients are served as they are."""
    try:
        link = await RedisLink.open(url, password_file)
    except RedisDown as err:
        log.error("%s; the tokens file's names could not be checked against the other instances'", err)
        return None
    return Names(link, lease_s, tokens_file)


class Names:
    """The tokens file's names as the instances sharing `link` agree on them (see the module docstring)."""

    def __init__(self, link: RedisLink, lease_s: float, tokens_file: str | None) -> None:
        self._link = link
        self._lease_s = lease_s
        self._file = tokens_file
        self._admit = link.client.register_script(_ADMIT)
        self._refused: set[str] = set()

    async def admit(self, clients: list[Admitted]) -> list[Admitted]:
        """The clients this instance may serve now, their registrations renewed. Raises `RedisDown`."""
        if not clients:
            return []
        keys = [f"{PREFIX}client:{admitted.client.name}" for admitted in clients]
        digests = [admitted.digest.hex() for admitted in clients]

        async def run(_: Any) -> Any:
            return await self._admit(keys=keys, args=[*digests, round(self._lease_s * 1000)])

        answers = await self._link.run(run)
        kept = [admitted for admitted, answer in zip(clients, answers, strict=True) if int(answer) == 1]
        self._say(clients, {admitted.client.name for admitted in kept})
        return kept

    async def admit_or_keep(self, clients: list[Admitted], current: list[Admitted]) -> list[Admitted]:
        """`admit`; while Redis is down, `current` as it is."""
        try:
            return await self.admit(clients)
        except RedisDown:
            return current

    async def keep(self, clients: Callable[[], list[Admitted]], admitted: Callable[[list[Admitted]], None]) -> None:
        """Until cancelled: every third of a lease, admit the file's `clients()` again and hand the result
        to `admitted` (while Redis is down, the clients stay as they are)."""
        while True:
            await anyio.sleep(self._lease_s / 3)
            with suppress(RedisDown):
                admitted(await self.admit(clients()))

    async def aclose(self) -> None:
        await self._link.aclose()

    def _say(self, clients: list[Admitted], kept: set[str]) -> None:
        """One line when a name starts or stops being refused here, never one a renewal."""
        for admitted in clients:
            name = admitted.client.name
            if name not in kept and name not in self._refused:
                self._refused.add(name)
                log.error(
                    "client %s of %s has another token than the client of that name the instances sharing %s "
                    "serve; it is refused here until none of them does (names are one client across a Redis)",
                    name,
                    self._file,
                    self._link.where,
                )
            elif name in kept and name in self._refused:
                self._refused.discard(name)
                log.info("client %s is served here again: its token is the one the instances sharing Redis use", name)
