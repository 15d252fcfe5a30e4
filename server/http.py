"""The streamable HTTP transport, secure by default.

In front of the SDK's app sits one small ASGI gate, checked in this order:

1. `GET /healthz` answers `{"status": "ok"}` to anyone: load balancers carry no token, and it
   says nothing about the configuration.
2. Host and Origin must be allowed (DNS-rebinding protection), on every bind address: 421 or 403.
3. With a token configured, every request must carry `Authorization: Bearer <token>`, compared in
   constant time: 401 with `WWW-Authenticate` otherwise, and nothing reaches the tools.

The body size limit is the SDK's (it refuses a declared or streamed oversize body without
reading it whole). The client's token is never passed upstream: tools only ever use the server's
own keys and base URLs.

Graceful shutdown is ours, not uvicorn's: the SDK answers tool calls over event streams from
sse-starlette, which ends every open stream the moment uvicorn starts shutting down, so uvicorn's
own grace period would only ever help plain-JSON answers. `DrainingServer` therefore holds the
first SIGTERM/SIGINT back from uvicorn: new calls are refused, calls in flight get
`shutdown_grace` seconds, the rest are cancelled (each returns a `cancelled` result and its
upstream request is aborted), and once every answer is written uvicorn is told to stop. A second
signal stops at once.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import time
from types import FrameType
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server.config import Settings
from server.drain import InFlight

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


class ConfigurationRefused(Exception):
    """The HTTP transport will not start with this configuration."""


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Host/Origin allow-lists: the loopback names on loopback, else the bind address, plus the configured ones."""
    if settings.loopback:
        hosts, origins = list(LOOPBACK_HOSTS), list(LOOPBACK_ORIGINS)
    else:
        bound = f"[{settings.host}]" if ":" in settings.host else settings.host
        hosts, origins = [bound, f"{bound}:*"], []
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts + _split(settings.allowed_hosts),
        allowed_origins=origins + _split(settings.allowed_origins),
    )


SDK_LOGGERS = ("mcp.server.streamable_http", "mcp.server.streamable_http_manager")
_SESSION_ID = re.compile(r"\b([0-9a-f]{8})[0-9a-f]{8,}\b")


