"""The built-in authorization server (`SWARM_MCP_OAUTH=builtin`), driven by clients no one here wrote: the
Python SDK's `OAuthClientProvider` (through a client ID metadata document served over HTTPS on loopback
with a test CA, and through dynamic registration), with Debian's Chromium (through Playwright) entering
the gateway token on our sign-in page and approving the consent page. Then the attacks a hostile host
or page would try, over plain HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
import trustme
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from playwright.async_api import Browser, async_playwright

from tests import third_party
from tests.fake_upstream import FakeUpstream, Reply, eventually
from tests.servers import free_port, mcp_client, oauth_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ALICE = "alice-gateway-token-0123456789"
BOB = "bob-gateway-token-0123456789"


@contextmanager
def builtin_gateway(fake: FakeUpstream, tmp_path: Path, name: str = "server", **more: str) -> Iterator[str]:
    """The gateway as its own authorization server, alice and bob in its tokens file: its base URL."""
    tokens = f"alice {ALICE} daily_tokens=100000\nbob {BOB}\n"
    env = {"SWARM_MCP_OAUTH": "builtin", "SWARM_MCP_STATE_DB": str(tmp_path / "state.sqlite3"), **more}
    with oauth_gateway(fake, tmp_path, tokens, name=name, **env) as base:
        yield base


class _Recorder(BaseHTTPRequestHandler):
    served: bytes = b""
    status = 200
    headers_out: dict[str, str] = {}  # noqa: RUF012 - set per server
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(self.status)
        for name, value in self.headers_out.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(self.served)))
        self.end_headers()
        with suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(self.served)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def web_server(
    body: bytes = b"done",
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    port: int = 0,
) -> Iterator[tuple[int, list[str]]]:
    """A loopback server answering every GET with `body` (over TLS with `tls`; on `port`, or any free one):
    (its port, the paths it was asked for)."""
    seen: list[str] = []
    handler = type(
        "Handler", (_Recorder,), {"served": body, "status": status, "headers_out": headers or {}, "seen": seen}
    )
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def make_test_ca(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A test CA (the gateway trusts its file through SSL_CERT_FILE), and a server context for localhost."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(tls)
    return ca_file, tls


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, through Playwright (no browser download)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is needed: apt-get install chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


async def approve_in_browser(browser: Browser, url: str, token: str, landed: list[str]) -> None:
    """A person opens the authorization URL, enters the gateway token and approves."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(url)
        await page.fill("input[name=token]", token)
        await page.click("button[type=submit]")
        await page.wait_for_selector("button[value=approve]")
        await page.click("button[value=approve]")
        await eventually(lambda: any(path.startswith("/callback?") for path in landed), timeout_s=15)
    finally:
        await context.close()


class Storage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def sdk_client(
    base: str, browser: Browser, callback_port: int, landed: list[str], storage: Storage, *, document: str | None = None
) -> OAuthClientProvider:
    """The Python SDK's OAuth client, sending the person to Chromium; `document`: its client ID metadata URL."""
    callback = f"http://127.0.0.1:{callback_port}/callback"

    async def redirect(url: str) -> None:
        await approve_in_browser(browser, url, ALICE, landed)

    async def came_back() -> AuthorizationCodeResult:
        back = [path for path in landed if path.startswith("/callback?")]  # not Chromium's /favicon.ico
        query = parse_qs(urlsplit(back[-1]).query)
        return AuthorizationCodeResult(code=query["code"][0], state=query["state"][0], iss=query["iss"][0])

    return OAuthClientProvider(
        server_url=f"{base}/mcp",
        client_metadata=OAuthClientMetadata(
            client_name="Test Host", redirect_uris=[callback], token_endpoint_auth_method="none"
        ),
        storage=storage,
        redirect_handler=redirect,
        callback_handler=came_back,
        client_metadata_url=document,
    )


def usage_rows(tmp_path: Path) -> list[tuple[str, str]]:
    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        return [tuple(row) for row in db.execute("SELECT client, provider FROM calls")]


