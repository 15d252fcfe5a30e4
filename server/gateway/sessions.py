"""How many MCP sessions each client of the gateway holds, as the gate saw them open and end: what the
per-client session limit counts and the metrics show. No I/O."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass
class _Session:
    client: str
    in_flight: int = 0
    idle_since: float = 0.0


class Sessions:
    """The MCP sessions each client holds, as the gate saw them open and end, by the SDK's rule: a
    session ends when its client deletes it, when a request of its client for it is answered 404 (the
    SDK forgot it), or once no request of it (a POST being answered, an open GET stream) has been in
    flight for `idle_s`. A request that may open one (a POST to the MCP path without a session id)
    counts as one from the moment it is let in until it opened one or was answered, so that
    simultaneous opens cannot pass the limit together. Another client's requests naming a session
    change nothing: the SDK answers them 404 as if it did not exist, and so it stays counted."""

    def __init__(self, idle_s: float) -> None:
        self._idle_s = idle_s
        self._open: dict[str, _Session] = {}
        self._opening: Counter[str] = Counter()
        """Requests per client let in that may open a session and have not yet."""

    def held(self, client: str, now: float) -> int:
        return self.by_client(now).get(client, 0)

    def by_client(self, now: float) -> dict[str, int]:
        """How many open sessions each client holds (those being opened included)."""
        for session_id, session in list(self._open.items()):
            if session.in_flight == 0 and now - session.idle_since >= self._idle_s:
                del self._open[session_id]
        held = Counter(session.client for session in self._open.values()) + self._opening
        return dict(held)

    def opening(self, client: str) -> None:
        self._opening[client] += 1

    def opening_done(self, client: str) -> None:
        self._opening[client] -= 1
        if self._opening[client] <= 0:
            del self._opening[client]

    def begin(self, session_id: str, client: str) -> None:
        session = self._open.get(session_id)
        if session is not None and session.client == client:
            session.in_flight += 1

    def end(self, session_id: str, client: str, method: str, status: int | None, now: float) -> None:
        session = self._open.get(session_id)
        if session is None or session.client != client:
            return
        session.in_flight -= 1
        session.idle_since = now
        if status == 404 or (method == "DELETE" and status is not None and status < 300):
            del self._open[session_id]

    def opened(self, session_id: str, client: str, now: float) -> None:
        self._open[session_id] = _Session(client, in_flight=1, idle_since=now)
