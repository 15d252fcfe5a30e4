"""What is running now, so that a shutdown can let it finish, then cancel what is left.

One `InFlight` tracks the server's tool calls (each in a cancel scope of its own); the HTTP gate
keeps another for the HTTP requests it is answering. Used only from the event loop's thread. Over
stdio nothing drains the calls (the server stops when its client goes, and the lifespan cancels
the jobs), so there is none and a call pays for no scope.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio


class InFlight:
    def __init__(self) -> None:
        self.draining = False
        """Set when the server has begun to shut down: take nothing new."""
        self._scopes: set[anyio.CancelScope] = set()
        self._changed: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._scopes)

    @contextmanager
    def track(self) -> Iterator[anyio.CancelScope]:
        """Run the block as one tracked item; `cancel_all` cancels it (check `cancelled_caught` after)."""
        scope = anyio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)
            if self._changed is not None:
                self._changed.set()

    async def wait_idle(self) -> None:
        """Return once nothing is tracked."""
        while self._scopes:
            self._changed = anyio.Event()
            await self._changed.wait()

    def cancel_all(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()
