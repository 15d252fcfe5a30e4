"""stdin for the stdio transport, one bounded line at a time.

The SDK reads stdin a line at a time with no bound, so a peer that writes gigabytes without a newline
grows the server's memory with it. `BoundedLines` hands the SDK the same lines, except that a line
longer than `max_bytes` is dropped as it arrives (nothing of it is kept), said in one WARNING, and
the server goes on serving. (The SDK answers no line that is not JSON-RPC, so no parse error goes
back: the request had no id it could be sent to.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import BinaryIO

import anyio

log = logging.getLogger(__name__)

CHUNK = 1 << 16


class BoundedLines:
    def __init__(self, source: BinaryIO, max_bytes: int) -> None:
        self._source = anyio.wrap_file(source)
        self._max = max_bytes

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        line = bytearray()
        dropping = False
        while chunk := await self._source.read1(CHUNK):
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if dropping or len(line) + end - start > self._max:
                    log.warning("dropped a line of stdin longer than %d bytes (SWARM_MCP_MAX_LINE_BYTES)", self._max)
                else:
                    line += chunk[start:end]
                    yield line.decode("utf-8", errors="replace")
                line, dropping, start = bytearray(), False, end + 1
            if dropping:
                continue
            if len(line) + len(chunk) - start > self._max:
                line, dropping = bytearray(), True  # drop it as it comes; the newline ends it
            else:
                line += chunk[start:]
        if line and not dropping:
            yield line.decode("utf-8", errors="replace")
