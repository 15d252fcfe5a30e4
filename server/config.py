"""The one settings object: read once from the environment, overridden by CLI flags, passed in.

`Settings` is a pydantic-settings model. The server's own settings all start with `SWARM_MCP_`;
each provider's are one nested `ProviderSettings` under the vendor's own prefix (`FORTYTWO_API_KEY`
is `settings.fortytwo.api_key`), whose defaults are the provider's (`tools.PROVIDERS`). How they
are read from the environment and flags is `server.environment`'s.
"""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from swarm_inference_mcp.server.accounting.ledger import Budget
from swarm_inference_mcp.tools import PROVIDERS
from swarm_inference_mcp.tools.connection import Endpoint, ProviderSettings, SharedClient, new_client

LOOPBACK_NAMES = frozenset({"localhost"})
REDIS_EXTRA_MISSING = (
    "it needs the Redis client, which is not installed: pip install 'swarm-inference-mcp[redis]' "
    "(or uvx --from 'swarm-inference-mcp[redis]' swarm-inference-mcp)"
)


class Settings(BaseSettings):
    """Every knob of the server: `SWARM_MCP_<FIELD>`, and a provider's, `<NAME>_<FIELD>` (the aliases
    of the nested settings; an alias takes no prefix)."""

    model_config = SettingsConfigDict(
        env_prefix="SWARM_MCP_",
        frozen=True,
        populate_by_name=True,
        extra="forbid",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_ignore_empty=True,
    )

    fortytwo: ProviderSettings = Field(alias="FORTYTWO")
    swarms: ProviderSettings = Field(alias="SWARMS")

    timeout: float = Field(
        600.0, gt=0, description="Default deadline of one call in seconds, retries included (swarms take minutes)."
    )
    max_timeout: float = Field(
        1800.0, gt=0, description="Largest deadline a call may ask for with timeout_s; larger values are lowered to it."
    )
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a connection upstream.")
    max_retries: int = Field(
        2, ge=0, le=10, description="Retries after a 429, 502/503/504 or refused connection; 0 turns retries off."
    )
    retry_server_errors: bool = Field(False, description="Also retry HTTP 500, which may bill a job twice.")
    send_floor: float = Field(
        5.0,
        ge=0,
        description="A request that waited in the queue is not sent with fewer seconds of its deadline left; "
        "it fails as a timeout, unsent and unpaid.",
    )
    heartbeat: float = Field(
        15.0,
        gt=0,
        description="Seconds of silence before a heartbeat progress notification (when the client asked for progress).",
    )
    wait: float = Field(
        45.0,
        ge=0,
        description="Seconds a call waits for its answer before it hands back a job handle (get_result collects it); "
        "under the 60 s most hosts allow a tool call.",
    )
    task_handover: float = Field(
        5.0,
        ge=0,
        description="Seconds a call from a host that runs long calls as tasks (the 2026-07-28 Tasks extension) "
        "waits for its answer before it becomes a task the host polls; a faster answer comes back directly.",
    )
    task_poll: float = Field(
        5.0, gt=0, description="Seconds a host is asked to wait between two polls of a running task."
    )
    job_ttl: float = Field(
        3600.0,
        gt=0,
        description="Seconds a finished job's outcome is kept for get_result after a handle was handed out.",
    )
    max_jobs: int = Field(
        1000,
        ge=1,
        description="Most finished job outcomes kept per client (over stdio: in all); that client's oldest is "
        "forgotten first, never another client's.",
    )
    cache_ttl: float = Field(
        0.0, ge=0, description="Seconds a finished answer serves exact repeats of its request; 0 turns the cache off."
    )
    share_between_clients: bool = Field(
        False,
        description="Let a gateway client join another client's identical request in flight (or its cached "
        "answer) instead of paying again; it is told the answer was shared, its budget is checked, and its "
        "usage row is marked shared.",
    )
    token_budget: int | None = Field(
        None,
        ge=1,
        description="Total tokens this server may spend in its lifetime; further calls are refused once spent.",
    )
    daily_token_budget: int | None = Field(
        None,
        ge=1,
        description="Tokens spent on all providers together per calendar day (local time), all server "
        "processes sharing the state file together; unset for no limit.",
    )
    monthly_token_budget: int | None = Field(
        None,
        ge=1,
        description="Tokens spent on all providers together per calendar month (local time), counted "
        "like the daily budget; unset for no limit.",
    )
    state_db: str | None = Field(
        None,
        description="The usage state file shared by every server process of this user (SQLite), or off to keep "
        "usage in memory; default usage.sqlite3 in the user's state directory.",
    )
    redis_url: SecretStr | None = Field(
        None,
        description="Redis through which several instances share jobs, identical in-flight calls, usage and "
        "budgets (redis://host:6379/0, rediss:// for TLS); unset: each process keeps its own, usage in the state file.",
    )
    redis_password_file: str | None = Field(
        None, description="File holding the Redis password (instead of putting it in SWARM_MCP_REDIS_URL)."
    )
    redis_lease: float = Field(
        10.0,
        ge=1,
        le=600,
        description="Seconds an instance sharing Redis may go unheard before its running jobs are reported lost.",
    )
    transport: Literal["stdio", "streamable-http"] = Field(
        "stdio", description="stdio, or streamable-http for a shared server."
    )
    host: str = Field("127.0.0.1", description="Address the HTTP transport binds; loopback by default.")
    port: int = Field(8000, ge=0, le=65535, description="Port of the HTTP transport.")
    path: str = Field("/mcp", description="URL path of the MCP endpoint.")
    stateless: bool = Field(
        False, description="Keep no session state between HTTP requests, so instances can sit behind any load balancer."
    )
    token: SecretStr | None = Field(
        None, description="Bearer token HTTP clients must present; required on a non-loopback address."
    )
    token_file: str | None = Field(None, description="File holding the bearer token (instead of SWARM_MCP_TOKEN).")
    tokens_file: str | None = Field(
        None,
        description="File of HTTP clients, one a line: NAME TOKEN [daily_tokens=N] [max_sessions=N] (TOKEN may be "
        "sha256:HEX); re-read on SIGHUP.",
    )
    max_jobs_per_client: int = Field(
        100,
        ge=1,
        description="Most running jobs one HTTP client may hold (max_jobs= in the tokens file overrides it); past "
        "it a new call is refused as rate_limited, and nothing is queued or sent.",
    )
    max_sessions_per_client: int = Field(
        50,
        ge=1,
        description="Most MCP sessions one HTTP client may hold open (max_sessions= in the tokens file overrides it).",
    )
    session_idle: float = Field(
        600.0, gt=0, description="Seconds without a request after which an HTTP session is closed."
    )
    request_timeout: float = Field(
        15.0,
        gt=0,
        description="Seconds an HTTP connection has to send a whole request, or to read anything of a response "
        "it is sent, before it is closed.",
    )
    allowed_hosts: str | None = Field(
        None,
        description="Comma-separated Host values the HTTP transport accepts (host:* for any port), "
        "besides the bind address.",
    )
    allowed_origins: str | None = Field(
        None, description="Comma-separated Origin values accepted from browsers (scheme://host:* for any port)."
    )
    public_url: str | None = Field(
        None,
        description="The base URL hosts reach (https://, or http:// on loopback only), behind any TLS proxy; "
        "the resource OAuth tokens are for is its MCP path.",
    )
    oauth: Literal["builtin"] | None = Field(
        None,
        description="builtin: the gateway is its own OAuth authorization server; a person signs in once with "
        "the gateway token of their tokens-file line (needs SWARM_MCP_PUBLIC_URL).",
    )
    oauth_issuer: str | None = Field(
        None,
        description="The team's OAuth or OpenID provider (its issuer URL) whose JWT access tokens for this "
        "resource are accepted, mapped by SWARM_MCP_OAUTH_CLAIM onto identity: lines of the tokens file.",
    )
    oauth_claim: str = Field("sub", min_length=1, description="The access-token claim that names the person.")
    oauth_scope: str | None = Field(None, description="A scope every access token must carry (and we advertise).")
    oauth_introspection_client: str | None = Field(
        None, description="The gateway's client id at the issuer, to introspect opaque access tokens (RFC 7662)."
    )
    oauth_introspection_secret: SecretStr | None = Field(None, description="That client's secret.")
    oauth_only: bool = Field(
        False,
        description="With OAuth (an issuer or builtin): accept its access tokens only at the MCP endpoint, not "
        "the tokens file's tokens.",
    )
    oauth_access_ttl: int = Field(
        3600, ge=60, le=86_400, description="Seconds an access token of the built-in authorization server lasts."
    )
    oauth_refresh_ttl: int = Field(
        30 * 86_400,
        ge=3600,
        description="Seconds a refresh token of the built-in authorization server lasts unused (each use rotates it).",
    )
    oauth_private_clients: bool = Field(
        False,
        description="Let the built-in authorization server fetch client metadata documents from loopback and "
        "private addresses (one machine, tests); off, such a client id is refused.",
    )
    metrics_addr: str | None = Field(
        None,
        pattern=r"^\[?[0-9A-Za-z.:-]+\]?:[0-9]{1,5}$",
        description="HOST:PORT on which the Prometheus metrics are served, at /metrics, with no token (bind it "
        "where only the monitoring reaches); unset, they are served beside /mcp (see SWARM_MCP_METRICS_TOKEN).",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="The token Prometheus scrapes /metrics beside /mcp with; a client's token never reads them. "
        "Unset, they are served beside /mcp only to a server with no client tokens (loopback).",
    )
    max_line_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Longest line read from stdin (one JSON-RPC message); a longer one is dropped, said in the "
        "log, and serving goes on.",
    )
    max_result_chars: int = Field(
        60_000,
        ge=10_000,
        description="Longest tool result a host receives, in characters of its JSON; a longer answer comes in "
        "pages (get_result with offset reads on). Fits Claude Code's 25,000-token limit: docs/tools.md.",
    )
    max_response_bytes: int = Field(
        32 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest upstream response body read; a longer one is cut off and the call fails.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest HTTP request body accepted; a larger one is refused unread."
    )
    shutdown_grace: float = Field(
        10.0,
        ge=0,
        description="Seconds in-flight HTTP calls get to finish on SIGTERM/SIGINT before they are cancelled.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Level of the log written to stderr."
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        """A Redis URL is read (and refused in one sentence) before anything connects, and needs the extra."""
        if value is None:
            return None
        from swarm_inference_mcp.server.scaleout.url import parse_redis_url  # noqa: PLC0415 - only with Redis

        parse_redis_url(value.get_secret_value())
        try:
            import redis  # noqa: F401, PLC0415 - is the optional client installed?
        except ImportError:
            raise ValueError(REDIS_EXTRA_MISSING) from None
        return value

    @model_validator(mode="after")
    def _oauth(self) -> Settings:
        """OAuth needs the URL hosts reach and the tokens file that maps identities; https off loopback."""
        if self.oauth_issuer is None and self.oauth is None:
            return self
        if self.oauth_issuer is not None and self.oauth is not None:
            raise ValueError("SWARM_MCP_OAUTH=builtin and SWARM_MCP_OAUTH_ISSUER exclude each other: pick one")
        if self.public_url is None or self.tokens_file is None:
            which = "SWARM_MCP_OAUTH_ISSUER" if self.oauth is None else "SWARM_MCP_OAUTH=builtin"
            raise ValueError(f"{which} needs SWARM_MCP_PUBLIC_URL and SWARM_MCP_TOKENS_FILE")
        urls = {"SWARM_MCP_PUBLIC_URL": self.public_url, "SWARM_MCP_OAUTH_ISSUER": self.oauth_issuer}
        for name, url in urls.items():
            if url is None:
                continue
            parts = urlsplit(url)
            if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname or "")):
                raise ValueError(f"{name} must be an https:// URL (http:// only on loopback)")
        if self.oauth is not None and urlsplit(self.public_url).path.strip("/"):
            raise ValueError("with SWARM_MCP_OAUTH=builtin, SWARM_MCP_PUBLIC_URL is an origin, no path")
        return self

    @model_validator(mode="before")
    @classmethod
    def _provider_defaults(cls, data: Any) -> Any:
        """Each provider's own defaults under what was given for it."""
        if isinstance(data, dict):
            for spec in PROVIDERS:
                given: dict[str, Any] = data.get(spec.name) or data.get(spec.name.upper()) or {}
                data = {**data, spec.name: {**ProviderSettings.defaults(spec), **given}}
                data.pop(spec.name.upper(), None)
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what `server.environment.load_settings` passes: it reads the environment it is given."""
        return (init_settings,)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value

    @property
    def loopback(self) -> bool:
        """Whether the HTTP transport binds only this machine."""
        return is_loopback(self.host)

    @property
    def metrics_bind(self) -> tuple[str, int] | None:
        """Where the metrics are served on a bind of their own (`SWARM_MCP_METRICS_ADDR`), if anywhere."""
        if self.metrics_addr is None:
            return None
        host, _, port = self.metrics_addr.rpartition(":")
        return host.strip("[]"), int(port)

    def provider(self, name: str) -> ProviderSettings:
        """One provider's settings, by its name in `tools.PROVIDERS`."""
        return cast("ProviderSettings", getattr(self, name))

    def budgets(self) -> list[Budget]:
        """Every token budget that is set: lifetime, daily and monthly, for all providers and for each."""
        found = []
        for window in ("lifetime", "day", "month"):
            infix = {"lifetime": "", "day": "daily_", "month": "monthly_"}[window]
            for provider, prefix in [(None, ""), *((spec.name, f"{spec.name}_") for spec in PROVIDERS)]:
                name = f"{infix}token_budget"
                limit = getattr(self if provider is None else self.provider(provider), name)
                if limit is not None:
                    found.append(Budget(window, provider, limit, (prefix or "swarm_mcp_").upper() + name.upper()))
        return found

    def state_path(self) -> Path | None:
        """Where usage is kept: `SWARM_MCP_STATE_DB`, or the user's state directory; None when it is off."""
        if self.state_db is not None:
            return None if self.state_db.lower() == "off" else Path(self.state_db).expanduser()
        import platformdirs  # noqa: PLC0415 - only when the default path is needed

        return Path(platformdirs.user_state_dir("swarm-inference-mcp", appauthor=False)) / "usage.sqlite3"

    def endpoints(self) -> dict[str, Endpoint]:
        """One `Endpoint` per provider, from its settings."""
        return {spec.name: Endpoint(spec, self.provider(spec.name)) for spec in PROVIDERS}

    def shared_client(self) -> SharedClient:
        """Start building the one HTTP client these settings describe (in a thread: see `SharedClient`):
        a pool with room for every provider's concurrent requests."""
        connections = sum(self.provider(spec.name).max_concurrency for spec in PROVIDERS)
        return SharedClient(functools.partial(new_client, connections, self.connect_timeout))


def is_loopback(host: str) -> bool:
    """Whether a host name or address (bracketed or not) is this machine's loopback."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
