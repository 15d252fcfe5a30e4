"""`swarm-inference-mcp usage --html FILE`: spend as one self-contained page.

The charts are inline SVG drawn here and the style is inline CSS: the page runs no script and loads
nothing, so it opens the same from a mail attachment, a CI artifact or a file share.
"""

from __future__ import annotations

import datetime
import html
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d")
CHART_W, CHART_H, MARGIN = 760, 220, 48


@dataclass(frozen=True)
class BudgetUse:
    """One budget as the page shows it: what it is called, its limit, and what is used of it now."""

    label: str
    limit: int
    used: int


def usage_page(
    per_provider: list[dict[str, Any]],
    per_client: list[dict[str, Any]],
    providers: list[dict[str, Any]],
    budgets: list[BudgetUse],
    *,
    days: list[str],
    source: str,
) -> str:
    """The page: tokens per day per provider (and per client, when there are clients), each budget's
    use against its limit, and the providers ranked by failures and by latency. Rows as `report.grouped`
    makes them; `days` oldest first."""
    sections = [
        "<h2>Tokens per day, by provider</h2>",
        _chart(per_provider, "provider", days, "providers"),
    ]
    if any(row["client"] != "-" for row in per_client):
        sections += ["<h2>Tokens per day, by client</h2>", _chart(per_client, "client", days, "clients")]
    sections += ["<h2>Budgets</h2>", _budgets(budgets)]
    failing = sorted(providers, key=lambda row: (-_error_rate(row), -row["median_latency_ms"]))
    slowest = sorted(providers, key=lambda row: -row["median_latency_ms"])
    sections += ["<h2>Most failing providers</h2>", _table(failing), "<h2>Slowest providers</h2>", _table(slowest)]
    title = f"swarm-inference-mcp usage, {days[0]} to {days[-1]}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{html.escape(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 800px; color: #222; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.legend span {{ margin-right: 1.5em; }} .swatch {{ display: inline-block; width: 10px; height: 10px; }}
.meter {{ width: 300px; height: 12px; background: #eee; display: inline-block; vertical-align: middle; }}
.meter div {{ height: 12px; background: #4c78a8; }} .meter .spent {{ background: #e45756; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>From {html.escape(source)}, local days.</p>
{"".join(sections)}
</body></html>
"""


def _chart(rows: list[dict[str, Any]], who: str, days: list[str], what: str) -> str:
    """A stacked bar per day, one colour per provider or client."""
    names = sorted({row[who] for row in rows})
    tokens: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        tokens[row["day"]][row[who]] = row["total_tokens"]
    most = max((sum(tokens[day].values()) for day in days), default=0) or 1
    step = (CHART_W - MARGIN) / max(1, len(days))
    width = max(1.0, step * 0.7)
    shapes = [
        f'<text x="0" y="12" font-size="11">{most:,}</text>',
        f'<line x1="{MARGIN}" y1="{CHART_H}" x2="{CHART_W}" y2="{CHART_H}" stroke="#999"/>',
    ]
    for i, day in enumerate(days):
        x, y = MARGIN + i * step, float(CHART_H)
        for n, name in enumerate(names):
            value = tokens[day].get(name, 0)
            if not value:
                continue
            height = (CHART_H - 20) * value / most
            y -= height
            shapes.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
                f'fill="{COLOURS[n % len(COLOURS)]}"><title>{html.escape(day)} {html.escape(name)}: '
                f"{value:,} tokens</title></rect>"
            )
        if len(days) <= 16 or i % max(1, len(days) // 8) == 0:
            shapes.append(f'<text x="{x:.1f}" y="{CHART_H + 14}" font-size="10">{html.escape(day[5:])}</text>')
    legend = "".join(
        f'<span><i class="swatch" style="background:{COLOURS[n % len(COLOURS)]}"></i> {html.escape(name)}</span>'
        for n, name in enumerate(names)
    )
    if not names:
        legend = f"<span>No calls by any of the {what} in these days.</span>"
    return (
        f'<svg role="img" aria-label="tokens per day by {who}" width="{CHART_W}" height="{CHART_H + 20}" '
        f'viewBox="0 0 {CHART_W} {CHART_H + 20}">{"".join(shapes)}</svg><p class="legend">{legend}</p>'
    )


def _budgets(budgets: list[BudgetUse]) -> str:
    if not budgets:
        return "<p>No daily or monthly budget is set.</p>"
    lines = []
    for budget in budgets:
        share = min(1.0, budget.used / budget.limit)
        spent = ' class="spent"' if budget.used >= budget.limit else ""
        lines.append(
            f'<tr><td>{html.escape(budget.label)}</td><td><span class="meter"><div{spent} '
            f'style="width:{share * 100:.1f}%"></div></span></td><td>{budget.used:,} of {budget.limit:,}</td></tr>'
        )
    return f"<table>{''.join(lines)}</table>"


def _error_rate(row: dict[str, Any]) -> float:
    return row["errors"] / row["calls"] if row["calls"] else 0.0


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No calls recorded.</p>"
    head = "<tr><th>provider</th><th>calls</th><th>errors</th><th>error rate</th><th>median latency</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(row['provider'])}</td><td>{row['calls']:,}</td><td>{row['errors']:,}</td>"
        f"<td>{_error_rate(row):.0%}</td><td>{row['median_latency_ms'] / 1000:.1f} s</td></tr>"
        for row in rows
    )
    return f"<table>{head}{body}</table>"


def days_back(days: int, today: datetime.date) -> list[str]:
    """The `days` local days up to `today`, oldest first."""
    return [(today - datetime.timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]
