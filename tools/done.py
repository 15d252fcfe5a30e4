"""`Done`: a one-shot event whose waiters can give up after a while.

Every tool call waits on one of these (its job's; a call whose identical upstream request is
already in flight also waits on that request's), so they are plain asyncio futures and a timer
rather than `anyio.Event` with `anyio.move_on_after` (see `docs/performance.md`). The server runs
on asyncio (its jobs are asyncio tasks); a waiter is cancelled like any other await, including by
an anyio cancel scope around it.
"""

from __future__ import annotations

import asyncio
import math


class Done:
    """Set once, by whoever finishes the work; awaited by any number of waiters."""

    __slots__ = ("_waiters", "is_set")

    def __init__(self) -> None:
        self.is_set = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        self.is_set = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, timeout_s: float = math.inf) -> bool:
        """Until set (True), or until `timeout_s` has passed (False)."""
        if self.is_set:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = None if math.isinf(timeout_s) else loop.call_later(timeout_s, _give_up, waiter)
        try:
            await waiter
        finally:
            self._waiters.remove(waiter)
            if timer is not None:
                timer.cancel()
        return self.is_set


def _give_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
