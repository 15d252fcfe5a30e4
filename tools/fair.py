"""`FairLimiter`: a provider's places (its concurrency cap), shared fairly between clients.

When a place frees, it goes to the client that has waited longest since it was last given one:
round robin over the clients waiting, first come, first served within one client. So one client's
long queue delays another client's first request by at most one place's turnover, however many
requests it queued. A free place is taken without yielding to the event loop, so a call under the
cap pays nothing for the fairness.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque


class FairLimiter:
    def __init__(self, places: int) -> None:
        self._free = places
        self._waiting: OrderedDict[str | None, deque[asyncio.Future[None]]] = OrderedDict()
        """Each waiting client's requests in order; the client first in line is the next one served."""

    @property
    def free(self) -> int:
        return self._free

    def waiting(self) -> dict[str | None, int]:
        """How many requests each client has waiting for a place."""
        return {client: len(queue) for client, queue in self._waiting.items()}

    async def acquire(self, client: str | None) -> None:
        """A place for one request of `client` (None: stdio, or no tokens); `release` it after."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, deque()).append(place)
        try:
            await place
        except asyncio.CancelledError:
            if place.done() and not place.cancelled():
                self.release()  # it was handed a place as it was cancelled: pass the place on
            else:
                self._forget(client, place)
            raise

    def release(self) -> None:
        while self._waiting:
            client, queue = next(iter(self._waiting.items()))
            place = queue.popleft()
            if queue:
                self._waiting.move_to_end(client)  # served: to the back of the line of clients
            else:
                del self._waiting[client]
            if not place.done():
                place.set_result(None)
                return
        self._free += 1

    def _forget(self, client: str | None, place: asyncio.Future[None]) -> None:
        queue = self._waiting.get(client)
        if queue is not None and place in queue:
            queue.remove(place)
            if not queue:
                del self._waiting[client]
