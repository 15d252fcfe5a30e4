"""`SWARM_MCP_REDIS_URL`, read by us before any Redis client sees it.

A password is whatever stands between the first `:` of the credentials and the last `@` before the
host, so it may hold `/`, `#`, `?`, `@` or `%` as typed (percent escapes such as `%2F` are decoded,
as RFC 3986 and the Redis client do). The client is then given the URL without credentials and the
username and password apart, so nothing it prints can show them. Every refusal is one sentence that
names at most the host.

No import of `redis` here: settings are checked with this module whether or not the extra is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

SCHEMES = ("redis", "rediss", "unix")
DEFAULT_PORT = 6379
_AUTHORITY = re.compile(
    r"^(?P<host>\[[^\]/?#@]*\]|[^:/?#@\[\]]*)(?::(?P<port>[^/?#@]*))?(?P<path>/[^?#]*)?(?P<query>\?[^#]*)?$"
)
_SOCKET = re.compile(r"^(?P<path>/[^?#]*)(?P<query>\?[^#]*)?$")


class RedisUrlError(ValueError):
    """A Redis URL that cannot be used; the message (what is wrong with SWARM_MCP_REDIS_URL) names at most
    the host, never a credential."""


@dataclass(frozen=True)
class RedisTarget:
    """Where a Redis URL points, and with which credentials."""

    scheme: str
    host: str
    """The host name or address (without brackets), or the socket's path for `unix://`."""
    port: int | None
    """None for a Unix socket."""
    database: int
    query: str
    """The URL's query without the `db` parameter (options for the client), `?`-prefixed or empty."""
    username: str | None
    password: str | None

    @property
    def where(self) -> str:
        """The URL as a sentence may name it: scheme, host, port and database, never a credential."""
        if self.port is None:
            return f"unix://{self.host}?db={self.database}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.database}"

    @property
    def bare_url(self) -> str:
        """The URL without credentials, with its client options, for the Redis client."""
        if self.port is None:
            extra = "&" + self.query[1:] if self.query else ""
            return f"unix://{self.host}?db={self.database}{extra}"
        return self.where + self.query


def parse_redis_url(url: str) -> RedisTarget:
    """Read a Redis URL; raises `RedisUrlError` for one that cannot work."""
    scheme, found, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not found or scheme not in SCHEMES:
        raise RedisUrlError("must start with redis://, rediss:// (TLS) or unix:// (a socket)")
    credentials, tail = _split_credentials(rest, _SOCKET if scheme == "unix" else _AUTHORITY)
    username, password = _credentials(credentials)
    if scheme == "unix":
        match = _SOCKET.match(tail)
        if match is None:
            raise RedisUrlError("a unix:// URL names the socket's absolute path (unix:///path)")
        host, port, path = match["path"], None, ""
    else:
        match = _AUTHORITY.match(tail)
        if match is None or not match["host"]:
            raise RedisUrlError(f"names no host ({scheme}://HOST:PORT/DB)")
        host, path = match["host"].strip("[]"), match["path"] or ""
        port = _port(match["port"], host)
    query, database = _database(match["query"] or "", path, host)
    return RedisTarget(scheme, host, port, database, query, username, password)


def describe_url(url: str) -> str:
    """What may be shown of a Redis URL (`RedisTarget.where`); an unreadable one is shown as nothing of it."""
    try:
        return parse_redis_url(url).where
    except RedisUrlError:
        return "(an unreadable SWARM_MCP_REDIS_URL)"


def _split_credentials(rest: str, shape: re.Pattern[str]) -> tuple[str | None, str]:
    """(credentials, the rest) at the last `@` after which a host (or socket path) follows."""
    at = len(rest)
    while (at := rest.rfind("@", 0, at)) >= 0:
        if shape.match(rest[at + 1 :]):
            return rest[:at], rest[at + 1 :]
    return None, rest


def _credentials(credentials: str | None) -> tuple[str | None, str | None]:
    if credentials is None:
        return None, None
    user, has_password, password = credentials.partition(":")
    if not has_password:
        return unquote(user) or None, None
    return unquote(user) or None, unquote(password) or None


def _port(text: str | None, host: str) -> int:
    if not text:
        return DEFAULT_PORT
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise RedisUrlError(f"the port of host {host} is not a number from 1 to 65535")
    return int(text)


def _database(query: str, path: str, host: str) -> tuple[str, int]:
    """The client options without `db`, and the database number (from the path, or `?db=`)."""
    options = [part for part in query.lstrip("?").split("&") if part]
    named = [part.partition("=")[2] for part in options if part.startswith("db=")]
    text = path.strip("/") or (named[-1] if named else "0")
    if not text.isdigit():
        raise RedisUrlError(f"the database of host {host} is not a number (/0, /1, ...)")
    rest = [part for part in options if not part.startswith("db=")]
    return ("?" + "&".join(rest) if rest else ""), int(text)
