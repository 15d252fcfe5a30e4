"""The built-in authorization server's routes: the SDK's protocol endpoints over `Authority`, and our two
pages, where a person signs in with their gateway token and approves a host.

The pages are plain HTML, no script, under a CSP that allows nothing else (a consent form may post
only here and return only to the client's redirect URI); each form carries a double-submit CSRF
token (a cookie of this site and the same value in the form), and the consent form a single-use
ticket that only the signed-in person saw. What can be sent without end is limited per address
(`PER_MINUTE`), counted per instance. No secret reaches a log line: a failed sign-in names the
client and the address only.
"""

from __future__ import annotations

import base64
import html
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.handlers.metadata import MetadataHandler
from mcp.server.auth.handlers.register import RegistrationHandler
from mcp.server.auth.handlers.token import TokenHandler
from mcp.server.auth.middleware.client_auth import AuthenticationError, ClientAuthenticator
from mcp.server.auth.routes import build_metadata, cors_middleware
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route, Router

from swarm_inference_mcp.server.clients import Admitted, Client, authenticate
from swarm_inference_mcp.server.gateway.authserver import Authority
from swarm_inference_mcp.server.gateway.grants import Grant, digest

log = logging.getLogger(__name__)

PER_MINUTE = {"wrong token from": 10, "wrong token for": 50, "registration from": 20, "authorization from": 60}
"""What one address (or one OAuth client) may do per minute before it gets 429: wrong gateway tokens
on the sign-in page, client registrations, authorization requests (each kept for `SIGN_IN_S`)."""
CSRF_COOKIE = "swarm_mcp_csrf"
PATHS = frozenset({"/.well-known/oauth-authorization-server", "/authorize", "/token", "/register", "/revoke"})
PAGES = frozenset({"/oauth/sign-in", "/oauth/consent"})


class HashedSecrets(ClientAuthenticator):
    """The SDK's client authentication, comparing the SHA-256 of a presented secret with the one kept."""

    async def authenticate_request(self, request: Request) -> OAuthClientInformationFull:
        form = await request.form()
        client_id = form.get("client_id")
        client = await self.provider.get_client(client_id) if isinstance(client_id, str) else None
        if client is None:
            raise AuthenticationError("Invalid client_id")
        if client.client_secret is None:
            return client
        presented = form.get("client_secret")
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                named, _, presented = base64.b64decode(credentials).decode().partition(":")
            except ValueError:
                raise AuthenticationError("Invalid Basic authentication header") from None
            if unquote(named) != client_id:
                raise AuthenticationError("Client ID mismatch in Basic auth")
            presented = unquote(presented)
        if not isinstance(presented, str) or not secrets.compare_digest(
            digest("secret", presented), client.client_secret
        ):
            raise AuthenticationError("Invalid client_secret")
        return client


