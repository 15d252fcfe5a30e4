"""Drives the server with pydantic-ai's `MCPToolset` (on FastMCP's client), which shows the model
structured content in place of the text whenever a result carries any.

    VENV/bin/python pydantic_ai_client.py PLAN.json

Runs in a virtual environment of its own, so it is left out of our type check. Plan as for
`ts_client.cjs` (calls only); prints one JSON array, per call {"ok": true, "result"} or
{"ok": false, "error": {"name", "message"}}, where the message is what the model would read.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from fastmcp.client.transports import StdioTransport
from pydantic_ai import exceptions
from pydantic_ai.mcp import MCPToolset


async def run(plan: dict[str, Any]) -> list[dict[str, Any]]:
    server = plan["server"]
    transport = StdioTransport(command=server["command"], args=server.get("args", []), env=server.get("env"))
    outcomes: list[dict[str, Any]] = []
    async with MCPToolset(transport) as toolset:
        for step in plan["steps"]:
            try:
                result = await toolset.direct_call_tool(step["name"], step.get("arguments", {}))
                outcomes.append({"ok": True, "result": result})
            except (exceptions.ModelRetry, exceptions.ToolFailed) as err:
                outcomes.append({"ok": False, "error": {"name": type(err).__name__, "message": err.message}})
    return outcomes


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as plan_file:  # noqa: PTH123 - runs under another venv's Python
        plan = json.load(plan_file)
    sys.stdout.write(json.dumps(asyncio.run(run(plan)), default=str) + "\n")


if __name__ == "__main__":
    main()
