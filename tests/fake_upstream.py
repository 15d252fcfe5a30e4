"""A fake Fortytwo + Swarms API: a real HTTP/1.1 server on 127.0.0.1, in a thread of the test run.

It speaks HTTP by hand on raw sockets so a test can make it misbehave exactly: answer any status,
send HTML or truncated JSON, reset the connection, never answer, trickle a body, stream SSE and
cut it. Every request is recorded, checked against the vendor's JSON schema (copied into
`tests/specs/`) and its auth header; a request that fails either gets the vendor's error answer.

Paths: `/fortytwo/v1/...` and `/swarms/v1/...`, so one server plays both providers.
"""

from __future__ import annotations

import json
import select
import socket
import socketserver
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import jsonschema  # type: ignore[import-untyped]  # no stubs needed for two calls

SPECS = Path(__file__).parent / "specs"
PROVIDERS = ("fortytwo", "swarms")
LOOPBACK = "127.0.0.1"
HANG_LIMIT_S = 60.0
"""A hanging reply gives up after this long, so a broken test can never wedge the suite."""


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until `condition()` holds: the fake runs in threads, so there is no event to await."""
    with anyio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - the state lives in another thread
            await anyio.sleep(0.01)


async def cancel_when(call: Callable[[], Coroutine[Any, Any, object]], condition: Callable[[], bool]) -> float:
    """Start `call`, cancel it as soon as `condition()` holds, and return when it was cancelled."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await eventually(condition)
        cancelled_at = time.monotonic()
        tg.cancel_scope.cancel()
    return cancelled_at


