"""The streamable HTTP transport: the app behind its gate (`server.gateway.gate`), served by uvicorn.

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
import logging
import signal
import socket
from contextlib import suppress
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio
import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from swarm_inference_mcp.server.accounting.ledger import StateError
from swarm_inference_mcp.server.clients import Admitted, TokensFileError, load_clients
from swarm_inference_mcp.server.config import Settings
from swarm_inference_mcp.server.drain import InFlight
from swarm_inference_mcp.server.gateway.authserver import Authority
from swarm_inference_mcp.server.gateway.gate import (
    SDK_LOGGERS,
    ConfigurationRefused,
    Gate,
    QuietLog,
    transport_security,
)
from swarm_inference_mcp.server.gateway.metrics import PrometheusMetrics
from swarm_inference_mcp.server.gateway.signin import AuthorizationServer
from swarm_inference_mcp.server.state import open_grants

if TYPE_CHECKING:
    from swarm_inference_mcp.server.app import SwarmServer
    from swarm_inference_mcp.server.scaleout.names import Names

log = logging.getLogger(__name__)

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


def build_app(settings: Settings, server: SwarmServer, metrics: PrometheusMetrics | None = None) -> Gate:
    """The whole HTTP application; refuses a non-loopback bind without a token, and a bad tokens file."""
    try:
        clients = load_clients(settings.tokens_file, settings.token.get_secret_value() if settings.token else None)
    except TokensFileError as err:
        raise ConfigurationRefused(f"the tokens file cannot be used: {err}") from None
    if not settings.loopback and not clients:
        raise ConfigurationRefused(
            f"refusing to serve on {settings.host}, which is not a loopback address, without a token: "
            "set SWARM_MCP_TOKEN, SWARM_MCP_TOKEN_FILE or SWARM_MCP_TOKENS_FILE"
        )
    security = transport_security(settings)
    app = server.streamable_http_app(
        streamable_http_path=settings.path,
        stateless_http=settings.stateless,
        max_request_body_size=settings.max_body_bytes,
        transport_security=security,
        host=settings.host,
        session_idle_timeout=settings.session_idle,
    )
    authorization = None
    if settings.oauth == "builtin":
        try:
            grants = open_grants(settings)
        except StateError as err:
            raise ConfigurationRefused(f"the built-in authorization server cannot keep its grants: {err}") from None
        authorization = AuthorizationServer(Authority(settings, grants), lambda: gate.clients)
    gate = Gate(
        app,
        settings,
        security,
        clients,
        metrics=metrics,
        state_of=lambda: server.running[0] if server.running else None,
        authorization=authorization,
    )
    return gate


def timed_protocol(timeout_s: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol, closing a connection that has not sent a whole request within
    `timeout_s`: from when it opened, or from the first byte of each later request. (uvicorn closes
    idle keep-alive connections, but nothing stops one that trickles its headers a byte at a time.)
    It also closes one that reads nothing of what it is sent for `timeout_s`: while its transport's
    buffer is full (writing paused), the response waits on it and holds its memory."""

    class TimedH11Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _unread: asyncio.TimerHandle | None = None

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._unread is None:
                self._unread = self.loop.call_later(timeout_s, self._not_reading)

        def resume_writing(self) -> None:
            if self._unread is not None:
                self._unread.cancel()
                self._unread = None
            super().resume_writing()

        def _not_reading(self) -> None:
            self._unread = None
            if self.transport.is_closing():
                return
            who = "%s:%d" % self.client if self.client else "a client"  # noqa: UP031 - uvicorn's own shape
            log.info("closed the connection of %s: it read nothing of its response for %g s", who, timeout_s)
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_timer()

        def data_received(self, data: bytes) -> None:
            if self._timer is None and self.conn.their_state is h11.IDLE:
                self._start_timer()  # a new request begins on a kept-alive connection
            super().data_received(data)
            if self._timer is not None and self.conn.their_state is not h11.IDLE and self._request_received():
                self._timer.cancel()
                self._timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            for timer in (self._timer, self._unread):
                if timer is not None:
                    timer.cancel()
            self._timer = self._unread = None
            super().connection_lost(exc)

        def _request_received(self) -> bool:
            return self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

        def _start_timer(self) -> None:
            self._timer = self.loop.call_later(timeout_s, self._timed_out)

        def _timed_out(self) -> None:
            self._timer = None
            if self._request_received() or self.transport.is_closing():
                return
            who = "%s:%d" % self.client if self.client else "a client"  # noqa: UP031 - uvicorn's own shape
            log.info("closed the connection of %s: no whole request within %g s", who, timeout_s)
            self.transport.close()

    return TimedH11Protocol


