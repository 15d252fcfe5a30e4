"""The built-in OAuth 2.1 authorization server (`SWARM_MCP_OAUTH=builtin`), for a team without one.

A connector host (Claude.ai, Claude Desktop, ChatGPT) finds it from our protected resource metadata,
identifies itself by a client ID metadata document (its `client_id` is an https URL whose document
we fetch) or by dynamic registration (RFC 7591), and sends the person to `/authorize`. There the
person signs in once on a page of ours with the gateway token of their tokens-file line, sees a
consent page naming the client and the host it returns to, and approves; the host gets a code
(60 s, single-use, PKCE S256 only, with `iss` per RFC 9207) and exchanges it for a short-lived access
token and a refresh token that rotates on every use. The access token stands for that tokens-file
client at `/mcp`: same limits, budget, jobs and tasks as its gateway token.

The protocol endpoints are the SDK's handlers (`mcp.server.auth.handlers`) over `Authority`, our
`OAuthAuthorizationServerProvider`; the pages, the CIMD fetch and the grants are ours. Everything
handed out is kept hashed (`grants`). The pages are plain HTML, no script, under a CSP that allows
nothing else; forms carry a double-submit CSRF token; failed sign-ins are limited per address and
per client. No secret reaches a log line: sign-in failures name the client and the address only.
"""

from __future__ import annotations

import base64
import html
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import anyio
import httpx2
from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.handlers.metadata import MetadataHandler
from mcp.server.auth.handlers.register import RegistrationHandler
from mcp.server.auth.handlers.revoke import RevocationHandler
from mcp.server.auth.handlers.token import TokenHandler
from mcp.server.auth.middleware.client_auth import AuthenticationError, ClientAuthenticator
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    RegistrationError,
    TokenError,
)
from mcp.server.auth.routes import build_metadata, cors_middleware
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken
from pydantic import AnyHttpUrl, AnyUrl
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route, Router

from swarm_inference_mcp.server.clients import Admitted, Client, authenticate
from swarm_inference_mcp.server.config import Settings
from swarm_inference_mcp.server.gateway.grants import Grant, Grants, digest

log = logging.getLogger(__name__)

CODE_S = 60
"""An authorization code's life."""
SIGN_IN_S = 600
"""How long a person has to sign in and approve once a host sent them to `/authorize`."""
REGISTERED_S = 86_400
"""How long a client registered here is kept before it signs anyone in."""
DOCUMENT_BYTES = 64 * 1024
"""The largest client ID metadata document read."""
DOCUMENT_S = 5.0
"""The longest a client ID metadata document's fetch may take."""
DOCUMENT_KEPT_S = 300.0
"""How long a fetched client ID metadata document is reused."""
PER_MINUTE = {"wrong token from": 10, "wrong token for": 50, "registration from": 20, "authorization from": 60}
"""What one address (or one OAuth client) may do per minute before it gets 429: wrong gateway tokens
on the sign-in page, client registrations, authorization requests (each kept for `SIGN_IN_S`)."""
CSRF_COOKIE = "swarm_mcp_csrf"
PATHS = frozenset({"/.well-known/oauth-authorization-server", "/authorize", "/token", "/register", "/revoke"})
PAGES = frozenset({"/oauth/sign-in", "/oauth/consent"})