@dataclass
class Reply:
    """One scripted answer. The default is a normal answer built from the request."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay_s: float = 0.0
    hang: bool = False
    reset: bool = False
    truncate: bool = False
    trickle_s: float = 0.0
    sse: list[str] | None = None
    sse_delay_s: float = 0.0
    sse_cut: bool = False
    text: str | None = None
    """With a default (status 200, no body) reply: the answer text to send instead of the echo."""


@dataclass
class Received:
    provider: str
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    schema_errors: list[str]
    started: float
    finished: float | None = None
    disconnected: float | None = None


def _validator(provider: str) -> jsonschema.Draft202012Validator:
    spec = json.loads((SPECS / f"{provider}.openapi.json").read_text())
    schema = {"$ref": "#/components/schemas/ChatCompletionRequest", "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


def error_body(message: str, etype: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype}}


def sse_frame(data: Any, event: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


def chunk(
    text: str | None = None,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    *,
    model: str = "fake-model",
    id: str = "chatcmpl-fake",
) -> dict[str, Any]:
    delta = {"content": text} if text is not None else {}
    out: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


class FakeUpstream:
    """Start with `with FakeUpstream() as fake:`; `fake.url("swarms")` is a base URL for the server."""

    def __init__(self) -> None:
        self.keys = {"fortytwo": "ft-test-key-0001", "swarms": "sw-test-key-0002"}
        self._validators = {p: _validator(p) for p in PROVIDERS}
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Reply]] = {p: deque() for p in PROVIDERS}
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.models = {"fortytwo": ["fortytwo-prime"], "swarms": ["gpt-4.1-mini", "gpt-4.1"]}
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                fake._serve_connection(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 1024  # a burst of concurrent calls must not overflow the listen backlog

        self._server = Server((LOOPBACK, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, provider: str) -> str:
        return f"http://{LOOPBACK}:{self.port}/{provider}/v1"

    def script(self, provider: str, *replies: Reply) -> None:
        """Queue replies for the provider's next requests; once used up, answers are normal again."""
        with self._lock:
            self._scripts[provider].extend(replies)

    def reset(self) -> None:
        with self._lock:
            for queue in self._scripts.values():
                queue.clear()
            self.requests.clear()
            self.in_flight = 0
            self.max_in_flight = 0

    def seen(self, provider: str | None = None, path_suffix: str = "/chat/completions") -> list[Received]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (provider is None or r.provider == provider) and r.path.endswith(path_suffix)
            ]

    # --- the server side -------------------------------------------------------------------

    def _serve_connection(self, sock: socket.socket) -> None:
        reader = sock.makefile("rb")
        try:
            while self._serve_one(sock, reader):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            reader.close()

    def _serve_one(self, sock: socket.socket, reader: Any) -> bool:
        line = reader.readline()
        if not line:
            return False
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            header = reader.readline().decode("latin-1")
            if header in ("\r\n", "\n", ""):
                break
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = reader.read(int(headers.get("content-length", "0") or 0))
        provider = path.strip("/").split("/", 1)[0]
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        record = Received(provider, method, path, headers, body, [], time.monotonic())
        with self._lock:
            self.requests.append(record)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._answer(sock, record)
        finally:
            with self._lock:
                self.in_flight -= 1
                record.finished = time.monotonic()

    def _answer(self, sock: socket.socket, record: Received) -> bool:
        provider = record.provider
        if provider not in PROVIDERS:
            return self._send(sock, 404, {"detail": "Not Found"})
        if not self._authorised(provider, record.headers):
            return self._send(sock, 401, error_body("Invalid authentication credentials", "authentication_error"))
        if record.method == "GET" and record.path.endswith("/models"):
            with self._lock:
                reply = self._scripts[provider].popleft() if self._scripts[provider] else Reply()
            if reply.status != 200 or reply.json is not None:
                return self._send(sock, reply.status, reply.json)
            data = [{"id": m, "object": "model", "owned_by": provider} for m in self.models[provider]]
            return self._send(sock, 200, {"object": "list", "data": data})
        if record.method != "POST" or not record.path.endswith("/chat/completions"):
            return self._send(sock, 404, {"detail": "Not Found"})
        record.schema_errors = [e.message for e in self._validators[provider].iter_errors(record.body)]
        if record.schema_errors:
            detail = [{"loc": ["body"], "msg": m, "type": "value_error"} for m in record.schema_errors]
            return self._send(sock, 422, {"detail": detail})
        with self._lock:
            reply = self._scripts[provider].popleft() if self._scripts[provider] else Reply()
        return self._perform(sock, record, reply)

    def _authorised(self, provider: str, headers: dict[str, str]) -> bool:
        if provider == "fortytwo":
            return headers.get("authorization") == f"Bearer {self.keys['fortytwo']}"
        return headers.get("x-api-key") == self.keys["swarms"]

    def _perform(self, sock: socket.socket, record: Received, reply: Reply) -> bool:
        if reply.delay_s and self._wait_or_disconnect(sock, record, reply.delay_s):
            return False
        if reply.hang:
            self._wait_or_disconnect(sock, record, HANG_LIMIT_S)
            return False
        if reply.reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return False
        if reply.sse is not None:
            return self._send_sse(sock, record, reply.sse, reply.sse_delay_s, cut=reply.sse_cut)
        if reply.status == 200 and reply.body is None and reply.json is None:
            if isinstance(record.body, dict) and record.body.get("stream"):
                frames = self.stream_frames(record, reply.text)
                return self._send_sse(sock, record, frames, reply.sse_delay_s, cut=False)
            return self._send(sock, 200, self.completion(record, reply.text), reply.headers)
        payload = reply.body if reply.body is not None else json.dumps(reply.json).encode()
        head = self._head(reply.status, reply.content_type, len(payload), reply.headers)
        if reply.truncate:
            sock.sendall(head + payload[: len(payload) // 2])
            sock.close()
            return False
        if reply.trickle_s:
            sock.sendall(head)
            for i in range(len(payload)):
                if self._wait_or_disconnect(sock, record, reply.trickle_s):
                    return False
                sock.sendall(payload[i : i + 1])
            return True
        sock.sendall(head + payload)
        return True

    def answer_text(self, record: Received, index: int = 0) -> str:
        messages = record.body.get("messages", []) if isinstance(record.body, dict) else []
        last = messages[-1].get("content", "") if messages else ""
        if isinstance(last, list):
            last = " ".join(p.get("text", "") for p in last if isinstance(p, dict))
        suffix = f" (choice {index + 1})" if index else ""
        return f"{record.provider} says: {last}{suffix}"

    def completion(self, record: Received, text: str | None = None) -> dict[str, Any]:
        body = record.body if isinstance(record.body, dict) else {}
        n = body.get("n") or 1
        choices: list[dict[str, Any]] = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text if text is not None else self.answer_text(record, i)},
                "finish_reason": "stop",
            }
            for i in range(n)
        ]
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = sum(len(c["message"]["content"].split()) for c in choices)
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": 1,
            "model": body.get("model", "unknown"),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def stream_frames(self, record: Received, text: str | None = None) -> list[str]:
        """The default answer, as OpenAI-style chunks: one per word, then usage, then [DONE]."""
        whole = self.completion(record, text)
        words = whole["choices"][0]["message"]["content"].split(" ")
        ids = {"model": whole["model"], "id": whole["id"]}
        frames = [sse_frame(chunk(w if i == 0 else " " + w, **ids)) for i, w in enumerate(words)]
        frames.append(sse_frame(chunk(finish="stop", usage=whole["usage"], **ids)))
        frames.append(sse_frame("[DONE]"))
        return frames

    def _send_sse(self, sock: socket.socket, record: Received, frames: list[str], delay: float, *, cut: bool) -> bool:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for frame in frames:
            if delay and self._wait_or_disconnect(sock, record, delay):
                return False
            data = frame.encode()
            sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        if cut:
            sock.close()
            return False
        sock.sendall(b"0\r\n\r\n")
        return True

    def _head(self, status: int, content_type: str, length: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} X", f"content-type: {content_type}", f"content-length: {length}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _send(self, sock: socket.socket, status: int, data: Any, headers: dict[str, str] | None = None) -> bool:
        payload = json.dumps(data).encode()
        sock.sendall(self._head(status, "application/json", len(payload), headers or {}) + payload)
        return True

    def _wait_or_disconnect(self, sock: socket.socket, record: Received, seconds: float) -> bool:
        """Wait, watching the socket; True (and the time noted) if the client hung up meanwhile.

        Sleeps in `select` for the whole wait (hundreds of waiting threads must not poll), waking
        only when the socket turns readable, which for an HTTP/1.1 client means it closed.
        """
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                continue
            try:
                peek = sock.recv(1, socket.MSG_PEEK)
            except OSError:
                peek = b""
            if not peek:
                record.disconnected = time.monotonic()
                return True
            time.sleep(min(left, 0.05))  # unexpected early bytes: wait without spinning
        return False
