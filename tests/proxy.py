"""A small round-robin HTTP proxy, run as its own process: `python -m tests.proxy PORT BACKEND...`.

Each request goes to the next backend in turn (no stickiness, as in front of stateless instances);
one that refuses the connection is skipped, as a load balancer's health check would. Responses
stream through, so MCP's event streams work. `GET /_proxy/served` lists what went where: one
`[what, backend index]` per request, `what` being the JSON-RPC method, or the tool for tools/call.
"""

from __future__ import annotations

import itertools
import json
import sys
from typing import Any

import httpx2
import uvicorn
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

HOP_BY_HOP = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "content-length"})


def _what(body: bytes) -> str:
    try:
        message = json.loads(body)
    except ValueError:
        return "-"
    if not isinstance(message, dict):
        return "-"
    if message.get("method") == "tools/call":
        return f"tools/call {message['params']['name']}"
    return str(message.get("method", "response"))


class Proxy:
    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.served: list[tuple[str, int]] = []
        self._turn = itertools.count()
        self._client = httpx2.AsyncClient(timeout=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        if request.url.path == "/_proxy/served":
            await JSONResponse(self.served)(scope, receive, send)
            return
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        for _ in self.backends:
            index = next(self._turn) % len(self.backends)
            outgoing = self._client.build_request(
                request.method, self.backends[index] + target, headers=headers, content=body
            )
            entry = (_what(body) if request.method == "POST" else request.method, index)
            self.served.append(entry)  # now, not when the answer starts: a slow call shows while it runs
            try:
                upstream = await self._client.send(outgoing, stream=True)
            except (httpx2.ConnectError, httpx2.ReadError, httpx2.RemoteProtocolError):
                self.served.remove(entry)  # a dead instance (even on a kept-alive connection): the next one
                continue
            response: Response = StreamingResponse(
                upstream.aiter_raw(),
                status_code=upstream.status_code,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
                background=BackgroundTask(upstream.aclose),
            )
            await response(scope, receive, send)
            return
        await Response("no backend answers", status_code=502)(scope, receive, send)


def main(argv: list[str]) -> None:
    port, *backends = argv
    app: Any = Proxy(backends)
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", lifespan="off")


if __name__ == "__main__":
    main(sys.argv[1:])
