"""The gateway as an OAuth resource server for the team's identity provider: `oidc-provider` (npm, OpenID
Certified) on loopback issues JWT access tokens for our resource; each is accepted as the client its
identity maps onto, or refused with 401/403 and a line in the log."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests import third_party
from tests.conftest import fake_env
from tests.fake_upstream import FakeUpstream, Reply, eventually
from tests.servers import free_port, mcp_client, oauth_gateway, run_script

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BOB = "bob-plain-token-0123456789"
SECRET = "client-secret-0123456789"


def signing_key(kid: str) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key))
    jwk.update(kid=kid, use="sig", alg="RS256")
    return key, jwk


@contextmanager
def identity_provider(tmp_path: Path, port: int, jwk: dict[str, Any], *, opaque: bool = False) -> Iterator[str]:
    """oidc-provider on 127.0.0.1:`port`, signing with `jwk`, with the clients alice-app and stranger (and
    the gateway's own, for introspection); `opaque`: its access tokens are opaque."""
    clients = [
        {
            "client_id": client_id,
            "client_secret": SECRET,
            "grant_types": ["client_credentials"],
            "redirect_uris": [],
            "response_types": [],
            "scope": "mcp",
        }
        for client_id in ("alice-app", "stranger", "gateway")
    ]
    config = tmp_path / f"oidc-{jwk['kid']}.json"
    config.write_text(json.dumps({"port": port, "jwks": {"keys": [jwk]}, "clients": clients, "opaque": opaque}))
    installed = third_party.npm_oidc_provider()
    driver = third_party.esm_driver(installed, "oidc_provider.mjs")
    process = subprocess.Popen(
        [third_party.node(), str(driver), str(config)],
        cwd=installed,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def access_token(issuer: str, client_id: str, resource: str) -> str:
    answer = httpx2.post(
        f"{issuer}/token",
        data={"grant_type": "client_credentials", "scope": "mcp", "resource": resource},
        auth=(client_id, SECRET),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def status_with(base: str, token: str) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    return httpx2.post(f"{base}/mcp", json=body, headers=headers, timeout=10)


@contextmanager
def gateway(fake: FakeUpstream, tmp_path: Path, issuer: str, **more: str) -> Iterator[tuple[str, str]]:
    """The gateway trusting `issuer`, alice mapped by identity, bob by a plain token: (base URL, resource)."""
    tokens = f"alice identity:alice-app daily_tokens=100000\nbob {BOB}\n"
    with oauth_gateway(fake, tmp_path, tokens, "--stateless", SWARM_MCP_OAUTH_ISSUER=issuer, **more) as base:
        yield base, f"{base}/mcp"


async def test_a_token_of_the_teams_provider_is_its_mapped_client(fake: FakeUpstream, tmp_path: Path) -> None:
    _, jwk = signing_key("k1")
    with identity_provider(tmp_path, free_port(), jwk) as issuer, gateway(fake, tmp_path, issuer) as (base, resource):
        metadata = httpx2.get(f"{base}/.well-known/oauth-protected-resource/mcp", timeout=10).json()
        anonymous = httpx2.post(f"{base}/mcp", json={}, timeout=10)
        token = access_token(issuer, "alice-app", resource)
        async with mcp_client(f"{base}/mcp", token=token) as alice:
            answer = await alice.call_tool("ask_swarm", {"prompt": "as alice"})
            usage = json.loads((await alice.read_resource("swarm://usage")).contents[0].text)  # type: ignore[union-attr]
        assert status_with(base, BOB).status_code == 200  # plain tokens work beside OAuth
        log = (tmp_path / "server.stderr").read_text()
    assert metadata == {
        "resource": resource,
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "swarm-inference-mcp",
        "scopes_supported": ["mcp"],
    }
    assert anonymous.status_code == 401
    challenge = anonymous.headers["www-authenticate"]
    assert f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert 'scope="mcp"' in challenge
    assert not answer.is_error
    assert usage["client"]["name"] == "alice"
    assert usage["client"]["daily_tokens"] == 100000
    assert token not in log


async def test_tokens_that_are_not_ours_are_refused_with_a_line_in_the_log(fake: FakeUpstream, tmp_path: Path) -> None:
    """The wrong audience, the wrong issuer, expired, alg none, an unknown key, an unmapped identity and
    a missing scope: each refused (401, or 403 for a valid token that may not), none lets anyone in."""
    key, jwk = signing_key("k1")
    other_key, _ = signing_key("k9")
    with identity_provider(tmp_path, free_port(), jwk) as issuer, gateway(fake, tmp_path, issuer) as (base, resource):
        now = int(time.time())
        claims = {"sub": "alice-app", "iss": issuer, "aud": resource, "iat": now, "exp": now + 300, "scope": "mcp"}

        def signed(**changed: Any) -> str:
            return jwt.encode({**claims, **changed}, key, algorithm="RS256", headers={"kid": "k1"})

        assert status_with(base, signed()).status_code == 200  # what follows differs from this in one thing
        refused = {
            "audience": status_with(base, access_token(issuer, "alice-app", "http://127.0.0.1:9/other")),
            "issuer": status_with(base, signed(iss="http://127.0.0.1:1")),
            "expired": status_with(base, signed(exp=now - 120)),
            "none": status_with(base, jwt.encode(claims, "", algorithm="none", headers={"kid": "k1"})),
            "unknown key": status_with(base, jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": "k9"})),
            "unmapped": status_with(base, access_token(issuer, "stranger", resource)),
            "scope": status_with(base, signed(scope="other")),
        }
        log = (tmp_path / "server.stderr").read_text()
    statuses = {why: answer.status_code for why, answer in refused.items()}
    assert statuses == {
        "audience": 401, "issuer": 401, "expired": 401, "none": 401, "unknown key": 401, "unmapped": 403, "scope": 403,
    }  # fmt: skip
    assert 'error="insufficient_scope"' in refused["scope"].headers["www-authenticate"]
    assert 'error="invalid_token"' in refused["expired"].headers["www-authenticate"]
    assert "no line of the tokens file names identity:stranger" in log
    assert log.count("refused an access token") >= 6
    assert "eyJ" not in log  # no token, whole or in part


async def test_a_key_rotation_at_the_provider_is_followed(fake: FakeUpstream, tmp_path: Path) -> None:
    """The provider restarts signing with a new key: its tokens are accepted once the gateway fetched the
    keys again for the unknown `kid` (at most once every few seconds)."""
    port = free_port()
    _, first = signing_key("k1")
    _, second = signing_key("k2")
    with gateway(fake, tmp_path, f"http://127.0.0.1:{port}") as (base, resource):
        with identity_provider(tmp_path, port, first) as issuer:
            assert status_with(base, access_token(issuer, "alice-app", resource)).status_code == 200
        with identity_provider(tmp_path, port, second) as issuer:
            rotated = access_token(issuer, "alice-app", resource)
            await eventually(lambda: status_with(base, rotated).status_code == 200, timeout_s=15)


async def test_a_job_started_in_one_session_is_collected_in_the_next_by_the_same_person_only(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Claude.ai may open a fresh session for every call: alice's handle from one session is collected in
    another with a new access token of hers, and is unknown to bob."""
    _, jwk = signing_key("k1")
    fake.script("swarms", Reply(delay_s=1.5))
    with identity_provider(tmp_path, free_port(), jwk) as issuer, gateway(fake, tmp_path, issuer) as (base, resource):
        async with mcp_client(f"{base}/mcp", token=access_token(issuer, "alice-app", resource)) as first:
            handle = (await first.call_tool("ask_swarm", {"prompt": "slow", "wait_s": 0})).structured_content
        assert handle is not None
        async with mcp_client(f"{base}/mcp", token=BOB) as bob:
            foreign = await bob.call_tool("get_result", {"job_id": handle["job_id"]})
        async with mcp_client(f"{base}/mcp", token=access_token(issuer, "alice-app", resource)) as second:
            collected = await second.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 30})
    assert foreign.is_error
    assert not collected.is_error
    assert (collected.structured_content or {})["text"] == "swarms says: slow"
    assert len(fake.seen("swarms")) == 1


async def test_plain_tokens_can_be_turned_off(fake: FakeUpstream, tmp_path: Path) -> None:
    _, jwk = signing_key("k1")
    with (
        identity_provider(tmp_path, free_port(), jwk) as issuer,
        gateway(fake, tmp_path, issuer, SWARM_MCP_OAUTH_ONLY="true") as (base, resource),
    ):
        plain = status_with(base, BOB)
        oauth = status_with(base, access_token(issuer, "alice-app", resource))
    assert plain.status_code == 401
    assert "resource_metadata=" in plain.headers["www-authenticate"]
    assert oauth.status_code == 200


async def test_an_opaque_token_is_introspected_and_held_to_the_same_checks(fake: FakeUpstream, tmp_path: Path) -> None:
    """The provider issues opaque tokens: the gateway asks its introspection endpoint (RFC 7662) with its
    own credentials; alice's token is alice, a stranger's is refused, and a made-up one is not active."""
    _, jwk = signing_key("k1")
    introspection = {
        "SWARM_MCP_OAUTH_INTROSPECTION_CLIENT": "gateway",
        "SWARM_MCP_OAUTH_INTROSPECTION_SECRET": SECRET,
        "SWARM_MCP_OAUTH_CLAIM": "client_id",  # a client-credentials token's introspection names no sub
    }
    with (
        identity_provider(tmp_path, free_port(), jwk, opaque=True) as issuer,
        gateway(fake, tmp_path, issuer, **introspection) as (base, resource),
    ):
        token = access_token(issuer, "alice-app", resource)
        assert token.count(".") != 2  # opaque, not a JWT
        statuses = [
            status_with(base, token).status_code,
            status_with(base, access_token(issuer, "stranger", resource)).status_code,
            status_with(base, "made-up-opaque-token-0123456789").status_code,
            status_with(base, access_token(issuer, "alice-app", "http://127.0.0.1:9/other")).status_code,
        ]
        log = (tmp_path / "server.stderr").read_text()
    assert statuses == [200, 403, 401, 401]
    assert token not in log


def test_check_says_whether_the_issuers_keys_can_be_read(fake: FakeUpstream, tmp_path: Path) -> None:
    """`swarm-inference-mcp check`, what a person setting the gateway up runs: the provider's keys are
    found, or a wrong issuer URL is said in one line (and the exit status is 1)."""
    _, jwk = signing_key("k1")
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("alice identity:alice-app\n")
    base = {"SWARM_MCP_TOKENS_FILE": str(tokens), "SWARM_MCP_PUBLIC_URL": "https://mcp.example.com"}
    with identity_provider(tmp_path, free_port(), jwk) as issuer:
        good = run_script("check", env=fake_env(fake, **base, SWARM_MCP_OAUTH_ISSUER=issuer))
    wrong = f"http://127.0.0.1:{free_port()}"
    bad = run_script("check", env=fake_env(fake, **base, SWARM_MCP_OAUTH_ISSUER=wrong))
    builtin = run_script("check", env=fake_env(fake, **base, SWARM_MCP_OAUTH="builtin"))
    assert good.returncode == 0, good.stdout
    assert f"OAuth: OK, tokens of {issuer} (1 signing key at {issuer}/jwks)" in good.stdout
    assert "hosts add the connector URL https://mcp.example.com/mcp" in good.stdout
    assert bad.returncode == 1
    assert f"OAuth: FAILED: the keys of {wrong} cannot be read (the metadata of {wrong} cannot be read" in bad.stdout
    assert builtin.returncode == 0
    assert "OAuth: the gateway is its own authorization server" in builtin.stdout