class Throttle:
    """Events counted per (kind, who) in one-minute windows, each kind with its limit (`PER_MINUTE`).
    A refusal is logged once per window, so a flood cannot fill the log."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}
        self._said: dict[tuple[str, str], float] = {}

    def refuses(self, *keys: tuple[str, str]) -> bool:
        """Whether one of `keys` is past its limit this minute (said in the log the first time)."""
        now = time.monotonic()
        for key in keys:
            start, count = self._windows.get(key, (now, 0))
            if now - start < 60 and count >= PER_MINUTE[key[0]]:
                if self._said.get(key) != start:
                    self._said[key] = start
                    log.warning("%s %s: over %d a minute; refused until the minute is over", *key, PER_MINUTE[key[0]])
                return True
        return False

    def count(self, *keys: tuple[str, str]) -> None:
        now = time.monotonic()
        for key in keys:
            start, count = self._windows.get(key, (now, 0))
            self._windows[key] = (start, count + 1) if now - start < 60 else (now, 1)
        if len(self._windows) > 100_000:
            self._windows = {key: value for key, value in self._windows.items() if now - value[0] < 60}
            self._said = {key: start for key, start in self._said.items() if key in self._windows}


class AuthorizationServer:
    """The routes of the built-in authorization server: the SDK's endpoints and our two pages."""

    def __init__(self, authority: Authority, clients: Callable[[], list[Admitted]]) -> None:
        self.authority = authority
        self._clients = clients
        self._throttle = Throttle()
        self._secure = authority.issuer.startswith("https://")
        scopes = [authority.scope] if authority.scope else None
        registration = ClientRegistrationOptions(enabled=True, valid_scopes=scopes, default_scopes=scopes)
        built = build_metadata(AnyHttpUrl(authority.issuer), None, registration, RevocationOptions(enabled=True))
        metadata = OAuthMetadata.model_validate(
            {
                **built.model_dump(mode="json", exclude_none=True),
                "issuer": authority.issuer,  # as the protected resource metadata names it: no "/" added
                "client_id_metadata_document_supported": True,
                "authorization_response_iss_parameter_supported": True,
                "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
            }
        )
        authenticator = self._authenticator = HashedSecrets(authority)
        self.router = Router(
            [  # the endpoints a host's code calls allow any origin (browser-based clients); the pages do not
                Route("/.well-known/oauth-authorization-server", cors_middleware(MetadataHandler(metadata).handle,
                      ["GET", "OPTIONS"]), methods=["GET", "OPTIONS"]),
                Route("/authorize", self._throttled("authorization from", AuthorizationHandler(authority).handle),
                      methods=["GET", "POST"]),
                Route("/token", cors_middleware(TokenHandler(authority, authenticator).handle, ["POST", "OPTIONS"]),
                      methods=["POST", "OPTIONS"]),
                Route("/register", cors_middleware(self._throttled("registration from",
                      RegistrationHandler(authority, registration).handle), ["POST", "OPTIONS"]),
                      methods=["POST", "OPTIONS"]),
                Route("/revoke", cors_middleware(self.revoke, ["POST", "OPTIONS"]), methods=["POST", "OPTIONS"]),
                Route("/oauth/sign-in", self.sign_in, methods=["GET", "POST"]),
                Route("/oauth/consent", self.consent, methods=["POST"]),
            ]
        )  # fmt: skip

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: a client revokes one of its tokens, and with it that sign-in. A public client sends its
        client_id alone (the SDK's own handler wants a client_secret field even then)."""
        try:
            client = await self._authenticator.authenticate_request(request)
        except AuthenticationError as exc:
            return JSONResponse({"error": "invalid_client", "error_description": exc.message}, status_code=401)
        token = (await request.form()).get("token")
        if not isinstance(token, str) or not token:
            return JSONResponse({"error": "invalid_request", "error_description": "token is required"}, status_code=400)
        await self.authority.revoke_for(client.client_id or "", token)
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    def _throttled(
        self, kind: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """`handler`, answering 429 to an address past its `PER_MINUTE[kind]`."""

        async def throttled(request: Request) -> Response:
            key = (kind, request.client.host if request.client else "unknown")
            if request.method != "OPTIONS":
                if self._throttle.refuses(key):
                    return Response("Too many requests; wait a minute", status_code=429, headers={"Retry-After": "60"})
                self._throttle.count(key)
            return await handler(request)

        return throttled

    @staticmethod
    def serves(path: str) -> bool:
        return path in PATHS or path in PAGES

    async def sign_in(self, request: Request) -> Response:
        """GET: the sign-in form. POST: check the gateway token; the consent page, or the form again."""
        form = await request.form() if request.method == "POST" else request.query_params
        pending_id = str(form.get("request", ""))
        pending = await self.authority.pending(pending_id) if pending_id else None
        if pending is None:
            return _page("Sign-in expired", "<p>This sign-in is unknown or has expired. Start again from your "
                         "assistant.</p>", status=400)  # fmt: skip
        grant, client = pending
        if request.method == "GET":
            return self._sign_in_page(pending_id, client, csrf=secrets.token_urlsafe(24))
        csrf = _csrf(request, form)
        if csrf is None:
            return _page("Refused", "<p>The form did not come from this page. Start again.</p>", status=403)
        address = request.client.host if request.client else "unknown"
        client_id = client.client_id or ""
        tries = (("wrong token from", address), ("wrong token for", client_id))
        if self._throttle.refuses(*tries):
            return _page("Too many attempts", "<p>Too many wrong tokens. Wait a minute.</p>", status=429,
                         headers={"Retry-After": "60"})  # fmt: skip
        who = authenticate(self._clients(), str(form.get("token", "")))
        if who is None:
            self._throttle.count(*tries)
            log.warning("sign-in failed for %s from %s: not a gateway token", client_id[:200], address)
            return self._sign_in_page(pending_id, client, csrf, wrong=True)
        ticket = await self.authority.signed_in(pending_id, grant, who)
        log.info("%s signed in for %s from %s", who.name, client_id[:200], address)
        return self._consent_page(pending_id, ticket, client, grant, who, csrf)

    async def consent(self, request: Request) -> Response:
        form = await request.form()
        if _csrf(request, form) is None:
            return _page("Refused", "<p>The form did not come from this page. Start again.</p>", status=403)
        target = await self.authority.consented(
            str(form.get("request", "")), str(form.get("ticket", "")), form.get("decision") == "approve"
        )
        if target is None:
            return _page("Sign-in expired", "<p>This sign-in is unknown, finished or expired. Start again.</p>",
                         status=400)  # fmt: skip
        return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})

    def _sign_in_page(
        self, request: str, client: OAuthClientInformationFull, csrf: str, *, wrong: bool = False
    ) -> Response:
        name = html.escape(client.client_name or client.client_id or "")
        problem = '<p class="problem">That is not a token of this gateway.</p>' if wrong else ""
        body = f"""<p><b>{name}</b> asks to use swarm-inference-mcp for you.</p>{problem}
<form method="post" action="/oauth/sign-in">
<input type="hidden" name="request" value="{html.escape(request)}">
<input type="hidden" name="csrf" value="{html.escape(csrf)}">
<label>Your gateway token <input type="password" name="token" autocomplete="off" autofocus required></label>
<button type="submit">Sign in</button></form>"""
        response = _page("Sign in", body, status=401 if wrong else 200)
        response.set_cookie(CSRF_COOKIE, csrf, path="/oauth", httponly=True, samesite="strict", secure=self._secure)
        return response

    def _consent_page(  # noqa: PLR0917 - one page, everything it shows
        self, request: str, ticket: str, client: OAuthClientInformationFull, grant: Grant, who: Client, csrf: str
    ) -> Response:
        redirect = urlsplit(str(grant.data["params"]["redirect_uri"]))
        name = html.escape(client.client_name or "An application")
        body = f"""<p>Signed in as <b>{html.escape(who.name)}</b>.</p>
<p><b>{name}</b> (<code>{html.escape(client.client_id or "")}</code>) asks to ask the swarms as you, within
your limits and budget. If you approve, you go back to <b>{html.escape(redirect.scheme)}://{html.escape(redirect.netloc)}</b>.</p>
<form method="post" action="/oauth/consent">
<input type="hidden" name="request" value="{html.escape(request)}">
<input type="hidden" name="ticket" value="{html.escape(ticket)}">
<input type="hidden" name="csrf" value="{html.escape(csrf)}">
<button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button></form>"""
        origin = f"{redirect.scheme}://{redirect.netloc}" if redirect.netloc else f"{redirect.scheme}:"
        return _page("Approve", body, form_action=f"'self' {origin}")


def _csrf(request: Request, form: Any) -> str | None:
    """The form's CSRF token when it matches the cookie the page set (double submit), else None."""
    cookie, field = request.cookies.get(CSRF_COOKIE), form.get("csrf")
    if not cookie or not isinstance(field, str) or not secrets.compare_digest(cookie, field):
        return None
    return cookie


def _page(
    title: str, body: str, *, status: int = 200, form_action: str = "'self'", headers: dict[str, str] | None = None
) -> Response:
    document = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{title} · swarm-inference-mcp</title><meta name="viewport" content="width=device-width">
<style>body{{font:16px system-ui,sans-serif;max-width:32rem;
margin:3rem auto;padding:0 1rem}}input{{display:block;width:100%;margin:.5rem 0 1rem;padding:.4rem}}
button{{padding:.4rem 1rem;margin-right:.5rem}}.problem{{color:#b00}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""
    policy = f"default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; frame-ancestors 'none'"
    return Response(
        document,
        status_code=status,
        media_type="text/html",
        headers={
            "Content-Security-Policy": policy,
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            **(headers or {}),
        },
    )