async def signed_in_host_calls(base: str, provider: OAuthClientProvider, fake: FakeUpstream) -> dict[str, Any]:
    """tools/list and a call with the host's token; a slow job started, then collected in a second session."""
    fake.script("swarms", Reply(), Reply(delay_s=1.0))
    async with mcp_client(f"{base}/mcp", token=None, auth=provider) as first:
        tools = await first.list_tools()
        answer = await first.call_tool("ask_swarm", {"prompt": "as alice"})
        usage = json.loads((await first.read_resource("swarm://usage")).contents[0].text)  # type: ignore[union-attr]
        handle = (await first.call_tool("ask_swarm", {"prompt": "slow", "wait_s": 0})).structured_content
    assert handle is not None
    async with mcp_client(f"{base}/mcp", token=None, auth=provider) as second:
        collected = await second.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 30})
    return {"tools": {tool.name for tool in tools.tools}, "answer": answer, "usage": usage, "collected": collected}


async def test_a_host_signs_in_with_a_client_id_metadata_document_over_https(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    ca_file, tls = make_test_ca(tmp_path)
    landed: list[str] = []
    with web_server() as (callback_port, callback_seen):
        landed = callback_seen
        document_port = free_port()
        document_url = f"https://localhost:{document_port}/oauth/client.json"
        document = {
            "client_id": document_url,
            "client_name": "Test Host (CIMD)",
            "redirect_uris": [f"http://127.0.0.1:{callback_port}/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        with (
            web_server(json.dumps(document).encode(), tls=tls, port=document_port) as (_, document_seen),
            builtin_gateway(fake, tmp_path, SSL_CERT_FILE=str(ca_file), SWARM_MCP_OAUTH_PRIVATE_CLIENTS="true") as base,
        ):
            async with chromium() as browser:
                storage = Storage()
                provider = sdk_client(base, browser, callback_port, landed, storage, document=document_url)
                seen = await signed_in_host_calls(base, provider, fake)
            log = (tmp_path / "server.stderr").read_text()
    assert document_seen  # the gateway fetched the document
    assert storage.client is not None
    assert storage.client.client_id == document_url
    assert {"ask_fortytwo", "ask_swarm", "get_result"} <= seen["tools"]
    assert not seen["answer"].is_error
    assert seen["usage"]["client"]["name"] == "alice"
    assert (seen["collected"].structured_content or {})["text"] == "swarms says: slow"
    assert usage_rows(tmp_path) == [("alice", "swarms"), ("alice", "swarms")]
    assert storage.tokens is not None
    for secret in (ALICE, storage.tokens.access_token, storage.tokens.refresh_token or "-"):
        assert secret not in log
    assert "alice signed in for " + document_url in log


async def test_a_host_signs_in_after_dynamic_registration(fake: FakeUpstream, tmp_path: Path) -> None:
    with web_server() as (callback_port, landed), builtin_gateway(fake, tmp_path) as base:
        async with chromium() as browser:
            storage = Storage()
            seen = await signed_in_host_calls(base, sdk_client(base, browser, callback_port, landed, storage), fake)
    assert storage.client is not None
    assert storage.client.client_id is not None
    assert not storage.client.client_id.startswith("http")  # registered here (RFC 7591)
    assert not seen["answer"].is_error
    assert seen["usage"]["client"]["name"] == "alice"
    assert (seen["collected"].structured_content or {})["text"] == "swarms says: slow"


async def test_the_typescript_sdk_signs_in_and_calls(fake: FakeUpstream, tmp_path: Path) -> None:
    """The TypeScript SDK 1.x's OAuth client (most hosts embed it) registers, sends the person to Chromium,
    finishes the sign-in with the code it got back, calls as alice, and collects a job in a second session."""
    installed = third_party.npm_clients()
    fake.script("swarms", Reply(), Reply(delay_s=1.0))
    driver = Path(__file__).parent / "clients" / "ts_oauth_client.cjs"
    with web_server() as (callback_port, landed), builtin_gateway(fake, tmp_path) as base:
        callback = f"http://127.0.0.1:{callback_port}/callback"
        command = [third_party.node(), str(driver), str(installed), f"{base}/mcp", callback]
        async with await anyio.open_process(command) as node, chromium() as browser:
            assert node.stdout is not None
            assert node.stdin is not None
            output = BufferedByteReceiveStream(node.stdout)
            with anyio.fail_after(60):
                url = json.loads(await output.receive_until(b"\n", 1 << 20))["authorize"]
                await approve_in_browser(browser, url, ALICE, landed)
                back = next(path for path in landed if path.startswith("/callback?"))
                await node.stdin.send(f"http://127.0.0.1:{callback_port}{back}\n".encode())
                seen = json.loads(await output.receive_until(b"\n", 1 << 24))
        log = (tmp_path / "server.stderr").read_text()
    assert {"ask_fortytwo", "ask_swarm", "get_result"} <= set(seen["tools"])
    assert seen["call"]["structuredContent"]["text"] == "swarms says: from typescript"
    assert seen["collected"]["structuredContent"]["text"] == "swarms says: slow"
    assert not seen["client_id"].startswith("http")  # registered (RFC 7591)
    assert usage_rows(tmp_path) == [("alice", "swarms"), ("alice", "swarms")]
    assert seen["tokens"]["access"] not in log
    assert "alice signed in for " + seen["client_id"] in log


# The attacks, over plain HTTP: a hostile host, page or guesser.

CALLBACK = "http://127.0.0.1:9/callback"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def register(base: str, redirect: str = CALLBACK, **more: Any) -> httpx2.Response:
    metadata = {"redirect_uris": [redirect], "client_name": "Evil or not", "token_endpoint_auth_method": "none", **more}
    return httpx2.post(f"{base}/register", json=metadata, timeout=10)


def authorize(http: httpx2.Client, base: str, client_id: str, challenge: str | None, **more: str) -> httpx2.Response:
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK, "state": "s1", **more}
    if challenge is not None:
        query.setdefault("code_challenge", challenge)
        query.setdefault("code_challenge_method", "S256")
    return http.get(f"{base}/authorize", params=query)


def sign_in(browser: httpx2.Client, base: str, client_id: str, challenge: str, token: str = ALICE) -> httpx2.Response:
    """Up to the consent page, as a browser would (`browser` keeps the cookie): the consent page."""
    to_sign_in = authorize(browser, base, client_id, challenge)
    assert to_sign_in.status_code == 302, to_sign_in.text
    page = browser.get(to_sign_in.headers["location"])
    form = dict(re.findall(r'name="(request|csrf)" value="([^"]*)"', page.text))
    return browser.post(f"{base}/oauth/sign-in", data={**form, "token": token})


def code_for(base: str, client_id: str, challenge: str) -> str:
    with httpx2.Client(timeout=10) as browser:
        consent = sign_in(browser, base, client_id, challenge)
        form = dict(re.findall(r'name="(request|ticket|csrf)" value="([^"]*)"', consent.text))
        back = browser.post(f"{base}/oauth/consent", data={**form, "decision": "approve"})
    assert back.status_code == 303, back.text
    query = parse_qs(urlsplit(back.headers["location"]).query)
    assert query["iss"] == [base]
    assert query["state"] == ["s1"]
    return query["code"][0]


def exchange(base: str, client_id: str, code: str, verifier: str) -> httpx2.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client_id,
        "code_verifier": verifier,
        "redirect_uri": CALLBACK,
    }
    return httpx2.post(f"{base}/token", data=form, timeout=10)


