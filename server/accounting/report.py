"""`swarm-inference-mcp usage`: spend per day and provider, read from the usage state file (or from
Redis, when instances share it).

Imported only by that command, so the server's start-up never pays for it.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from swarm_inference_mcp.server.accounting.ledger import COLUMNS, StateError, Totals, UsageRow, change
from swarm_inference_mcp.server.accounting.schema import BUSY_TIMEOUT_MS

if TYPE_CHECKING:
    from swarm_inference_mcp.server.accounting.page import BudgetUse
    from swarm_inference_mcp.server.config import Settings

BAR_WIDTH = 30


def _first_day(days: int) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(time.time() - (days - 1) * 86400))


Found = list[UsageRow]
"""The rows of some days, newest day first, then by provider."""


def file_rows(path: Path, days: int) -> Found:
    """The state file's rows of the last `days` days (today included). Raises `StateError`."""
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            found = db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM calls WHERE day >= ? ORDER BY day DESC, provider",  # noqa: S608
                (_first_day(days),),
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StateError(f"the usage state file {path} cannot be read ({exc})") from None
    return [UsageRow(*values) for values in found]


def stream_rows(entries: list[dict[str, str]]) -> Found:
    """The same rows from the stream instances sharing Redis append to."""
    numbers = {"at", "status", "attempts", "prompt_tokens", "completion_tokens", "total_tokens", "latency_ms",
               "reserved_tokens"}  # fmt: skip

    def value(name: str, text: str | None) -> Any:
        if name == "shared":
            return text == "True"
        if not text:
            return 0 if name == "latency_ms" else None
        return (float(text) if name == "at" else int(text)) if name in numbers else text

    found = [UsageRow(**{name: value(name, entry.get(name)) for name in COLUMNS}) for entry in entries]
    found.sort(key=lambda row: row.provider)  # as the SQL orders: day descending, then by provider
    found.sort(key=lambda row: row.periods[0], reverse=True)
    return found


def grouped(found: Found, *, by_client: bool, whole_period: bool = False) -> list[dict[str, Any]]:
    """The table's rows: per day (or, `whole_period`, over all days) and provider or client."""
    who = "client" if by_client else "provider"
    groups: dict[tuple[str, str], list[UsageRow]] = {}
    for row in found:
        name = (row.client or "-") if by_client else row.provider
        groups.setdefault(("all" if whole_period else row.periods[0], name), []).append(row)
    ordered = sorted(groups.items(), key=lambda item: item[0][1])  # by name,
    ordered.sort(key=lambda item: item[0][0], reverse=True)  # then newest day first
    return [
        {
            "day": day,
            who: name,
            **vars(Totals.summed(rows, for_client=by_client)),
            "median_latency_ms": round(statistics.median(row.latency_ms for row in rows)),
        }
        for (day, name), rows in ordered
    ]


def print_usage(settings: Settings, days: int, as_json: bool, out: TextIO, *, by_client: bool = False) -> int:
    """The command's output and exit status: the rows of the state file, or every instance's in Redis."""
    if settings.redis_url is None and settings.state_path() is None:
        out.write(
            "SWARM_MCP_STATE_DB is off: usage is kept in each server's memory only, so there is nothing to show.\n"
        )
        return 1
    try:
        found, source = _found(settings, days)
    except StateError as err:
        out.write(f"{err}\n")
        return 2
    return _print(grouped(found, by_client=by_client), source, days, as_json, out, by_client=by_client)


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


def write_usage_page(settings: Settings, days: int, target: Path, out: TextIO) -> int:
    """`usage --html FILE`: the page of `server.report_html`, from the state file or Redis; exit status."""
    from swarm_inference_mcp.server.accounting.page import days_back, usage_page  # noqa: PLC0415 - only this option

    today = datetime.date.today()
    try:
        found, source = _found(settings, max(days, today.day))  # this month's rows, for the monthly budgets
    except StateError as err:
        out.write(f"{err}\n")
        return 2
    shown = days_back(days, today)
    recent = [row for row in found if row.periods[0] >= shown[0]]
    page = usage_page(
        grouped(recent, by_client=False),
        grouped(recent, by_client=True),
        grouped(recent, by_client=False, whole_period=True),
        budget_uses(settings, found, today),
        days=shown,
        source=source,
    )
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        out.write(f"the usage page cannot be written to {target} ({exc.strerror or exc})\n")
        return 2
    out.write(f"wrote {target}\n")
    return 0


def _found(settings: Settings, days: int) -> tuple[Found, str]:
    """The raw rows of the last `days` days, and where they were read. Raises `StateError`."""
    if settings.redis_url is not None:
        import anyio  # noqa: PLC0415 - only this path needs them

        from swarm_inference_mcp.server.scaleout.link import RedisLink  # noqa: PLC0415
        from swarm_inference_mcp.server.scaleout.url import describe_url  # noqa: PLC0415
        from swarm_inference_mcp.server.scaleout.usage import recent_rows  # noqa: PLC0415

        url = settings.redis_url.get_secret_value()

        async def fetch() -> list[dict[str, str]]:
            link = await RedisLink.open(url, settings.redis_password_file)
            try:
                return await recent_rows(link, _first_day(days))
            finally:
                await link.aclose()

        return stream_rows(anyio.run(fetch)), f"Redis at {describe_url(url)}"
    path = settings.state_path()
    if path is None:
        raise StateError(
            "SWARM_MCP_STATE_DB is off: usage is kept in each server's memory only, so there is nothing to show"
        )
    if not path.exists():
        raise StateError(f"the usage state file {path} does not exist yet: no server has recorded a call there")
    return file_rows(path, days), str(path)


def budget_uses(settings: Settings, found: Found, today: datetime.date) -> list[BudgetUse]:
    """The daily and monthly budgets, and each client's, with what the rows say is used of them now.
    (The lifetime budgets count one server process since it started, or Redis' all-time totals:
    `swarm://usage` and the metrics show those.)"""
    from swarm_inference_mcp.server.accounting.page import BudgetUse  # noqa: PLC0415
    from swarm_inference_mcp.server.clients import TokensFileError, load_clients  # noqa: PLC0415

    day, month = today.isoformat(), today.isoformat()[:7]
    uses = []
    for budget in settings.budgets():
        if budget.window == "lifetime":
            continue
        period = day if budget.window == "day" else month
        used = budget.used(_by_period(found, period), period)
        when = "today" if budget.window == "day" else "this month"
        uses.append(BudgetUse(f"{budget.variable} ({when})", budget.limit, used))
    try:
        clients = load_clients(settings.tokens_file, None)
    except TokensFileError:
        clients = []  # the server refuses such a file at start, and says why
    for admitted in clients:
        limit = admitted.client.daily_tokens
        if limit is not None:
            mine = [row for row in found if row.periods[0] == day and row.client == admitted.client.name]
            used = Totals.summed(mine, for_client=True).total_tokens
            uses.append(BudgetUse(f"client {admitted.client.name} (daily_tokens, today)", limit, used))
    return uses


def _by_period(found: Found, period: str) -> dict[tuple[str, str], Totals]:
    """Totals by (period, provider) of the rows in `period` (a day or a month), as a budget reads them."""
    totals: dict[tuple[str, str], Totals] = {}
    for row in found:
        if row.periods[0].startswith(period):
            totals.setdefault((period, row.provider), Totals()).add(change(row))
    return totals