class QuietLog(logging.Filter):
    """Keeps the SDK's HTTP log to what an operator needs.

    - A client that hangs up in the middle of its request is not our error: the SDK logs it with a
      traceback at ERROR; it becomes one INFO line.
    - Session ids are credentials of a sort (whoever has one can use the session), so they are
      logged by their first eight characters only.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ClientDisconnect):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args, record.exc_info, record.exc_text = (
                "a client disconnected before its request was complete",
                (),
                None,
                None,
            )
        elif isinstance(record.msg, str) and not record.args:
            record.msg = _SESSION_ID.sub(r"\1…", record.msg)
        return True


class RefusalLog:
    """Failed authentication at WARNING, never with the token presented, and bounded in volume: the
    first refusal from an address is logged at once, the rest in that minute are counted and summed
    up in one line when the minute is over (or the server stops), so a flood cannot fill the disk."""

    WINDOW_S = 60.0

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}
        """Address -> (start of its window, refusals since the first)."""

    def refused(self, address: str, now: float) -> None:
        self.flush(now)
        window = self._windows.get(address)
        if window is None:
            self._windows[address] = (now, 0)
            log.warning(
                "refused a request from %s: missing or wrong bearer token (more this minute are counted, not listed)",
                address,
            )
        else:
            self._windows[address] = (window[0], window[1] + 1)

    def flush(self, now: float = math.inf) -> None:
        for address, (start, more) in list(self._windows.items()):
            if now - start < self.WINDOW_S:
                continue
            del self._windows[address]
            if more:
                log.warning("refused %d more requests from %s in a minute: missing or wrong token", more, address)


class Gate:
    """Health check, Host/Origin validation and bearer-token check in front of the MCP app."""

    def __init__(self, app: ASGIApp, settings: Settings, security: TransportSecuritySettings) -> None:
        self._app = app
        self._security = TransportSecurityMiddleware(security)
        self._token = settings.token.get_secret_value().encode() if settings.token else None
        self.answering = InFlight()
        """POSTs being answered: a shutdown waits for them, so that every last result is written."""
        self.refusals = RefusalLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if scope["path"] == "/healthz" and scope["method"] in ("GET", "HEAD"):
            await JSONResponse({"status": "ok"})(scope, receive, send)
            return
        request = Request(scope)
        refusal = await self._security.validate_request(request, is_post=False)
        if refusal is None and self._token is not None and not self._authorised(request):
            self.refusals.refused(request.client.host if request.client else "an unknown address", time.monotonic())
            refusal = Response(
                "Missing or invalid bearer token",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="swarm-inference-mcp"'},
            )
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["method"] != "POST":  # a GET event stream stays open for the session's life
            await self._app(scope, receive, send)
            return
        with self.answering.track():
            await self._app(scope, receive, send)

    def _authorised(self, request: Request) -> bool:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or self._token is None:
            return False
        return hmac.compare_digest(presented.strip().encode(), self._token)


FLUSH_S = 5.0
"""How long, after the grace period, cancelled calls get to write their `cancelled` results."""


class DrainingServer(uvicorn.Server):
    """uvicorn, with the first SIGTERM/SIGINT turned into a drain of the tool calls in flight."""

    def __init__(self, config: uvicorn.Config, calls: InFlight, gate: Gate, grace_s: float) -> None:
        super().__init__(config)
        self._calls = calls
        self._gate = gate
        self._grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Called by the signal handler, on the event loop's thread but outside any task."""
        if self._calls.draining or self._loop is None:
            super().handle_exit(sig, frame)  # a second signal: stop now
            return
        self._calls.draining = True
        self._loop.call_soon_threadsafe(self._start_drain, sig)

    def _start_drain(self, sig: int) -> None:
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit(sig))

    async def _drain_then_exit(self, sig: int) -> None:
        log.info("shutting down: taking no new calls; %d in flight get %g s to finish", len(self._calls), self._grace_s)
        with anyio.move_on_after(self._grace_s):
            await self._calls.wait_idle()
        if len(self._calls):
            log.info("shutdown grace over: cancelling %d calls still in flight", len(self._calls))
            self._calls.cancel_all()
        with anyio.move_on_after(FLUSH_S):
            await self._calls.wait_idle()
            await self._gate.answering.wait_idle()
        self._gate.refusals.flush()  # now: uvicorn ends the process with the signal it caught
        super().handle_exit(sig, None)


def build_app(settings: Settings, server: MCPServer[Any]) -> Gate:
    """The whole HTTP application; refuses a non-loopback bind without a token."""
    if not settings.loopback and settings.token is None:
        raise ConfigurationRefused(
            f"refusing to serve on {settings.host}, which is not a loopback address, without a token: "
            "set SWARM_MCP_TOKEN or SWARM_MCP_TOKEN_FILE"
        )
    security = transport_security(settings)
    app = server.streamable_http_app(
        streamable_http_path=settings.path,
        stateless_http=settings.stateless,
        max_request_body_size=settings.max_body_bytes,
        transport_security=security,
        host=settings.host,
    )
    return Gate(app, settings, security)


async def serve_http(settings: Settings, server: MCPServer[Any], calls: InFlight) -> None:
    """Serve until a signal; `calls` is the `InFlight` the server's tools run in."""
    app = build_app(settings, server)
    quiet = QuietLog()
    for name in SDK_LOGGERS:
        logging.getLogger(name).addFilter(quiet)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,  # our stderr logging, not uvicorn's (whose access log goes to stdout)
        access_log=False,
        timeout_graceful_shutdown=1,  # the drain has already waited; this only closes idle connections
    )
    log.info(
        "serving MCP over streamable HTTP at http://%s:%d%s (%s, %s)",
        settings.host,
        settings.port,
        settings.path,
        "stateless" if settings.stateless else "sessions",
        "token required" if settings.token else "no token: loopback only",
    )
    await DrainingServer(config, calls, app, settings.shutdown_grace).serve()
