"""The usage writer: a process of its own that commits the server's usage rows to the state file.

    python tools/usage_writer.py PATH WRITER_ID GATHER_S

Started by `SqliteUsageStore` on the first row, fed one JSON line per row on stdin (see `encode`).
It commits whatever has arrived in one transaction (a burst of calls is one commit), and records
in the same transaction the last row number it committed (`writers`), so the server can count
exactly which of its rows are on file yet. It waits as long as it must for another process's lock,
which the server's event loop never does.

After each commit it writes the number of the last row committed to its stdout, a pipe the server
reads when a budget shared with other processes is set: then a call returns only once its row is
committed, so every process counts it from then on (and the writer then commits at once: GATHER_S
is 0).

It outlives the server on purpose: killed, the server leaves its rows in the pipe, and the writer
commits them all when it reads the end of its input, then exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from typing import Any

GATHER_S = 0.2
"""After the first row of a batch, how long to let more arrive before committing (when nobody waits).
A commit costs far more than a row; waiting in the pipe, a row is as safe as in a batch, and only
other processes without budgets read it later."""
NICE = 10
"""How much lower the writer's scheduling priority is, when no call waits for its commits."""
BUSY_TIMEOUT_S = 5.0
"""A batch waits this long for another process's lock, then is tried again (and said so on stderr)."""
COLUMNS = (
    "at", "day", "tool", "provider", "model", "outcome", "status", "attempts", "prompt_tokens",
    "completion_tokens", "total_tokens", "latency_ms", "job_id", "client",
)  # fmt: skip
INSERT = f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608


def encode(seq: int, values: tuple[Any, ...]) -> bytes:
    """One row on the pipe: its number, then the values of `COLUMNS`, as a JSON line."""
    return json.dumps([seq, *values], separators=(",", ":")).encode() + b"\n"


def _commit(db: sqlite3.Connection, writer_id: str, lines: list[bytes]) -> None:
    rows = [json.loads(line) for line in lines]
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(INSERT, [row[1:] for row in rows])
                db.execute("UPDATE writers SET seq = ?, at = ? WHERE id = ?", (rows[-1][0], time.time(), writer_id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            sys.stderr.write(f"usage writer: the state file is locked by another process; retrying ({exc})\n")


def _gathered(fd: int, gather_s: float) -> bytes:
    """What else arrives within `gather_s`: a burst of calls is one commit, with fewer wake-ups."""
    time.sleep(gather_s)
    data = b""
    try:
        os.set_blocking(fd, False)
    except OSError:  # no non-blocking pipes here (Windows before Python 3.12): commit what was read
        return data
    try:
        while len(data) < 1 << 20 and (more := os.read(fd, 1 << 16)):
            data += more
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, True)
    return data


def _confirm(last: bytes) -> None:
    """Tell the server which rows are committed (its reader may be gone: then nobody is waiting)."""
    seq = last[1 : last.index(b",")]
    with contextlib.suppress(OSError):
        os.write(1, seq + b"\n")


def main(argv: list[str]) -> int:
    path, writer_id, gather = argv
    gather_s = float(gather)
    if gather_s > 0 and hasattr(os, "nice"):
        # Nobody waits for these commits: on a busy machine they yield the CPU to the calls. (With
        # budgets every process counts, calls wait for the commit, so then it keeps its priority.)
        os.nice(NICE)
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    db.execute("PRAGMA synchronous = NORMAL")  # durable across a killed process; fsync at checkpoints
    db.execute("INSERT OR REPLACE INTO writers (id, seq, at) VALUES (?, 0, ?)", (writer_id, time.time()))
    fd = sys.stdin.fileno()
    partial = b""
    try:
        while True:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            data += _gathered(fd, gather_s)
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            if lines:
                _commit(db, writer_id, lines)
                _confirm(lines[-1])
        db.execute("DELETE FROM writers WHERE id = ?", (writer_id,))
    except sqlite3.Error as exc:
        sys.stderr.write(f"usage writer: the usage state file {path} cannot be written ({exc}); stopping\n")
        return 1
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
