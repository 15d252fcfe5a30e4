"""Who may call over HTTP: a token per client from `SWARM_MCP_TOKENS_FILE`, and/or the single
`SWARM_MCP_TOKEN` as one anonymous client.

The tokens file has one client a line, `NAME TOKEN [daily_tokens=N] [max_sessions=N] [max_jobs=N]`, and `#`
starts a comment. TOKEN is the token itself or, better, `sha256:HEX` of it, so the file is no
secret. Only digests are kept in memory, and a presented token is compared with every client's
digest in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Client:
    """Who asks, and the limits the tokens file gives it (None: the server's own). Over stdio there is none."""

    name: str
    daily_tokens: int | None = None
    max_sessions: int | None = None
    max_jobs: int | None = None


def client_name(client: Client | None) -> str | None:
    """The client's name, or None over stdio (and with no tokens at all)."""
    return client.name if client is not None else None


ANONYMOUS = "anonymous"
"""The name of the one client `SWARM_MCP_TOKEN` stands for."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HASHED = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
_OPTIONS = ("daily_tokens", "max_sessions", "max_jobs")
_NUMBER = re.compile(r"^[0-9]{1,15}$")
"""An option's value: ASCII digits (`str.isdigit` takes "²" too), at most 15 of them."""
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Admitted:
    """A client of the tokens file: the sha256 of its token, and the identities (OAuth) it admits."""

    client: Client
    digest: bytes
    """Its token's; for a line with identities only, a digest no token has (see `parse_tokens`)."""
    plain: bool = False
    """The tokens file holds the token itself, not its digest."""
    identities: tuple[str, ...] = ()
    """Values of `SWARM_MCP_OAUTH_CLAIM` whose access tokens stand for this client."""
    bearer: bool = True
    """A bearer token stands for this client (False: identities only)."""


class TokensFileError(Exception):
    """The tokens file cannot be used; the message names the file and the line."""


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str, origin: str) -> list[Admitted]:
    """Every client of a tokens file; raises `TokensFileError` naming `origin` and the line."""
    clients: list[Admitted] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue

        def problem(what: str, number: int = number) -> TokensFileError:
            return TokensFileError(f"{origin}, line {number}: {what}")

        client = _line(line, problem)
        name = client.client.name
        for identity in client.identities:
            if any(identity in other.identities for other in clients):
                raise problem(f"identity:{identity[:64]} is given to another client too")
        if any(other.client.name == name for other in clients):
            raise problem(f"client {name!r} is listed twice")
        if client.bearer and any(hmac.compare_digest(other.digest, client.digest) for other in clients):
            raise problem(f"client {name!r} has the same token as another client")
        clients.append(client)
    return clients


def _line(line: str, problem: Callable[[str], TokensFileError]) -> Admitted:
    """One line: `NAME [TOKEN] [identity:ID ...] [key=N ...]`, with a token, an identity, or both."""
    name, *rest = line.split()
    if not rest:
        raise problem("expected NAME TOKEN [identity:ID] [daily_tokens=N] [max_sessions=N] [max_jobs=N]")
    if not _NAME.match(name):
        raise problem(f"{name[:64]!r} is not a client name (letters, digits, '.', '_', '-'; at most 64)")
    identities = tuple(item.removeprefix("identity:") for item in rest if item.startswith("identity:"))
    options = [item for item in rest if "=" in item and not item.startswith("identity:")]
    tokens = [item for item in rest if not item.startswith("identity:") and "=" not in item]
    if len(tokens) > 1:
        raise problem("a line holds at most one token")
    if any(not identity for identity in identities):
        raise problem("identity: needs the claim's value (identity:alice@example.com)")
    if not tokens and not identities:
        raise problem("expected a token, an identity:ID, or both")
    token = tokens[0] if tokens else None
    hashed = _HASHED.match(token) if token is not None else None
    if token is not None and hashed is None and (token.startswith("sha256:") or len(token) < MIN_TOKEN_LENGTH):
        raise problem(f"the token must be sha256:<64 hex digits> or at least {MIN_TOKEN_LENGTH} characters")
    settings = _options(options, problem)
    if token is None:  # no token: a digest no token has, for the names the instances agree on
        token_digest = digest("identity\n" + "\n".join(identities))
    else:
        token_digest = bytes.fromhex(hashed.group(1)) if hashed else digest(token)
    plain = token is not None and not hashed
    return Admitted(Client(name, **settings), token_digest, plain, identities, bearer=token is not None)


def _options(options: list[str], problem: Callable[[str], TokensFileError]) -> dict[str, int]:
    """A line's `key=N` options, each a known one, given once, N a whole number from 1."""
    settings: dict[str, int] = {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in _OPTIONS or not _NUMBER.match(value) or int(value) < 1:
            raise problem(
                f"{option[:64]!r} is not daily_tokens=N or max_sessions=N (or max_jobs=N) with N a whole "
                "number from 1 to 15 digits"
            )
        if key in settings:
            raise problem(f"{key} is given twice")
        settings[key] = int(value)
    return settings


def load_clients(tokens_file: str | None, token: str | None) -> list[Admitted]:
    """Every client: the tokens file's, and the anonymous one of `SWARM_MCP_TOKEN`. Raises `TokensFileError`."""
    clients: list[Admitted] = []
    if tokens_file is not None:
        try:
            text = Path(tokens_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise TokensFileError(f"{tokens_file}: cannot be read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise TokensFileError(f"{tokens_file}: is not UTF-8 text") from None
        clients = parse_tokens(text, tokens_file)
    if token is not None:
        clients.append(Admitted(Client(ANONYMOUS), digest(token)))
    return clients


def authenticate(clients: list[Admitted], presented: str) -> Client | None:
    """The client whose token this is, compared with every digest so the time says nothing."""
    wanted = digest(presented)
    found = None
    for admitted in clients:
        if hmac.compare_digest(admitted.digest, wanted) and admitted.bearer:
            found = admitted.client
    return found


def new_token(name: str) -> tuple[str, str]:
    """A fresh random token, and the tokens-file line that admits it (holding only its digest)."""
    if not _NAME.match(name):
        raise TokensFileError(f"{name[:64]!r} is not a client name (letters, digits, '.', '_', '-'; at most 64)")
    token = secrets.token_urlsafe(32)
    return token, f"{name} sha256:{hashlib.sha256(token.encode()).hexdigest()}"


def warn_if_readable(path: Path, what: str) -> None:
    """One WARNING when a file of secrets can be read by other users than its owner."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s %s and can be read by other users (mode %o); chmod 600 %s", path, what, mode & 0o777, path)