def refresh(base: str, client_id: str, token: str) -> httpx2.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    return httpx2.post(f"{base}/token", data=form, timeout=10)


def mcp_status(base: str, token: str) -> int:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    return httpx2.post(f"{base}/mcp", json=body, headers=headers, timeout=10).status_code


async def test_redirect_uris_codes_and_pkce_are_held_exactly(fake: FakeUpstream, tmp_path: Path) -> None:
    with builtin_gateway(fake, tmp_path, SWARM_MCP_STATELESS="true") as base, httpx2.Client(timeout=10) as http:
        client_id = register(base).json()["client_id"]
        other_id = register(base).json()["client_id"]
        verifier, challenge = pkce()
        wrong_redirects = {
            "prefix": "http://127.0.0.1:9/call",
            "suffix": "http://127.0.0.1:9/callback/../evil",
            "longer": "http://127.0.0.1:9/callbackevil",
            "port": "http://127.0.0.1:10/callback",
            "fragment": "http://127.0.0.1:9/callback#x",
            "host": "https://evil.example/callback",
        }
        redirected = {
            why: authorize(http, base, client_id, challenge, redirect_uri=uri) for why, uri in wrong_redirects.items()
        }
        without_pkce = authorize(http, base, client_id, None)
        plain = authorize(http, base, client_id, verifier, code_challenge_method="plain")
        code = code_for(base, client_id, challenge)
        stolen = exchange(base, other_id, code, verifier)  # another client presents alice's code
        wrong_verifier = exchange(base, client_id, code, pkce()[0])
        first = exchange(base, client_id, code, verifier)
        again = exchange(base, client_id, code, verifier)
        after_reuse = mcp_status(base, first.json()["access_token"]) if first.status_code == 200 else None
        registered_badly = {
            "fragment": register(base, "https://host.example/cb#frag").status_code,
            "http off loopback": register(base, "http://host.example/cb").status_code,
            "javascript": register(base, "javascript:alert(1)").status_code,
        }
    for why, answer in redirected.items():
        assert answer.status_code == 400, why  # shown here, never sent to the unregistered URI
        assert "location" not in answer.headers, why
    assert without_pkce.status_code in (302, 400)
    assert "code=" not in without_pkce.headers.get("location", "")
    assert "code=" not in plain.headers.get("location", "")
    assert plain.status_code in (302, 400)
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    assert wrong_verifier.status_code == 400
    assert wrong_verifier.json()["error"] == "invalid_grant"
    assert first.status_code == 200, first.text
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert after_reuse == 401  # a code used twice revokes what it gave
    assert registered_badly == {"fragment": 400, "http off loopback": 400, "javascript": 400}


