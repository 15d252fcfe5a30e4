"""The gateway as an OAuth 2.1 resource server, trusting the team's identity provider.

With `SWARM_MCP_OAUTH_ISSUER` (and `SWARM_MCP_PUBLIC_URL`, the URL hosts reach), a connector host
(Claude.ai, Claude Desktop, ChatGPT) finds where to send a person to sign in from our protected
resource metadata (RFC 9728, at `/.well-known/oauth-protected-resource/mcp`, named in every 401's
`WWW-Authenticate`), and comes back with an access token from that provider. A token is accepted
when it is a JWT signed by one of the issuer's keys (its JWKS, discovered from its metadata, cached,
fetched again for an unknown `kid`; the algorithm pinned to the key's, never `none`), issued by that
issuer, for this resource (`aud`), unexpired, and carrying the required scope if one is set. Its
claim `SWARM_MCP_OAUTH_CLAIM` (`sub` by default) names the person, and a line of the tokens file
names the identity it admits (`alice identity:alice@example.com`): the same client as a bearer
token, with its limits, budget, jobs and tasks. A valid token of an identity no line names gets 403,
and one line in the log naming the claim's value. A token that is no JWT (opaque) is asked about
at the issuer's introspection endpoint (RFC 7662) when the gateway has credentials there
(`SWARM_MCP_OAUTH_INTROSPECTION_CLIENT` and `_SECRET`), and held to the same checks; an active answer
is reused until the token expires, at most `INTROSPECTED_S`.

The signature checks are PyJWT's (a dependency of the MCP SDK); nothing here verifies one by hand.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import anyio
import jwt
from starlette.responses import JSONResponse, Response

from swarm_inference_mcp.server.clients import Admitted, Client, digest
from swarm_inference_mcp.server.config import Settings
from swarm_inference_mcp.server.gateway.authserver import Authority

log = logging.getLogger(__name__)

WELL_KNOWN = "/.well-known/oauth-protected-resource"
METADATA_BYTES = 1 << 20
"""The most of an issuer's metadata read."""
KEYS_COOLDOWN_S = 5.0
"""At most one fetch of the issuer's keys this often for tokens with an unknown `kid`."""
LEEWAY_S = 30
"""Clock skew allowed on `exp`, `nbf` and `iat`."""
INTROSPECTED_S = 60.0
"""How long an introspected token's answer is reused (never past its `exp`)."""
INTROSPECTED_MAX = 10_000
"""Most introspection answers kept."""


@dataclass(frozen=True)
class Verdict:
    """What a token is: the client it stands for, or the response that refuses it."""

    client: Client | None = None
    refusal: Response | None = None


