"""`usage --html`: the page opened in a real headless Chromium (Debian's `chromium`), which must draw
the charts and fetch nothing."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from swarm_inference_mcp.server.accounting.ledger import UsageRow
from swarm_inference_mcp.server.accounting.page import COLOURS
from swarm_inference_mcp.server.accounting.sqlite import SqliteUsageStore
from tests.servers import free_port, run_script
from tests.test_gateway import ALICE, tokens_file

pytestmark = pytest.mark.slow

DAY_S = 86400


def row(days_ago: int, provider: str, tokens: int, client: str | None, outcome: str = "answer") -> UsageRow:
    return UsageRow(
        at=time.time() - days_ago * DAY_S, tool=f"ask_{provider}", provider=provider, model="m", outcome=outcome,
        status=None, attempts=1, prompt_tokens=tokens // 2, completion_tokens=tokens - tokens // 2,
        total_tokens=tokens, latency_ms=40_000 if provider == "fortytwo" else 3_000, job_id=None, client=client,
    )  # fmt: skip


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    """A week of calls by two clients to both providers, some failed, written by the server's own store."""
    path = tmp_path / "usage.sqlite3"
    store = SqliteUsageStore.open(path)
    for days_ago in range(7):
        store.record(row(days_ago, "fortytwo", 3000 + 500 * days_ago, "alice"))
        store.record(row(days_ago, "swarms", 1200, "bob"))
        store.record(row(days_ago, "fortytwo", 0, "bob", outcome="timeout"))
    anyio.run(anyio.to_thread.run_sync, store.close)
    return path


@contextmanager
def listening() -> Iterator[tuple[int, list[bytes]]]:
    """A port that records every connection made to it: the proxy every request of the browser goes to."""
    seen: list[bytes] = []
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    seen.append(conn.recv(4096))
                except TimeoutError:
                    seen.append(b"")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield port, seen
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("this test opens the page in a real browser: install Debian's chromium (apt-get install chromium)")
    return found


CHROMIUM_OWN = (b"google.com", b"googleapis.com", b"gstatic.com", b"gvt1.com")
"""Where Chromium's own background requests go (updates, clock, accounts), whatever the page."""


def chromium_own(request: bytes) -> bool:
    target = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
    host = target.split(b"//")[-1].split(b"/")[0].split(b":")[0]
    return any(host == own or host.endswith(b"." + own) for own in CHROMIUM_OWN)


def pixels(png: bytes) -> list[tuple[int, int, int]]:
    """The RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium's screenshots are)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    at, data, width, height, channels = 8, b"", 0, 0, 0
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, body = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, interlace) == (8, 0), "8-bit, not interlaced"
            assert colour in (2, 6), "RGB or RGBA"
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            data += body
        at += 12 + length
    raw, stride = zlib.decompress(data), width * channels
    out: list[tuple[int, int, int]] = []
    previous = bytearray(stride)
    for y in range(height):
        method = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if method == 1:
                line[i] = (line[i] + left) & 0xFF
            elif method == 2:
                line[i] = (line[i] + up) & 0xFF
            elif method == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif method == 4:
                guess = left + up - corner
                near = min((abs(guess - left), 0, left), (abs(guess - up), 1, up), (abs(guess - corner), 2, corner))
                line[i] = (line[i] + near[2]) & 0xFF
        out += [tuple(line[x : x + 3]) for x in range(0, stride, channels)]  # type: ignore[misc]
        previous = line
    return out


def colour(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def test_the_page_draws_spend_per_provider_and_client_and_the_budgets_and_fetches_nothing(
    state_file: Path, tmp_path: Path
) -> None:
    page = tmp_path / "usage.html"
    clients = tokens_file(tmp_path, f"alice {ALICE} daily_tokens=2000")
    env = {
        "SWARM_MCP_STATE_DB": str(state_file),
        "SWARM_MCP_DAILY_TOKEN_BUDGET": "10000",
        "SWARM_MCP_TOKENS_FILE": str(clients),
    }
    done = run_script("usage", "--days", "7", "--html", str(page), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {page}\n"
    source = page.read_text()
    for fetching in ("<script", "src=", "href=", "url(", "@import"):
        assert fetching not in source, fetching

    with listening() as (proxy, connections):
        browser = [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            # Chromium's own traffic (updates, clock, safe browsing) off, so what is left is the page's.
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--no-default-browser-check",
            f"--proxy-server=http://127.0.0.1:{proxy}", "--proxy-bypass-list=<-loopback>",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,1600",
        ]  # fmt: skip
        shot = tmp_path / "usage.png"

        def opened(extra: str, at: Path) -> str:
            done = subprocess.run(
                [*browser, extra, at.as_uri()], capture_output=True, text=True, timeout=120, check=False
            )
            assert done.returncode == 0, done.stderr[-3000:]
            return done.stdout

        opened(f"--screenshot={shot}", page)
        dom = opened("--dump-dom", page)
        fetched = [request for request in connections if not chromium_own(request)]
        assert fetched == [], f"the page made the browser fetch something: {fetched}"
        control = tmp_path / "control.html"  # the same browser does show a page's fetch to the proxy
        control.write_text('<img src="http://fetch-probe.example/pixel.png">')
        opened("--dump-dom", control)
        assert [request for request in connections if b"fetch-probe.example" in request]

    for text in ("Tokens per day, by provider", "Tokens per day, by client", "alice", "bob", "fortytwo", "swarms"):
        assert text in dom, text
    assert "SWARM_MCP_DAILY_TOKEN_BUDGET (today)" in dom
    assert "4,200 of 10,000" in dom  # today: alice's 3,000 on Fortytwo and bob's 1,200 on Swarms
    assert "client alice (daily_tokens, today)" in dom
    assert "3,000 of 2,000" in dom
    failing, slowest = dom.split("Most failing providers")[1], dom.split("Slowest providers")[1]
    assert failing.index("fortytwo") < failing.index("swarms")  # half its calls timed out
    assert slowest.index("fortytwo") < slowest.index("swarms")  # 40 s against 3 s
    assert "50%" in failing

    drawn = pixels(shot.read_bytes())
    first, second = colour(COLOURS[0]), colour(COLOURS[1])
    # Two charts of seven stacked bars, in the first two colours: each colour covers a real area.
    assert drawn.count(first) > 2000, drawn.count(first)
    assert drawn.count(second) > 2000, drawn.count(second)
    assert drawn.count(colour("#e45756")) > 100  # alice's spent budget is drawn as spent
