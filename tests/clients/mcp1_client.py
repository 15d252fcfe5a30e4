"""Drives the server with the Python `mcp` 1.x client, which many agent frameworks still pin.

    VENV/bin/python mcp1_client.py PLAN.json

Runs in a virtual environment of its own (mcp 1.x cannot share one with our mcp 2.x), so it is
left out of our type check. Same plan and output as `ts_client.cjs`: one JSON array on stdout,
per step {"ok": true, "result", "progress"} or {"ok": false, "error": {"name", "code", "message"}}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError


async def run(plan: dict[str, Any]) -> list[dict[str, Any]]:
    server = plan["server"]
    params = StdioServerParameters(command=server["command"], args=server.get("args", []), env=server.get("env"))
    timeout = timedelta(milliseconds=plan["timeout_ms"]) if plan.get("timeout_ms") else None
    outcomes: list[dict[str, Any]] = []
    async with stdio_client(params) as (read, write), ClientSession(read, write, timeout) as session:
        await session.initialize()
        for step in plan["steps"]:
            progress: list[dict[str, Any]] = []

            async def on_progress(value: float, total: float | None, message: str | None, into=progress) -> None:
                into.append({"progress": value, "total": total, "message": message})

            try:
                if step["op"] == "list":
                    result: Any = await session.list_tools()
                else:
                    callback = on_progress if step.get("progress") else None
                    result = await session.call_tool(
                        step["name"], step.get("arguments", {}), progress_callback=callback
                    )
                dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
                if step["op"] == "pages":
                    dumped = await read_on(session, dumped)
                outcomes.append({"ok": True, "result": dumped, "progress": progress})
            except McpError as err:
                error = {"name": "McpError", "code": err.error.code, "message": err.error.message}
                outcomes.append({"ok": False, "error": error, "progress": progress})
            except Exception as err:  # noqa: BLE001 - any client-side refusal is what the test reports
                error = {"name": type(err).__name__, "code": None, "message": str(err)}
                outcomes.append({"ok": False, "error": error, "progress": progress})
    return outcomes


async def read_on(session: ClientSession, first: dict[str, Any]) -> dict[str, Any]:
    """Every page of a long answer (get_result with each next_offset), and every part of its resource link."""
    pages = [first]
    while (page := pages[-1].get("structuredContent") or {}).get("next_offset") is not None:
        arguments = {"job_id": page["job_id"], "offset": page["next_offset"]}
        result = await session.call_tool("get_result", arguments)
        pages.append(result.model_dump(by_alias=True, mode="json", exclude_none=True))
    reads: list[dict[str, Any]] = []
    links = [block["uri"] for block in first.get("content", []) if block.get("type") == "resource_link"]
    uri = links[0] if links else None
    while uri is not None:
        read = (await session.read_resource(uri)).model_dump(by_alias=True, mode="json", exclude_none=True)
        reads.append(read)
        meta = read["contents"][0].get("_meta") or {}
        uri = f"{links[0]}/{meta['next_offset']}" if "next_offset" in meta else None
    return {"pages": pages, "reads": reads}


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as plan_file:  # noqa: PTH123 - runs under another venv's Python
        plan = json.load(plan_file)
    sys.stdout.write(json.dumps(asyncio.run(run(plan))) + "\n")


if __name__ == "__main__":
    main()
