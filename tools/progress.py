"""Progress for a streamed call: a few readable notifications a second, and heartbeats in silence.

MCP clients reset their tool-call timeout when progress arrives, so a swarm that deliberates for
minutes stays alive as long as something is sent every `heartbeat_s`. The progress value is
chunks received plus heartbeats sent, so it rises with every notification.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import anyio

ProgressFn = Callable[[float, str], Awaitable[None]]
"""Sends one progress notification: (progress, message). The only thing below the tool
functions that reaches back to the MCP client."""

MIN_INTERVAL_S = 0.25
"""At most four text updates a second: enough to watch an answer grow, far from one per token."""
_TAIL_CHARS = 60

log = logging.getLogger(__name__)


class Listeners(list[ProgressFn]):
    """The callers following one streamed job; calling it sends each of them the notification."""

    async def __call__(self, progress: float, message: str) -> None:
        for listener in list(self):
            await listener(progress, message)


async def wait_with_progress(
    done: anyio.Event,
    on_progress: ProgressFn | None,
    listeners: Listeners | None,
    label: str,
    heartbeat_s: float,
    *,
    timeout_s: float = math.inf,
) -> bool:
    """Wait for `done` (True) or at most `timeout_s` (False), keeping a caller that asked for progress
    informed: through `listeners` (the list a streamed job broadcasts to), or, when the job is not
    streamed (None), with heartbeats, so that its client does not give up while the swarm works."""
    if on_progress is None:
        return await _waited(done, timeout_s)
    if listeners is not None:
        listeners.append(on_progress)
        try:
            return await _waited(done, timeout_s)
        finally:
            listeners.remove(on_progress)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ProgressReporter(on_progress, label, heartbeat_s).run_heartbeats)
        finished = await _waited(done, timeout_s)
        tg.cancel_scope.cancel()
    return finished


async def _waited(done: anyio.Event, timeout_s: float) -> bool:
    """Until `done` is set (True), or until `timeout_s` has passed (False)."""
    with anyio.move_on_after(timeout_s):
        await done.wait()
    return done.is_set()


class ProgressReporter:
    def __init__(self, send: ProgressFn, label: str, heartbeat_s: float) -> None:
        self._send = send
        self._label = label
        self._heartbeat_s = heartbeat_s
        self._started = anyio.current_time()
        self._last_sent = -math.inf
        self._chunks = 0
        self._beats = 0
        self._tail = ""
        self._pending = False

    async def text(self, added: str) -> None:
        """Note one received chunk; notify now unless the last notification was moments ago."""
        self._chunks += 1
        if added:
            self._tail = (self._tail + added)[-4 * _TAIL_CHARS :]
        if anyio.current_time() - self._last_sent >= MIN_INTERVAL_S:
            await self._emit_text()
        else:
            self._pending = True

    async def flush(self) -> None:
        """Send the update held back by coalescing, if any."""
        if self._pending:
            await self._emit_text()

    async def run_heartbeats(self) -> None:
        """Run until cancelled: whenever `heartbeat_s` passes without a notification, send one."""
        while True:
            quiet_since = max(self._last_sent, self._started)
            await anyio.sleep_until(quiet_since + self._heartbeat_s)
            if anyio.current_time() - max(self._last_sent, self._started) < self._heartbeat_s:
                continue
            if self._pending:
                await self._emit_text()
            else:
                self._beats += 1
                elapsed = anyio.current_time() - self._started
                await self._emit(f"{self._label} is working; no answer text yet after {elapsed:.0f} s")

    async def _emit_text(self) -> None:
        self._pending = False
        tail = " ".join(self._tail.split())[-_TAIL_CHARS:]
        await self._emit(f"{self._label}: {self._chunks} chunks received … {tail}")

    async def _emit(self, message: str) -> None:
        self._last_sent = anyio.current_time()
        try:
            await self._send(float(self._chunks + self._beats), message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            log.debug("progress notification dropped: the client's channel is closed")
