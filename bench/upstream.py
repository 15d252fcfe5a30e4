"""A fast fake chat-completions upstream for the benchmark, run as its own process.

    python -m bench.upstream PORT_FILE

One asyncio loop serves every connection (keep-alive HTTP/1.1), so hundreds of concurrent slow
requests cost it nothing, and being a separate process it takes no CPU time from the client being
measured. `POST /_config` sets the answer delay and the shape of streamed answers; `GET /_stats`
returns the monotonic times at which streamed answers sent their first chunk (CLOCK_MONOTONIC is
shared by all processes on the machine). Listens on 127.0.0.1 only and writes its port to PORT_FILE.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

config: dict[str, Any] = {"delay_s": 0.0, "stream_tokens": 20, "frame_delay_s": 0.0, "long_answer": False}
stats: dict[str, Any] = {"requests": 0, "first_frames": []}


def completion(body: dict[str, Any]) -> dict[str, Any]:
    prompt = str(body.get("messages", [{}])[-1].get("content", ""))
    text = "".join(f" tok{i}" for i in range(int(config["stream_tokens"]))) if config["long_answer"] else prompt
    return {
        "id": f"chatcmpl-{stats['requests']}",
        "object": "chat.completion",
        "created": 1,
        "model": body.get("model", "m"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


def head(status: int, content_type: str, length: int | None) -> bytes:
    size = f"content-length: {length}\r\n" if length is not None else "transfer-encoding: chunked\r\n"
    return f"HTTP/1.1 {status} OK\r\ncontent-type: {content_type}\r\n{size}\r\n".encode()


async def stream(writer: asyncio.StreamWriter) -> None:
    writer.write(head(200, "text/event-stream", None))
    tokens = int(config["stream_tokens"])
    for i in range(tokens + 2):
        if i < tokens:
            delta: dict[str, Any] = {"content": f" tok{i}"}
            finish = None
        else:
            delta, finish = {}, "stop"
        chunk = {"id": "s", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        frame = f"data: {json.dumps(chunk)}\n\n" if i <= tokens else "data: [DONE]\n\n"
        data = frame.encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()
        if i == 0:
            stats["first_frames"].append(time.monotonic())
        if config["frame_delay_s"]:
            await asyncio.sleep(config["frame_delay_s"])
    writer.write(b"0\r\n\r\n")


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            _, path, _ = line.decode().split(" ", 2)
            length = 0
            while (header := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            raw = await reader.readexactly(length) if length else b""
            body = json.loads(raw) if raw else {}
            if path == "/_config":
                config.update(body)
                stats["first_frames"] = []
                payload: Any = config
            elif path == "/_stats":
                payload = stats
            else:
                stats["requests"] += 1
                if config["delay_s"]:
                    await asyncio.sleep(config["delay_s"])
                if body.get("stream"):
                    await stream(writer)
                    await writer.drain()
                    continue
                payload = completion(body)
            data = json.dumps(payload).encode()
            writer.write(head(200, "application/json", len(data)) + data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(port_file: Path) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    port_file.write_text(str(port))  # noqa: ASYNC240 - one tiny write, before serving
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
