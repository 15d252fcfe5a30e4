"""`Client`: one HTTP client of a shared gateway, as the tokens file names it (over stdio there is none)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Client:
    """Who asks, and the limits the tokens file gives it (None: the server's own)."""

    name: str
    daily_tokens: int | None = None
    max_sessions: int | None = None
    max_jobs: int | None = None


def client_name(client: Client | None) -> str | None:
    """The client's name, or None over stdio (and with no tokens at all)."""
    return client.name if client is not None else None