async def serve_http(
    settings: Settings, server: SwarmServer, calls: InFlight, metrics: PrometheusMetrics | None = None
) -> None:
    """Serve until a signal; `calls` is the `InFlight` the server's tools run in, `metrics` what they count."""
    app = build_app(settings, server, metrics)
    file_clients = app.clients
    names = await _names(settings)
    if names is not None:
        app.clients = await names.admit_or_keep(file_clients, file_clients)
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
        http=timed_protocol(settings.request_timeout),
    )
    log.info(
        "serving MCP over streamable HTTP at http://%s:%d%s (%s, %s)",
        settings.host,
        settings.port,
        settings.path,
        "stateless" if settings.stateless else "sessions",
        f"{len(app.clients)} clients" if app.clients else "no token: loopback only",
    )

    if app.clients and settings.metrics_bind is None and settings.metrics_token is None:
        log.info("metrics are not served: set SWARM_MCP_METRICS_TOKEN (scraped beside /mcp) or SWARM_MCP_METRICS_ADDR")
    if settings.stateless and settings.redis_url is None:
        log.warning(
            "stateless without SWARM_MCP_REDIS_URL: job handles and tasks are found by this instance only; "
            "behind a load balancer with several instances, give them one Redis (docs/redis.md)"
        )

    def reload_clients() -> None:
        nonlocal file_clients
        try:
            token = settings.token.get_secret_value() if settings.token else None
            file_clients = load_clients(settings.tokens_file, token)
        except TokensFileError as err:
            log.error("SIGHUP: the tokens file was not re-read (%s); the clients stay as they were", err)
            return
        if names is None:
            app.clients = file_clients
        else:  # the same check as at start, at once (and again each third of a lease)
            readmitting.add(task := asyncio.get_running_loop().create_task(readmit()))
            task.add_done_callback(readmitting.discard)
        log.info("SIGHUP: re-read the tokens file; %d clients", len(file_clients))

    readmitting: set[asyncio.Task[None]] = set()
    """The SIGHUP re-checks under way: held, since the loop keeps only a weak reference to a task."""

    async def readmit() -> None:
        if names is not None:
            app.clients = await names.admit_or_keep(file_clients, app.clients)

    def admitted(clients: list[Admitted]) -> None:
        app.clients = clients

    if settings.tokens_file is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_clients)
    # A task of its own, not a task group's: what `_serve` raises (a refused configuration) stays itself.
    keeping = (
        None if names is None else asyncio.get_running_loop().create_task(names.keep(lambda: file_clients, admitted))
    )
    try:
        await _serve(settings, config, calls, app)
    finally:
        if keeping is not None:
            keeping.cancel()
            with suppress(asyncio.CancelledError):
                await keeping
        with anyio.CancelScope(shield=True):
            if names is not None:
                await names.aclose()
            if app.authorization is not None:
                await app.authorization.authority.aclose()


async def _names(settings: Settings) -> Names | None:
    """With Redis and a tokens file: the names every instance sharing the Redis agrees on
    (`server.scaleout.names`)."""
    if settings.redis_url is None or settings.tokens_file is None:
        return None
    from swarm_inference_mcp.server.scaleout.names import open_names  # noqa: PLC0415 - only with Redis

    url = settings.redis_url.get_secret_value()
    return await open_names(url, settings.redis_password_file, settings.redis_lease, settings.tokens_file)


async def _serve(settings: Settings, config: uvicorn.Config, calls: InFlight, app: Gate) -> None:
    """One uvicorn server; with `SWARM_MCP_METRICS_ADDR`, listening on that bind too (the gate answers only
    /metrics there, knowing it by its port)."""
    server = DrainingServer(config, calls, app, settings.shutdown_grace)
    bind = settings.metrics_bind
    if bind is None:
        await server.serve()
        return
    if bind[1] == settings.port:
        raise ConfigurationRefused(f"SWARM_MCP_METRICS_ADDR needs a port of its own, not {settings.port}")
    try:
        scraped = socket.create_server(bind, family=socket.AF_INET6 if ":" in bind[0] else socket.AF_INET)
    except OSError as exc:
        raise ConfigurationRefused(f"the metrics cannot be served on {settings.metrics_addr}: {exc.strerror}") from None
    log.info("serving Prometheus metrics at http://%s/metrics (no token)", settings.metrics_addr)
    with scraped:
        await server.serve([config.bind_socket(), scraped])
