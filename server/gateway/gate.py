"""The gate of the HTTP transport, secure by default.

In front of the SDK's app sits one small ASGI gate, checked in this order:

1. `GET /healthz` answers `{"status": "ok"}` to anyone: load balancers carry no token, and it
   says nothing about the configuration.
2. Host and Origin must be allowed (DNS-rebinding protection), on every bind address: 421 or 403.
3. With a token configured, every request must carry `Authorization: Bearer <token>`, compared in
   constant time: 401 with `WWW-Authenticate` otherwise, and nothing reaches the tools.
4. `GET /metrics` (Prometheus, `server.gateway.metrics`) is answered here, before any client token is
   looked at: they show every client's name and spend, so only the scrape token
   (`SWARM_MCP_METRICS_TOKEN`) reads them, or anyone when the server has no client tokens at all
   (loopback); a client's token never does. With a bind of their own (`SWARM_MCP_METRICS_ADDR`, a
   second socket of the same uvicorn, known by its port) they are served there to anyone, and that
   bind answers nothing else.

The body size limit is the SDK's (it refuses a declared or streamed oversize body without
reading it whole). The client's token is never passed upstream: tools only ever use the server's
own keys and base URLs.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swarm_inference_mcp.server.clients import Admitted, Client, authenticate, digest
from swarm_inference_mcp.server.config import Settings
from swarm_inference_mcp.server.drain import InFlight
from swarm_inference_mcp.server.gateway.metrics import CONTENT_TYPE, PrometheusMetrics
from swarm_inference_mcp.server.gateway.oauth import ResourceServer
from swarm_inference_mcp.server.gateway.sessions import Sessions
from swarm_inference_mcp.server.gateway.signin import AuthorizationServer

if TYPE_CHECKING:
    from swarm_inference_mcp.server.calls import AppState

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
        else:
            message = record.getMessage()
            shortened = _SESSION_ID.sub(r"\1…", message)
            if shortened != message:
                record.msg, record.args = shortened, ()
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
    """Health check, Host/Origin validation, client authentication and per-client session limits
    in front of the MCP app.

    An authenticated client is handed to the SDK as the request's `user` (its name as the token's
    client id, never the token itself). The SDK binds each session to the user that opened it and
    answers anyone else exactly as if the session did not exist (404), for use and DELETE alike;
    the tools read the name from the request, for the ledger and the client's own budget.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        security: TransportSecuritySettings,
        clients: list[Admitted],
        *,
        metrics: PrometheusMetrics | None = None,
        state_of: Callable[[], AppState | None] = lambda: None,
        authorization: AuthorizationServer | None = None,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._state_of = state_of
        self._metrics_here = metrics is not None and settings.metrics_bind is None
        """/metrics is served beside /mcp (to the scrape token) unless the metrics have a bind of their own."""
        self._metrics_port = None if settings.metrics_bind is None else settings.metrics_bind[1]
        """The port of the metrics' own bind: a request that came in there is answered /metrics or 404."""
        self._scrape = None if settings.metrics_token is None else digest(settings.metrics_token.get_secret_value())
        self._security = TransportSecurityMiddleware(security)
        self.clients = clients
        """Replaced as a whole when the tokens file is re-read (SIGHUP)."""
        self._authenticate = bool(clients)
        self._max_sessions = settings.max_sessions_per_client
        self._sessions = None if settings.stateless else Sessions(settings.session_idle)
        """Who holds which session (None when stateless: there are none)."""
        self._path = settings.path
        """The MCP endpoint: only its requests open, use and end sessions."""
        self.authorization = authorization
        """The built-in authorization server's endpoints and pages (`SWARM_MCP_OAUTH=builtin`), or None."""
        self._oauth = ResourceServer.of(settings, None if authorization is None else authorization.authority)
        """With OAuth: our protected resource metadata, and the check of its access tokens."""
        self._plain_tokens = self._oauth is None or not settings.oauth_only
        """Whether a token of the tokens file stands for its client (`SWARM_MCP_OAUTH_ONLY` turns them off)."""
        self.answering = InFlight()
        """POSTs being answered: a shutdown waits for them, so that every last result is written."""
        self.refusals = RefusalLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if self._metrics_port is not None and (scope.get("server") or (None, None))[1] == self._metrics_port:
            await (await self._metrics_answer(Request(scope), own_bind=True))(scope, receive, send)
            return
        if scope["path"] == "/healthz" and scope["method"] in ("GET", "HEAD"):
            await JSONResponse({"status": "ok"})(scope, receive, send)
            return
        if self._oauth is not None and self._oauth.serves(scope["path"]) and scope["method"] in ("GET", "HEAD"):
            await self._oauth.metadata()(scope, receive, send)
            return
        if self.authorization is not None and self.authorization.serves(scope["path"]):
            await self.authorization.router(scope, receive, send)  # its own CSRF and client checks
            return
        request = Request(scope)
        refusal = await self._security.validate_request(request, is_post=False)
        if refusal is None and scope["path"] == "/metrics" and self._metrics_here:
            await (await self._metrics_answer(request, own_bind=False))(scope, receive, send)
            return
        if refusal is None and self._authenticate:
            client, refusal = await self._authenticated(request)
            if client is not None:
                claims = {"daily_tokens": client.daily_tokens, "max_jobs": client.max_jobs}
                scope["user"] = AuthenticatedUser(
                    AccessToken(token="", client_id=client.name, scopes=[], claims=claims)
                )
                refusal = self._session_refusal(request, client)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if self._sessions is not None and self._authenticate and scope["path"] == self._path:
            await self._counted(scope, receive, send, request)
        elif scope["method"] != "POST":  # a GET event stream stays open for the session's life
            await self._app(scope, receive, send)
        else:
            with self.answering.track():
                await self._app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, request: Request) -> None:
        """Serve a client's request, keeping `Sessions` up to date with what the SDK answered it."""
        assert self._sessions is not None  # noqa: S101 - the caller checked
        sessions = self._sessions
        session_id = request.headers.get("mcp-session-id")
        client: str = scope["user"].access_token.client_id
        status: list[int] = []
        opening = session_id is None and scope["method"] == "POST"  # counted since `_session_refusal`

        async def watch(message: Message) -> None:
            nonlocal session_id, opening
            if message["type"] == "http.response.start":
                status.append(message["status"])
                opened = dict(message.get("headers", [])).get(b"mcp-session-id")
                if session_id is None and opened is not None:
                    session_id = opened.decode()
                    sessions.opened(session_id, client, time.monotonic())
                    if opening:
                        sessions.opening_done(client)
                        opening = False
            await send(message)

        if session_id is not None:
            sessions.begin(session_id, client)
        try:
            if scope["method"] == "POST":
                with self.answering.track():
                    await self._app(scope, receive, watch)
            else:
                await self._app(scope, receive, watch)
        finally:
            if opening:
                sessions.opening_done(client)
            if session_id is not None:
                sessions.end(session_id, client, scope["method"], status[0] if status else None, time.monotonic())

    async def scrape(self) -> bytes:
        """The metrics, in Prometheus' text format (empty without them)."""
        if self._metrics is None:
            return b""
        sessions = {} if self._sessions is None else self._sessions.by_client(time.monotonic())
        return await self._metrics.render(self._state_of(), sessions, [admitted.client for admitted in self.clients])

    async def _metrics_answer(self, request: Request, *, own_bind: bool) -> Response:
        """The metrics, or why not. On their own bind (bind it where only monitoring reaches) anyone reads
        /metrics and nothing else; beside /mcp they are the operator's: the scrape token reads them, or
        anyone when the server has no client tokens (a loopback server of one person)."""
        if own_bind and request.url.path != "/metrics":
            return Response("only /metrics is served here\n", status_code=404)
        if request.method not in ("GET", "HEAD"):
            return Response("Method Not Allowed", status_code=405, headers={"Allow": "GET, HEAD"})
        if own_bind or not self._authenticate:
            return Response(await self.scrape(), media_type=CONTENT_TYPE)
        if self._scrape is None:
            return Response("Not Found", status_code=404)  # SWARM_MCP_METRICS_TOKEN unset: not served here
        presented = _bearer(request)
        if presented is not None and hmac.compare_digest(digest(presented), self._scrape):
            return Response(await self.scrape(), media_type=CONTENT_TYPE)
        return Response(
            "The metrics need the scrape token (SWARM_MCP_METRICS_TOKEN)",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="swarm-inference-mcp metrics"'},
        )

    async def _authenticated(self, request: Request) -> tuple[Client | None, Response | None]:
        """The client a request's bearer token stands for (a token of the tokens file, or with OAuth an
        access token of the issuer's), or the refusal."""
        presented = _bearer(request)
        client = authenticate(self.clients, presented) if presented is not None and self._plain_tokens else None
        if client is not None:
            return client, None
        address = request.client.host if request.client else "an unknown address"
        if self._oauth is not None and presented:
            verdict = await self._oauth.verify(presented, self.clients, address)
            return verdict.client, verdict.refusal
        self.refusals.refused(address, time.monotonic())
        if self._oauth is not None:
            return None, self._oauth.challenge()
        unknown = Response(
            "Missing or invalid bearer token",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="swarm-inference-mcp"'},
        )
        return None, unknown

    def _session_refusal(self, request: Request, client: Client) -> Response | None:
        """429 for a new session past the client's limit; other clients are not affected. A request let in
        that may open one is counted at once (no await between the check and the count)."""
        if (
            self._sessions is None
            or request.method != "POST"
            or "mcp-session-id" in request.headers
            or request.scope["path"] != self._path
        ):
            return None
        limit = client.max_sessions or self._max_sessions
        held = self._sessions.held(client.name, time.monotonic())
        if held < limit:
            self._sessions.opening(client.name)
            return None
        message = (
            f"client {client.name} already holds {held} open sessions, its limit ({limit}); end one "
            "(HTTP DELETE) or let an idle one expire (SWARM_MCP_SESSION_IDLE)"
        )
        body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": message}}
        return JSONResponse(body, status_code=429)


def _bearer(request: Request) -> str | None:
    """The token of the request's `Authorization: Bearer` header, or None without one."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return presented.strip() if scheme.lower() == "bearer" else None