async def test_a_reused_refresh_token_revokes_its_family_and_revocation_signs_out(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    with builtin_gateway(fake, tmp_path, SWARM_MCP_STATELESS="true") as base:
        client_id = register(base).json()["client_id"]
        verifier, challenge = pkce()
        tokens = exchange(base, client_id, code_for(base, client_id, challenge), verifier).json()
        assert mcp_status(base, tokens["access_token"]) == 200
        rotated = refresh(base, client_id, tokens["refresh_token"]).json()
        assert mcp_status(base, rotated["access_token"]) == 200
        replayed = refresh(base, client_id, tokens["refresh_token"])  # the old one, stolen and replayed
        after = (mcp_status(base, rotated["access_token"]), refresh(base, client_id, rotated["refresh_token"]))
        second = exchange(base, client_id, code_for(base, client_id, challenge), verifier).json()
        other_id = register(base).json()["client_id"]
        foreign = httpx2.post(f"{base}/revoke", data={"token": second["access_token"], "client_id": other_id})
        after_foreign = mcp_status(base, second["access_token"])
        revoked = httpx2.post(
            f"{base}/revoke",
            data={"token": second["refresh_token"], "client_id": client_id},
            timeout=10,
        )
        signed_out = mcp_status(base, second["access_token"])
        log = (tmp_path / "server.stderr").read_text()
    assert replayed.status_code == 400
    assert replayed.json()["error"] == "invalid_grant"
    assert after[0] == 401
    assert after[1].status_code == 400
    assert foreign.status_code == 200  # told nothing, changed nothing
    assert after_foreign == 200
    assert revoked.status_code == 200
    assert signed_out == 401
    assert "a refresh token was used after it was rotated" in log
    for secret in (tokens["refresh_token"], tokens["access_token"], ALICE):
        assert secret not in log


async def test_forms_need_their_page_and_wrong_tokens_are_limited(fake: FakeUpstream, tmp_path: Path) -> None:
    """CSRF: a sign-in or consent posted without the page's cookie is refused; a consent with a made-up
    ticket is refused; 1,000 wrong gateway tokens from one address get 10 tries, then 429 (even with the
    right token), and none of them a code."""
    with (
        builtin_gateway(fake, tmp_path, SWARM_MCP_STATELESS="true") as base,
        httpx2.Client(timeout=10) as browser,
        httpx2.Client(timeout=10) as attacker,
    ):
        client_id = register(base).json()["client_id"]
        _, challenge = pkce()
        consent = sign_in(browser, base, client_id, challenge)
        form = dict(re.findall(r'name="(request|ticket|csrf)" value="([^"]*)"', consent.text))
        forged = {
            "consent without cookie": httpx2.post(f"{base}/oauth/consent", data={**form, "decision": "approve"}),
            "consent, wrong ticket": browser.post(
                f"{base}/oauth/consent", data={**form, "ticket": "guessed", "decision": "approve"}
            ),
            "sign-in without cookie": httpx2.post(
                f"{base}/oauth/sign-in", data={"request": form["request"], "csrf": form["csrf"], "token": ALICE}
            ),
        }
        sign_in(attacker, base, client_id, challenge, token="wrong")
        to_sign_in = authorize(attacker, base, client_id, challenge)
        page = attacker.get(to_sign_in.headers["location"])
        fields = dict(re.findall(r'name="(request|csrf)" value="([^"]*)"', page.text))
        statuses = [
            attacker.post(f"{base}/oauth/sign-in", data={**fields, "token": f"guess-{n}"}).status_code
            for n in range(1000)
        ]
        right_token_now = attacker.post(f"{base}/oauth/sign-in", data={**fields, "token": ALICE})
        log = (tmp_path / "server.stderr").read_text()
    assert {why: answer.status_code for why, answer in forged.items()} == {
        "consent without cookie": 403, "consent, wrong ticket": 400, "sign-in without cookie": 403,
    }  # fmt: skip
    assert all("location" not in answer.headers for answer in forged.values())
    assert statuses.count(401) == 9
    assert statuses.count(429) == 991
    assert right_token_now.status_code == 429
    assert "ticket" not in right_token_now.text
    assert "guess-" not in log
    assert ALICE not in log
    assert log.count("sign-in failed for") == 10


async def test_client_metadata_documents_that_redirect_or_are_huge_are_refused(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    ca_file, tls = make_test_ca(tmp_path)
    huge = b"{" + b" " * (50 * 1024 * 1024) + b"}"
    _, challenge = pkce()
    with (
        web_server(b"", status=302, headers={"Location": "http://127.0.0.1:9/client.json"}, tls=tls) as (moved, _),
        web_server(huge, tls=tls) as (big, _),
    ):
        moving, sized = f"https://localhost:{moved}/client.json", f"https://localhost:{big}/client.json"
        with builtin_gateway(
            fake, tmp_path, SSL_CERT_FILE=str(ca_file), SWARM_MCP_OAUTH_PRIVATE_CLIENTS="true"
        ) as base:
            http = httpx2.Client(timeout=30)
            answers = {url: authorize(http, base, url, challenge) for url in (moving, sized)}
            log = (tmp_path / "server.stderr").read_text()
        with builtin_gateway(fake, tmp_path, "strict", SSL_CERT_FILE=str(ca_file)) as base:
            loopback = authorize(http, base, moving, challenge)
            log += (tmp_path / "strict.stderr").read_text()
        http.close()
    for answer in [*answers.values(), loopback]:
        assert answer.status_code == 400
        assert "location" not in answer.headers
    assert "was answered 302" in log
    assert "larger than 65536 bytes" in log
    assert "a private or loopback address" in log


async def test_instances_on_one_redis_honour_each_others_grants(
    fake: FakeUpstream, tmp_path: Path, redis_server: Any
) -> None:
    """Signed in at one instance, the code is exchanged at another and the token used at both; a refresh
    token rotated at one and replayed at the other revokes the sign-in everywhere."""
    shared = {"SWARM_MCP_REDIS_URL": redis_server.url, "SWARM_MCP_STATELESS": "true"}
    with builtin_gateway(fake, tmp_path, "a", **shared) as a, builtin_gateway(fake, tmp_path, "b", **shared) as b:
        client_id = register(a).json()["client_id"]
        verifier, challenge = pkce()
        code = code_for(a, client_id, challenge)
        tokens = exchange(b, client_id, code, verifier).json()
        both = [mcp_status(a, tokens["access_token"]), mcp_status(b, tokens["access_token"])]
        rotated = refresh(a, client_id, tokens["refresh_token"]).json()
        replayed = refresh(b, client_id, tokens["refresh_token"])
        after = [mcp_status(a, rotated["access_token"]), mcp_status(b, rotated["access_token"])]
    assert both == [200, 200]
    assert replayed.status_code == 400
    assert after == [401, 401]


async def test_a_revoked_token_loses_no_job_the_next_sign_in_collects_it(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.script("swarms", Reply(delay_s=1.0))
    with builtin_gateway(fake, tmp_path) as base:
        client_id = register(base).json()["client_id"]
        verifier, challenge = pkce()
        first = exchange(base, client_id, code_for(base, client_id, challenge), verifier).json()
        async with mcp_client(f"{base}/mcp", token=first["access_token"]) as alice:
            handle = (await alice.call_tool("ask_swarm", {"prompt": "slow", "wait_s": 0})).structured_content
        assert handle is not None
        signed_out = httpx2.post(
            f"{base}/revoke",
            data={"token": first["access_token"], "client_id": client_id},
            timeout=10,
        )
        refused = mcp_status(base, first["access_token"])
        second = exchange(base, client_id, code_for(base, client_id, challenge), verifier).json()
        async with mcp_client(f"{base}/mcp", token=second["access_token"]) as alice:
            collected = await alice.call_tool("get_result", {"job_id": handle["job_id"], "wait_s": 30})
    assert signed_out.status_code == 200
    assert refused == 401
    assert (collected.structured_content or {})["text"] == "swarms says: slow"
    assert len(fake.seen("swarms")) == 1


async def test_registrations_and_authorization_requests_are_limited_per_address(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Each kept for a while, they cannot be sent without end: 20 registrations and 60 authorization
    requests a minute from one address, then 429 and one line in the log."""
    with builtin_gateway(fake, tmp_path, SWARM_MCP_STATELESS="true") as base:
        registered = [register(base).status_code for _ in range(25)]
        _, challenge = pkce()
        log = (tmp_path / "server.stderr").read_text()
    assert registered == [201] * 20 + [429] * 5
    assert log.count("registration from 127.0.0.1: over 20 a minute") == 1
    with (
        builtin_gateway(fake, tmp_path, "second", SWARM_MCP_STATELESS="true") as base,
        httpx2.Client(timeout=10) as http,
    ):
        client_id = register(base).json()["client_id"]
        asked = [authorize(http, base, client_id, challenge).status_code for _ in range(70)]
    assert asked == [302] * 60 + [429] * 10


async def test_the_gateway_names_itself_as_the_issuer_and_plain_tokens_can_be_turned_off(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """A host starting from a 401 finds the gateway as its own authorization server; with
    SWARM_MCP_OAUTH_ONLY a gateway token no longer opens /mcp, but still signs a person in."""
    with builtin_gateway(fake, tmp_path, SWARM_MCP_STATELESS="true", SWARM_MCP_OAUTH_ONLY="true") as base:
        anonymous = httpx2.post(f"{base}/mcp", json={}, timeout=10)
        resource = httpx2.get(f"{base}/.well-known/oauth-protected-resource/mcp", timeout=10).json()
        server = httpx2.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()
        plain = mcp_status(base, ALICE)
        client_id = register(base).json()["client_id"]
        verifier, challenge = pkce()
        tokens = exchange(base, client_id, code_for(base, client_id, challenge), verifier).json()
        signed_in = mcp_status(base, tokens["access_token"])
    assert anonymous.status_code == 401
    assert (
        f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in anonymous.headers["www-authenticate"]
    )
    assert resource["authorization_servers"] == [base]
    assert resource["resource"] == f"{base}/mcp"
    assert server["issuer"] == base
    assert server["code_challenge_methods_supported"] == ["S256"]
    assert server["client_id_metadata_document_supported"] is True
    assert server["authorization_response_iss_parameter_supported"] is True
    assert plain == 401
    assert signed_in == 200