class ResourceServer:
    """Our protected resource metadata, and the check of the issuer's access tokens."""

    def __init__(
        self,
        public_url: str,
        path: str,
        issuer: str,
        *,
        claim: str,
        scope: str | None,
        introspection: tuple[str, str] | None = None,
        authority: Authority | None = None,
    ) -> None:
        self.resource = public_url.rstrip("/") + path
        self.metadata_url = public_url.rstrip("/") + WELL_KNOWN + path
        self._paths = {WELL_KNOWN + path, WELL_KNOWN}
        self._issuer = issuer.rstrip("/")
        self._claim = claim
        self._scope = scope
        self._keys: jwt.PyJWKClient | None = None
        self._metadata: dict[str, Any] | None = None
        self._introspection = introspection
        """The gateway's client id and secret at the issuer, to introspect opaque tokens (or None)."""
        self._introspected: dict[bytes, tuple[float, dict[str, Any]]] = {}
        """sha256 of a token -> (reused until, its claims): never the token itself."""
        self._authority = authority
        """The built-in authorization server, whose tokens name a tokens-file client by its name."""

    @classmethod
    def of(cls, settings: Settings, authority: Authority | None = None) -> ResourceServer | None:
        """The resource server the settings describe: with `SWARM_MCP_OAUTH_ISSUER` or the built-in
        authorization server (`authority`), else None."""
        issuer = settings.oauth_issuer if authority is None else authority.issuer
        if issuer is None or settings.public_url is None:
            return None
        secret = settings.oauth_introspection_secret
        client = settings.oauth_introspection_client
        return cls(
            settings.public_url,
            settings.path,
            issuer,
            authority=authority,
            claim=settings.oauth_claim,
            scope=settings.oauth_scope,
            introspection=None if client is None or secret is None else (client, secret.get_secret_value()),
        )

    def serves(self, path: str) -> bool:
        """Whether `path` is our protected resource metadata."""
        return path in self._paths

    def metadata(self) -> Response:
        """RFC 9728 protected resource metadata: who issues tokens for this resource, and for what scope."""
        document: dict[str, Any] = {
            "resource": self.resource,
            "authorization_servers": [self._issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": "swarm-inference-mcp",
        }
        if self._scope:
            document["scopes_supported"] = [self._scope]
        return JSONResponse(document, headers={"Cache-Control": "max-age=3600"})

    def challenge(self, status: int = 401, error: str | None = None, description: str | None = None) -> Response:
        """A refusal whose `WWW-Authenticate` tells a host where to learn how to get a token."""
        parts = [f'resource_metadata="{self.metadata_url}"']
        if self._scope:
            parts.append(f'scope="{self._scope}"')
        if error:
            parts.append(f'error="{error}"')
        body = description or "Missing or invalid access token"
        return Response(body, status_code=status, headers={"WWW-Authenticate": "Bearer " + ", ".join(parts)})

    async def verify(self, token: str, clients: list[Admitted], address: str) -> Verdict:
        """The client `token` stands for, or why not (401: not a valid token for us; 403: valid, but not
        enough scope, or an identity no tokens-file line names). Never raises."""
        try:
            if self._authority is not None:  # our own tokens name the client itself
                identities = {admitted.client.name: admitted for admitted in clients}
                claims = await self._granted(self._authority, token)
            else:
                identities = {identity: admitted for admitted in clients for identity in admitted.identities}
                claims = await anyio.to_thread.run_sync(self._decode, token)
        except (jwt.PyJWTError, OSError, ValueError) as exc:
            log.warning("refused an access token from %s: %s", address, _reason(exc))
            return Verdict(refusal=self.challenge(401, "invalid_token"))
        if self._scope and self._scope not in _scopes(claims):
            log.warning("refused an access token from %s: it lacks the scope %s", address, self._scope)
            return Verdict(
                refusal=self.challenge(403, "insufficient_scope", f"The token lacks the scope {self._scope}")
            )
        identity = claims.get(self._claim)
        admitted = identities.get(identity) if isinstance(identity, str) else None
        if admitted is None:
            shown = identity[:128] if isinstance(identity, str) else None
            log.warning("refused %s from %s: no line of the tokens file names identity:%s", self._claim, address, shown)
            return Verdict(refusal=Response("This identity is not a client of this gateway", status_code=403))
        return Verdict(client=admitted.client)

    async def _granted(self, authority: Authority, token: str) -> dict[str, Any]:
        """The claims of an access token of the built-in authorization server."""
        granted = await authority.load_access_token(token)
        if granted is None:
            raise ValueError("it is unknown, expired or revoked")
        return {"sub": granted.subject, "scope": " ".join(granted.scopes)}

    def _decode(self, token: str) -> dict[str, Any]:
        """The token's claims, if every check passes (in a thread: keys may be fetched, tokens introspected)."""
        if token.count(".") != 2 and self._introspection is not None:
            return self._introspect(token)
        key = self._signing_keys().get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[key.algorithm_name],  # the key's own: never `none`, never another family
            audience=self.resource,
            issuer=self._issuer,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iss", "aud"]},
        )
        return claims

    def _introspect(self, token: str) -> dict[str, Any]:
        """An opaque token's claims from the issuer (RFC 7662), held to the checks a JWT's are."""
        assert self._introspection is not None  # noqa: S101 - the caller checked
        kept, now = self._introspected.get(digest(token)), time.time()
        if kept is not None and kept[0] > now:
            return kept[1]
        endpoint = self._issuer_document().get("introspection_endpoint")
        if not isinstance(endpoint, str):
            raise ValueError(f"the metadata of {self._issuer} names no introspection_endpoint")
        client_id, secret = self._introspection
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked at start
            endpoint,
            data=urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"}).encode(),
            headers={
                "Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode(),
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            claims = json.loads(answer.read(METADATA_BYTES))
        if not isinstance(claims, dict) or claims.get("active") is not True:
            raise ValueError("the issuer says the token is not active")
        if claims.get("iss", self._issuer).rstrip("/") != self._issuer:
            raise ValueError("the token is another issuer's")
        audience = claims.get("aud")
        if self.resource not in (audience if isinstance(audience, list) else [audience]):
            raise ValueError("the token is for another audience")
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or expires + LEEWAY_S <= now:
            raise ValueError("the token has expired")
        if len(self._introspected) >= INTROSPECTED_MAX:
            self._introspected = {key: value for key, value in self._introspected.items() if value[0] > now}
        self._introspected[digest(token)] = (min(expires, now + INTROSPECTED_S), claims)
        return claims

    def keys_found(self) -> str:
        """For `check`: where the issuer's signing keys are and how many there are; raises `ValueError` or
        `OSError` saying why they cannot be read (in a thread: it fetches)."""
        keys = self._signing_keys().get_signing_keys()
        jwks_uri = self._issuer_document()["jwks_uri"]
        introspects = " and introspects opaque tokens" if self._introspection is not None else ""
        return f"{len(keys)} signing key{'s' if len(keys) != 1 else ''} at {jwks_uri}{introspects}"

    def _issuer_document(self) -> dict[str, Any]:
        if self._metadata is None:
            metadata = _issuer_metadata(self._issuer)
            if metadata.get("issuer", "").rstrip("/") != self._issuer:
                raise ValueError(f"the metadata of {self._issuer} names another issuer")
            self._metadata = metadata
        return self._metadata

    def _signing_keys(self) -> jwt.PyJWKClient:
        if self._keys is None:
            metadata = self._issuer_document()
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ValueError(f"the metadata of {self._issuer} names no jwks_uri")
            self._keys = jwt.PyJWKClient(jwks_uri, cache_keys=True, timeout=10, cooldown_duration=KEYS_COOLDOWN_S)
        return self._keys


def _issuer_metadata(issuer: str) -> dict[str, Any]:
    """RFC 8414 authorization server metadata, or OpenID Connect discovery's, of `issuer`."""
    problem: Exception | None = None
    for suffix in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        try:
            with urllib.request.urlopen(issuer + suffix, timeout=10) as answer:  # noqa: S310 - http(s) only, checked at start
                found = json.loads(answer.read(METADATA_BYTES + 1)[:METADATA_BYTES])
            if isinstance(found, dict):
                return found
        except (OSError, ValueError) as exc:
            problem = exc
    raise ValueError(f"the metadata of {issuer} cannot be read ({problem})")


def _scopes(claims: dict[str, Any]) -> set[str]:
    """The scopes a token carries: `scope` (space-separated, RFC 9068) or `scp` (a list, Entra ID and Okta)."""
    scope, scp = claims.get("scope"), claims.get("scp")
    found = set(scope.split()) if isinstance(scope, str) else set()
    if isinstance(scp, list):
        found |= {item for item in scp if isinstance(item, str)}
    elif isinstance(scp, str):
        found |= set(scp.split())
    return found


def _reason(exc: Exception) -> str:
    """Why a token was refused, in a few words, never the token."""
    return f"{type(exc).__name__}: {str(exc)[:200]}"