class Authority:
    """Our `OAuthAuthorizationServerProvider`: who the clients are, and every grant's life."""

    def __init__(
        self, settings: Settings, grants: Grants, clients: Callable[[], list[Admitted]], http: httpx2.AsyncClient
    ) -> None:
        assert settings.public_url is not None  # noqa: S101 - the settings' validator demands it
        self.issuer = settings.public_url.rstrip("/")
        self.resource = self.issuer + settings.path
        self.scope = settings.oauth_scope
        self._access_s = settings.oauth_access_ttl
        self._refresh_s = settings.oauth_refresh_ttl
        self._private = settings.oauth_private_clients
        self._grants = grants
        self._clients = clients
        self._http = http
        self._documents: dict[str, tuple[float, OAuthClientInformationFull]] = {}

    # Clients: a client ID metadata document's URL, or one registered here.

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        if client_id.startswith("https://"):
            kept = self._documents.get(client_id)
            if kept is not None and kept[0] > time.monotonic():
                return kept[1]
            try:
                client = await self._fetch_document(client_id)
            except (OSError, ValueError, httpx2.HTTPError, TimeoutError) as exc:
                log.warning("refused the client id %s: %s", client_id[:200], str(exc)[:200])
                return None
            if len(self._documents) > 1000:
                self._documents.clear()
            self._documents[client_id] = (time.monotonic() + DOCUMENT_KEPT_S, client)
            return client
        grant = await self._grants.get(digest("client", client_id))
        return None if grant is None else OAuthClientInformationFull.model_validate(grant.data)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        for uri in client_info.redirect_uris or []:
            _check_redirect_uri(uri)
        kept = client_info.model_copy()
        if kept.client_secret is not None:
            kept.client_secret = digest("secret", kept.client_secret)
        if kept.scope is None and self.scope:
            kept.scope = self.scope
        await self._grants.put(
            digest("client", kept.client_id or ""),
            Grant(
                kind="client",
                family="client:" + (kept.client_id or ""),
                expires_at=time.time() + REGISTERED_S,  # then as long as a refresh token it holds
                data=kept.model_dump(),
            ),
        )

    async def _fetch_document(self, url: str) -> OAuthClientInformationFull:
        """A client ID metadata document: https, no redirect followed, from a public address (unless
        `SWARM_MCP_OAUTH_PRIVATE_CLIENTS`), at most `DOCUMENT_BYTES` in `DOCUMENT_S`, naming itself."""
        parts = urlsplit(url)
        if not parts.hostname or parts.username or parts.password or parts.fragment or parts.path in ("", "/"):
            raise ValueError("a client id URL needs a host and a path, and no user, password or fragment")
        port = parts.port or 443
        with anyio.fail_after(DOCUMENT_S):
            addresses = {info[4][0] for info in await anyio.getaddrinfo(parts.hostname, port)}
            for address in sorted(addresses):
                if not self._private and not ipaddress.ip_address(address.split("%")[0]).is_global:
                    raise ValueError(f"its host resolves to {address}, a private or loopback address")
            address = sorted(addresses)[0]
            pinned = f"https://{f'[{address}]' if ':' in address else address}:{port}{parts.path}"
            if parts.query:
                pinned += "?" + parts.query
            async with self._http.stream(
                "GET",
                pinned,
                headers={"Host": parts.netloc, "Accept": "application/json"},
                extensions={"sni_hostname": parts.hostname},
                follow_redirects=False,
            ) as answer:
                if answer.status_code != 200:
                    raise ValueError(f"fetching its document was answered {answer.status_code}")
                body = b""
                async for chunk in answer.aiter_bytes():
                    body += chunk
                    if len(body) > DOCUMENT_BYTES:
                        raise ValueError(f"its document is larger than {DOCUMENT_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict) or document.get("client_id") != url:
            raise ValueError("its document does not name this URL as its client_id")
        if document.get("token_endpoint_auth_method", "none") != "none" or "client_secret" in document:
            raise ValueError("a client ID metadata document's client is public: token_endpoint_auth_method none")
        client = OAuthClientInformationFull.model_validate(
            {
                "client_id": url,
                "client_name": document.get("client_name"),
                "client_uri": document.get("client_uri"),
                "redirect_uris": document.get("redirect_uris"),
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "scope": self.scope,
            }
        )
        if not client.redirect_uris:
            raise ValueError("its document names no redirect_uris")
        for uri in client.redirect_uris:
            _check_redirect_uri(uri)
        return client

    # The authorization request: the person signs in and consents on our pages.

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        if params.resource is not None and params.resource.rstrip("/") != self.resource:
            raise AuthorizeError("invalid_target", f"This server issues tokens for {self.resource} only")
        request = secrets.token_urlsafe(24)
        data = {"client_id": client.client_id, "params": params.model_dump(mode="json")}
        family = secrets.token_urlsafe(16)
        await self._grants.put(
            digest("request", request),
            Grant(kind="request", family=family, expires_at=time.time() + SIGN_IN_S, data=data),
        )
        return f"{self.issuer}/oauth/sign-in?{urlencode({'request': request})}"

    async def pending(self, request: str) -> tuple[Grant, OAuthClientInformationFull] | None:
        """A sign-in in progress and its client, or None (unknown, expired or finished)."""
        grant = await self._grants.get(digest("request", request))
        if grant is None or grant.used:
            return None
        client = await self.get_client(grant.data["client_id"])
        return None if client is None else (grant, client)

    async def signed_in(self, request: str, grant: Grant, client: Client) -> str:
        """Record who signed in for a pending request; the consent ticket that approves it."""
        ticket = secrets.token_urlsafe(24)
        data = {**grant.data, "subject": client.name, "ticket": digest("ticket", ticket)}
        await self._grants.put(digest("request", request), grant.model_copy(update={"data": data}))
        return ticket

    async def consented(self, request: str, ticket: str, approve: bool) -> str | None:
        """Where the browser goes once the person decided: the host's redirect URI with a code (or
        `access_denied`), `state` and `iss`; None when the request or ticket is not valid (any more)."""
        key = digest("request", request)
        grant = await self._grants.get(key)
        if grant is None or grant.used or grant.data.get("ticket") != digest("ticket", ticket):
            return None
        if not (await self._grants.use(key))[1]:
            return None  # approved or denied meanwhile, in another tab
        params = AuthorizationParams.model_validate(grant.data["params"])
        answer: dict[str, str | None] = {"state": params.state, "iss": self.issuer}
        if approve:
            code = secrets.token_urlsafe(32)
            data = {**grant.data, "ticket": None}
            expires = time.time() + CODE_S
            issued = Grant(kind="code", family=grant.family, expires_at=expires, data=data)
            await self._grants.put(digest("code", code), issued)
            answer["code"] = code
        else:
            answer["error"] = "access_denied"
        query = urlencode({key: value for key, value in answer.items() if value is not None})
        redirect = str(params.redirect_uri)
        return redirect + ("&" if "?" in redirect else "?") + query

    # Codes and tokens.

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        grant = await self._grants.get(digest("code", authorization_code))
        if grant is None:
            return None
        if grant.used:
            await self._reused(grant, "an authorization code was used twice")
            return None
        params = grant.data["params"]
        return AuthorizationCode(
            code=authorization_code,
            scopes=params["scopes"] or ([self.scope] if self.scope else []),
            expires_at=grant.expires_at,
            client_id=grant.data["client_id"],
            code_challenge=params["code_challenge"],
            redirect_uri=AnyUrl(params["redirect_uri"]),
            redirect_uri_provided_explicitly=params["redirect_uri_provided_explicitly"],
            resource=self.resource,
            subject=grant.data["subject"],
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        grant, first = await self._grants.use(digest("code", authorization_code.code))
        if grant is None or not first:
            if grant is not None:
                await self._reused(grant, "an authorization code was used twice")
            raise TokenError("invalid_grant", "authorization code does not exist")
        data = grant.data
        return await self._issue(grant.family, data["client_id"], data["subject"], authorization_code.scopes)

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> RefreshToken | None:
        grant = await self._grants.get(digest("refresh", refresh_token))
        if grant is None:
            return None
        if grant.used:
            await self._reused(grant, "a refresh token was used after it was rotated")
            return None
        return RefreshToken(
            token=refresh_token,
            client_id=grant.data["client_id"],
            scopes=grant.data["scopes"],
            expires_at=int(grant.expires_at),
            resource=self.resource,
            subject=grant.data["subject"],
        )

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        grant, first = await self._grants.use(digest("refresh", refresh_token.token))
        if grant is None or not first:
            if grant is not None:
                await self._reused(grant, "a refresh token was used after it was rotated")
            raise TokenError("invalid_grant", "refresh token does not exist")
        return await self._issue(grant.family, grant.data["client_id"], grant.data["subject"], scopes)

    async def load_access_token(self, token: str) -> AccessToken | None:
        grant = await self._grants.get(digest("access", token))
        if grant is None:
            return None
        return AccessToken(
            token=token,
            client_id=grant.data["client_id"],
            scopes=grant.data["scopes"],
            expires_at=int(grant.expires_at),
            resource=self.resource,
            subject=grant.data["subject"],
        )

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        kind = "access" if isinstance(token, AccessToken) else "refresh"
        grant = await self._grants.get(digest(kind, token.token))
        if grant is not None:
            await self._grants.revoke(grant.family)

    async def exchange_identity_assertion(self, client: OAuthClientInformationFull, params: Any) -> OAuthToken:
        raise TokenError("unsupported_grant_type", "identity assertions are not accepted here")

    async def _issue(self, family: str, client_id: str, subject: str, scopes: list[str]) -> OAuthToken:
        access, refresh, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time()
        registered = await self._grants.get(digest("client", client_id))
        if registered is not None:  # a client registered here lives as long as a refresh token it holds
            renewed = registered.model_copy(update={"expires_at": now + self._refresh_s})
            await self._grants.put(digest("client", client_id), renewed)
        data = {"client_id": client_id, "subject": subject, "scopes": scopes}
        await self._grants.put(
            digest("access", access), Grant(kind="access", family=family, expires_at=now + self._access_s, data=data)
        )
        await self._grants.put(
            digest("refresh", refresh),
            Grant(kind="refresh", family=family, expires_at=now + self._refresh_s, data=data),
        )
        return OAuthToken(
            access_token=access,
            expires_in=self._access_s,
            scope=" ".join(scopes) or None,
            refresh_token=refresh,
        )

    async def _reused(self, grant: Grant, what: str) -> None:
        log.warning("%s (client %s, for %s): every token of that sign-in is revoked", what,
                    str(grant.data.get("client_id"))[:200], grant.data.get("subject"))  # fmt: skip
        await self._grants.revoke(grant.family)


def _check_redirect_uri(uri: AnyUrl) -> None:
    """Redirect URIs a client may register: https, http on loopback only, or an app's own scheme; no fragment."""
    if uri.fragment is not None:
        raise RegistrationError("invalid_redirect_uri", "a redirect URI may not have a fragment")
    if uri.scheme == "http" and uri.host not in ("127.0.0.1", "localhost", "[::1]", "::1"):
        raise RegistrationError("invalid_redirect_uri", "http redirect URIs are allowed on loopback only")
    if uri.scheme in ("javascript", "data", "file", "vbscript"):
        raise RegistrationError("invalid_redirect_uri", f"{uri.scheme}: is not a redirect URI")


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
        authenticator = HashedSecrets(authority)
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
                Route("/revoke", cors_middleware(RevocationHandler(authority, authenticator).handle,
                      ["POST", "OPTIONS"]), methods=["POST", "OPTIONS"]),
                Route("/oauth/sign-in", self.sign_in, methods=["GET", "POST"]),
                Route("/oauth/consent", self.consent, methods=["POST"]),
            ]
        )  # fmt: skip

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
