"""The built-in OAuth 2.1 authorization server (`SWARM_MCP_OAUTH=builtin`), for a team without one.

A connector host (Claude.ai, Claude Desktop, ChatGPT) finds it from our protected resource metadata,
identifies itself by a client ID metadata document (its `client_id` is an https URL whose document
we fetch) or by dynamic registration (RFC 7591), and sends the person to `/authorize`. There the
person signs in once on a page of ours with the gateway token of their tokens-file line, sees a
consent page naming the client and the host it returns to, and approves; the host gets a code
(60 s, single-use, PKCE S256 only, with `iss` per RFC 9207) and exchanges it for a short-lived access
token and a refresh token that rotates on every use. The access token stands for that tokens-file
client at `/mcp`: same limits, budget, jobs and tasks as its gateway token.

`Authority` is our `OAuthAuthorizationServerProvider`: who the clients are (a client ID metadata
document fetched safely, or one registered here) and every grant's life, kept hashed (`grants`).
The protocol endpoints are the SDK's handlers over it, routed with our pages in `signin`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import ssl
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
import httpx2
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    RegistrationError,
    TokenError,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyUrl

from swarm_inference_mcp.server.clients import Client
from swarm_inference_mcp.server.config import Settings, is_loopback
from swarm_inference_mcp.server.gateway.grants import Grant, Grants, digest

log = logging.getLogger(__name__)

CODE_S = 60
"""An authorization code's life."""
SIGN_IN_S = 600
"""How long a person has to sign in and approve once a host sent them to `/authorize`."""
REUSED = {
    "code": ("authorization code", "an authorization code was used twice"),
    "refresh": ("refresh token", "a refresh token was used after it was rotated"),
}
"""Per kind of single-use grant: what the token endpoint calls it, and what the log says of its reuse."""
REGISTERED_S = 86_400
"""How long a client registered here is kept before it signs anyone in."""
DOCUMENT_BYTES = 64 * 1024
"""The largest client ID metadata document read."""
DOCUMENT_S = 5.0
"""The longest a client ID metadata document's fetch may take."""
DOCUMENT_KEPT_S = 300.0
"""How long a fetched client ID metadata document is reused."""


class Authority:
    """Our `OAuthAuthorizationServerProvider`: who the clients are, and every grant's life."""

    def __init__(self, settings: Settings, grants: Grants) -> None:
        assert settings.public_url is not None  # noqa: S101 - the settings' validator demands it
        self.issuer = settings.public_url.rstrip("/")
        self.resource = self.issuer + settings.path
        self.scope = settings.oauth_scope
        self._access_s = settings.oauth_access_ttl
        self._refresh_s = settings.oauth_refresh_ttl
        self._private = settings.oauth_private_clients
        self._grants = grants
        # No proxy from the environment: a client's document is fetched from the address checked, never
        # through another; the CAs are the system's, or SSL_CERT_FILE / SSL_CERT_DIR when set.
        cas = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE"), capath=os.environ.get("SSL_CERT_DIR"))
        self._http = httpx2.AsyncClient(timeout=DOCUMENT_S, follow_redirects=False, trust_env=False, verify=cas)
        self._documents: dict[str, tuple[float, OAuthClientInformationFull]] = {}

    async def aclose(self) -> None:
        """The server stops: let go of the documents' HTTP client and of the grants' store."""
        await self._http.aclose()
        await self._grants.aclose()

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
        grant = await self._unused("code", authorization_code)
        if grant is None:
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
        grant = await self._spend("code", authorization_code.code)
        data = grant.data
        return await self._issue(grant.family, data["client_id"], data["subject"], authorization_code.scopes)

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> RefreshToken | None:
        grant = await self._unused("refresh", refresh_token)
        return None if grant is None else RefreshToken(token=refresh_token, **self._token_fields(grant))

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        grant = await self._spend("refresh", refresh_token.token)
        return await self._issue(grant.family, grant.data["client_id"], grant.data["subject"], scopes)

    async def load_access_token(self, token: str) -> AccessToken | None:
        grant = await self._grants.get(digest("access", token))
        return None if grant is None else AccessToken(token=token, **self._token_fields(grant))

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        await self.revoke_for(token.client_id, token.token)

    async def revoke_for(self, client_id: str, token: str) -> None:
        """Revoke the sign-in an access or refresh token of `client_id`'s belongs to (RFC 7009: a token of
        another client, or an unknown one, changes nothing and is not told apart)."""
        for kind in ("access", "refresh"):
            grant = await self._grants.get(digest(kind, token))
            if grant is not None and grant.data["client_id"] == client_id:
                await self._grants.revoke(grant.family)
                return

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

    def _token_fields(self, grant: Grant) -> dict[str, Any]:
        """What an access or refresh token of ours says, beside itself."""
        data = grant.data
        return {"client_id": data["client_id"], "scopes": data["scopes"], "expires_at": int(grant.expires_at),
                "resource": self.resource, "subject": data["subject"]}  # fmt: skip

    async def _unused(self, kind: str, secret: str) -> Grant | None:
        """The code or refresh token `secret` while it is unused; one used already revokes its sign-in."""
        grant = await self._grants.get(digest(kind, secret))
        if grant is not None and grant.used:
            await self._reused(grant, kind)
            return None
        return grant

    async def _spend(self, kind: str, secret: str) -> Grant:
        """Mark the code or refresh token `secret` used: only the first of racing exchanges gets it."""
        grant, first = await self._grants.use(digest(kind, secret))
        if grant is not None and first:
            return grant
        if grant is not None:
            await self._reused(grant, kind)
        raise TokenError("invalid_grant", f"{REUSED[kind][0]} does not exist")

    async def _reused(self, grant: Grant, kind: str) -> None:
        log.warning("%s (client %s, for %s): every token of that sign-in is revoked", REUSED[kind][1],
                    str(grant.data.get("client_id"))[:200], grant.data.get("subject"))  # fmt: skip
        await self._grants.revoke(grant.family)


def _check_redirect_uri(uri: AnyUrl) -> None:
    """Redirect URIs a client may register: https, http on loopback only, or an app's own scheme; no fragment."""
    if uri.fragment is not None:
        raise RegistrationError("invalid_redirect_uri", "a redirect URI may not have a fragment")
    if uri.scheme == "http" and not is_loopback(uri.host or ""):
        raise RegistrationError("invalid_redirect_uri", "http redirect URIs are allowed on loopback only")
    if uri.scheme in ("javascript", "data", "file", "vbscript"):
        raise RegistrationError("invalid_redirect_uri", f"{uri.scheme}: is not a redirect URI")
