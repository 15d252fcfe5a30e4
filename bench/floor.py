"""The floor: the thinnest MCP server that does our job, kept to measure ourselves against.

One tool that forwards a prompt to the same upstream with the same HTTP client (one shared
`httpx2.AsyncClient` with its default pool), and nothing else: no validation beyond the SDK's, no
retries, no deadline, no streaming. Configured by FLOOR_BASE_URL and FLOOR_API_KEY.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from mcp.server.mcpserver import Context, MCPServer


@asynccontextmanager
async def lifespan(_: MCPServer[httpx2.AsyncClient]) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=None) as client:
        yield client


server: MCPServer[httpx2.AsyncClient] = MCPServer("floor", lifespan=lifespan, log_level="WARNING")


@server.tool()
async def ask(prompt: str, ctx: Context[httpx2.AsyncClient]) -> str:
    """Ask the upstream."""
    client = ctx.request_context.lifespan_context
    response = await client.post(
        os.environ["FLOOR_BASE_URL"] + "/chat/completions",
        json={"model": "fortytwo-prime", "messages": [{"role": "user", "content": prompt}]},
        headers={"Authorization": f"Bearer {os.environ['FLOOR_API_KEY']}"},
    )
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


if __name__ == "__main__":
    server.run("stdio")
