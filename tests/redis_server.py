"""A real `redis-server` (Debian's package; `.ci/run` installs it) on a free loopback port, for the tests.

It runs with a password, so that every test also proves the password reaches Redis and never a log,
and with persistence off: a restart starts empty, as a fresh Redis after a crash would.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.servers import free_port

PASSWORD = "redis-pw-for-tests-5d1c"


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, (
            "these tests need a real Redis: install redis-server (Debian: apt-get install redis-server; "
            ".ci/run does it)"
        )
        self._binary = binary
        self._workdir = workdir
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD, socket_timeout=5)

    def start(self) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", PASSWORD]
        options += ["--save", "", "--appendonly", "no", "--dir", str(self._workdir)]
        self._process = subprocess.Popen(
            [self._binary, *options],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                assert self._process.poll() is None, "redis-server exited at start"
                assert time.monotonic() < deadline, "redis-server did not come up"
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        self._process = None

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()
