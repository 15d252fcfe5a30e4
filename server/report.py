"""`swarm-inference-mcp usage`: spend per day and provider, read from the usage state file (or from
Redis, when instances share it).

Imported only by that command, so the server's start-up never pays for it.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any, TextIO

from swarm_inference_mcp.tools.usage import BUSY_TIMEOUT_MS, StateError

BAR_WIDTH = 30


def _first_day(days: int) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(time.time() - (days - 1) * 86400))


def usage_rows(path: Path, days: int, *, by_client: bool = False) -> list[dict[str, Any]]:
    """Per local day and provider (or HTTP client) over the last `days` days (today included), newest first."""
    group = "coalesce(client, '-')" if by_client else "provider"
    first = _first_day(days)
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            found = db.execute(
                f"SELECT day, {group}, outcome, prompt_tokens, completion_tokens, total_tokens, latency_ms"  # noqa: S608
                f" FROM calls WHERE day >= ? ORDER BY day DESC, {group}",
                (first,),
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StateError(f"the usage state file {path} cannot be read ({exc})") from None
    return _grouped(found, by_client=by_client)


def redis_usage_rows(entries: list[dict[str, str]], *, by_client: bool = False) -> list[dict[str, Any]]:
    """The same table from the rows instances sharing Redis appended to its stream."""

    def number(text: str) -> int | None:
        return int(text) if text else None

    found = [
        (
            entry["day"],
            (entry["client"] or "-") if by_client else entry["provider"],
            entry["outcome"],
            number(entry["prompt_tokens"]),
            number(entry["completion_tokens"]),
            number(entry["total_tokens"]),
            int(entry["latency_ms"]),
        )
        for entry in entries
    ]
    found.sort(key=lambda row: row[1])  # as the SQL orders: day descending, then by name
    found.sort(key=lambda row: row[0], reverse=True)
    return _grouped(found, by_client=by_client)


def _grouped(found: list[tuple[Any, ...]], *, by_client: bool) -> list[dict[str, Any]]:
    """(day, who, outcome, prompt, completion, total, latency) rows, newest day first, as the table's rows."""
    groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in found:
        groups.setdefault((row[0], row[1]), []).append(row)
    who = "client" if by_client else "provider"
    return [
        {
            "day": day,
            who: provider,
            "calls": len(rows),
            "errors": sum(row[2] != "answer" for row in rows),
            "prompt_tokens": sum(row[3] or 0 for row in rows),
            "completion_tokens": sum(row[4] or 0 for row in rows),
            "total_tokens": sum(row[5] or 0 for row in rows),
            "median_latency_ms": round(statistics.median(row[6] for row in rows)),
        }
        for (day, provider), rows in groups.items()
    ]


def print_redis_usage(
    url: str, password_file: str | None, days: int, as_json: bool, out: TextIO, *, by_client: bool = False
) -> int:
    """The command's output and exit status, with `SWARM_MCP_REDIS_URL` set: the rows every instance shared."""
    import anyio  # noqa: PLC0415 - only this path needs them

    from swarm_inference_mcp.tools.redis_link import RedisLink  # noqa: PLC0415
    from swarm_inference_mcp.tools.redis_url import describe_url  # noqa: PLC0415
    from swarm_inference_mcp.tools.redis_usage import recent_rows  # noqa: PLC0415

    async def fetch() -> list[dict[str, str]]:
        link = await RedisLink.open(url, password_file)
        try:
            return await recent_rows(link, _first_day(days))
        finally:
            await link.aclose()

    try:
        rows = redis_usage_rows(anyio.run(fetch), by_client=by_client)
    except StateError as err:
        out.write(f"{err}\n")
        return 2
    return _print(rows, f"Redis at {describe_url(url)}", days, as_json, out, by_client=by_client)


def print_usage(path: Path | None, days: int, as_json: bool, out: TextIO, *, by_client: bool = False) -> int:
    """The command's output and exit status."""
    if path is None:
        out.write(
            "SWARM_MCP_STATE_DB is off: usage is kept in each server's memory only, so there is nothing to show.\n"
        )
        return 1
    if not path.exists():
        rows: list[dict[str, Any]] = []
    else:
        try:
            rows = usage_rows(path, days, by_client=by_client)
        except StateError as err:
            out.write(f"{err}\n")
            return 2
    return _print(rows, str(path), days, as_json, out, by_client=by_client)


def _print(rows: list[dict[str, Any]], source: str, days: int, as_json: bool, out: TextIO, *, by_client: bool) -> int:
    if as_json:
        key = "redis" if source.startswith("Redis at ") else "state_db"
        shown = source.removeprefix("Redis at ")
        out.write(json.dumps({key: shown, "days": days, "rows": rows}, indent=2) + "\n")
        return 0
    out.write(f"Usage over the last {days} days (local time), from {source}\n\n")
    if not rows:
        out.write("No calls recorded.\n")
        return 0
    out.write(_table(rows, "client" if by_client else "provider"))
    return 0


def _table(rows: list[dict[str, Any]], who: str) -> str:
    most = max(row["total_tokens"] for row in rows) or 1
    header = ("day", who, "calls", "errors", "tokens", "median latency", "tokens")
    lines = [
        f"{header[0]:<10}  {header[1]:<9} {header[2]:>6} {header[3]:>6} {header[4]:>11} {header[5]:>14}  {header[6]}"
    ]
    previous_day = None
    for row in rows:
        day = row["day"] if row["day"] != previous_day else ""
        previous_day = row["day"]
        bar = "█" * round(BAR_WIDTH * row["total_tokens"] / most) or ("▏" if row["total_tokens"] else "")
        latency = f"{row['median_latency_ms'] / 1000:.1f} s"
        lines.append(
            f"{day:<10}  {row[who]:<9} {row['calls']:>6} {row['errors']:>6} {row['total_tokens']:>11,}"
            f" {latency:>14}  {bar}"
        )
    total = sum(row["total_tokens"] for row in rows)
    calls = sum(row["calls"] for row in rows)
    lines.append(f"\n{calls} calls, {total:,} tokens in all.")
    return "\n".join(lines) + "\n"
