"""`swarm-inference-mcp check`: for a person setting the server up. Never starts the MCP server.

Shows the effective configuration with keys masked, asks each configured provider's models
endpoint, and prints one line per provider; then one line for Redis and one for OAuth (the
issuer's signing keys), when configured. Exit status 1 when any of them fails or no provider is
configured.
"""

from __future__ import annotations

from typing import TextIO

from pydantic import SecretStr

from swarm_inference_mcp.server.config import Settings
from swarm_inference_mcp.server.environment import SECRET_FIELDS, VARIABLES
from swarm_inference_mcp.tools.errors.tree import CallError
from swarm_inference_mcp.tools.upstream import RetryPolicy, Upstream

CHECK_TIMEOUT_S = 15.0


def mask(secret: SecretStr | None) -> str:
    """A key as `…abcd` (its last four characters), or `****` when it is too short to show any of it."""
    if secret is None:
        return "(not set)"
    value = secret.get_secret_value()
    return f"…{value[-4:]}" if len(value) >= 12 else "****"


def describe(settings: Settings) -> list[str]:
    lines = []
    for variable in VARIABLES:
        name, value = variable.name, variable.value(settings)
        if name == "redis_url" and value is not None:
            from swarm_inference_mcp.server.scaleout.url import describe_url  # noqa: PLC0415 - only with Redis

            shown = describe_url(value.get_secret_value())  # the host, never the password
        elif name == "state_db":  # where usage is kept, as the server will use it
            path = settings.state_path()
            shown = "off (usage kept in memory)" if path is None else str(path)
        else:
            shown = mask(value) if name in SECRET_FIELDS else value
        lines.append(f"  {variable.env} = {shown}")
    return lines


async def run_check(settings: Settings, out: TextIO) -> int:
    out.write("Effective configuration:\n" + "\n".join(describe(settings)) + "\n\nProviders:\n")
    failed = False
    configured = 0
    async with settings.shared_client() as client:
        upstream = Upstream(client, settings.endpoints(), RetryPolicy(max_retries=0), settings.heartbeat)
        for name, endpoint in upstream.endpoints.items():
            if endpoint.settings.api_key is None:
                out.write(f"  {name}: not configured; set {endpoint.spec.key_env} to use it\n")
                continue
            configured += 1
            try:
                models = await upstream.list_models(name, timeout_s=CHECK_TIMEOUT_S)
            except CallError as err:
                failed = True
                out.write(f"  {name}: FAILED at {endpoint.settings.base_url}: {err.sentence}\n")
                continue
            listed = "listed" if endpoint.settings.model in models else "not in its list"
            out.write(
                f"  {name}: OK, reachable and authorised at {endpoint.settings.base_url} "
                f"({len(models)} models; default model {endpoint.settings.model} {listed})\n"
            )
    if settings.redis_url is not None:
        failed = await _check_redis(settings, out) or failed
    if settings.oauth_issuer is not None or settings.oauth is not None:
        failed = await _check_oauth(settings, out) or failed
    if configured == 0:
        out.write("No provider is configured: set FORTYTWO_API_KEY or SWARMS_API_KEY.\n")
        return 1
    return 1 if failed else 0


async def _check_redis(settings: Settings, out: TextIO) -> bool:
    """One line on the Redis the instances share; True when it cannot be used."""
    from swarm_inference_mcp.server.scaleout.link import redis_problem  # noqa: PLC0415 - only with Redis
    from swarm_inference_mcp.server.scaleout.url import describe_url  # noqa: PLC0415

    assert settings.redis_url is not None  # noqa: S101 - the caller checked
    url = settings.redis_url.get_secret_value()
    problem = await redis_problem(url, settings.redis_password_file)
    if problem is not None:
        out.write(f"\nRedis: FAILED: {problem}\n")
        return True
    out.write(f"\nRedis: OK, reachable and authorised at {describe_url(url)}\n")
    return False


async def _check_oauth(settings: Settings, out: TextIO) -> bool:
    """One line on who issues the access tokens hosts bring; True when the issuer cannot be used."""
    import anyio  # noqa: PLC0415 - only with OAuth
    import jwt  # noqa: PLC0415

    from swarm_inference_mcp.server.gateway.oauth import ResourceServer  # noqa: PLC0415

    paste = f"{(settings.public_url or '').rstrip('/')}{settings.path}"
    if settings.oauth_issuer is None:
        out.write(f"\nOAuth: the gateway is its own authorization server; hosts add the connector URL {paste}\n")
        return False
    resource = ResourceServer.of(settings)
    assert resource is not None  # noqa: S101 - an issuer and a public URL are set (the settings demand both)
    try:
        found = await anyio.to_thread.run_sync(resource.keys_found)
    except (OSError, ValueError, KeyError, jwt.PyJWTError) as exc:
        out.write(f"\nOAuth: FAILED: the keys of {settings.oauth_issuer} cannot be read ({str(exc)[:300]})\n")
        return True
    out.write(f"\nOAuth: OK, tokens of {settings.oauth_issuer} ({found}); hosts add the connector URL {paste}\n")
    return False
