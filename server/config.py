"""The one settings object: read once from the environment, overridden by CLI flags, passed in.

Provider settings keep the vendors' own prefixes (`FORTYTWO_`, `SWARMS_`); the server's own
settings all start with `SWARM_MCP_`. Every setting except a secret is also a CLI flag, named after
the field (`--max-retries`, `--fortytwo-base-url`); secrets are never flags, since flags show in `ps`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model, field_validator

from swarm_inference_mcp.server.accounting.ledger import Budget
from swarm_inference_mcp.tools import PROVIDERS
from swarm_inference_mcp.tools.connection import Endpoint, SharedClient, new_client
from swarm_inference_mcp.tools.models import ProviderSpec

SECRET_FIELDS = frozenset({"fortytwo_api_key", "swarms_api_key", "token", "redis_url"})
LOOPBACK_NAMES = frozenset({"localhost"})
REDIS_EXTRA_MISSING = (
    "it needs the Redis client, which is not installed: pip install 'swarm-inference-mcp[redis]' "
    "(or uvx --from 'swarm-inference-mcp[redis]' swarm-inference-mcp)"
)


class ProviderSettings(BaseModel):
    """One provider's settings: `<NAME>_API_KEY`, `<NAME>_BASE_URL` and the rest (see `provider_fields`)."""

    model_config = ConfigDict(frozen=True)

    api_key: SecretStr | None
    base_url: str
    model: str
    max_concurrency: int
    token_budget: int | None
    daily_token_budget: int | None
    monthly_token_budget: int | None


def provider_fields(spec: ProviderSpec) -> dict[str, Any]:
    """The settings fields of one provider, named `<name>_<setting>`, whose aliases (the environment
    variables) keep the vendor's own prefix: `FORTYTWO_API_KEY`, `SWARMS_DAILY_TOKEN_BUDGET`."""
    label = spec.label
    every_process = "all server processes sharing the state file together; unset for no limit."

    def field(
        setting: str, kind: Any, default: Any, description: str, *, ge: int | None = None, le: int | None = None
    ) -> tuple[str, Any]:
        alias = f"{spec.name.upper()}_{setting.upper()}"
        return f"{spec.name}_{setting}", (kind, Field(default, alias=alias, description=description, ge=ge, le=le))

    return dict(
        [
            field("api_key", SecretStr | None, None, f"{label} API key."),
            field(
                "base_url", str, spec.default_base_url, f"{label} API base; requests go to {{base}}/chat/completions."
            ),
            field("model", str, spec.default_model, f"Default model of {spec.tool_name}."),
            field(
                "max_concurrency",
                int,
                spec.default_max_concurrency,
                f"Most simultaneous requests to {label}; further calls wait their turn.",
                ge=1,
                le=1000,
            ),
            field(
                "token_budget",
                int | None,
                None,
                f"Tokens this server may spend on {label} in its lifetime; unset for no limit.",
                ge=1,
            ),
            field(
                "daily_token_budget",
                int | None,
                None,
                f"Tokens spent on {label} per calendar day (local time), {every_process}",
                ge=1,
            ),
            field(
                "monthly_token_budget",
                int | None,
                None,
                f"Tokens spent on {label} per calendar month (local time), counted like the daily budget; "
                "unset for no limit.",
                ge=1,
            ),
        ]
    )


class ServerSettings(BaseModel):
    """Every knob of the server but the providers' own (`Settings` adds those, from `tools.PROVIDERS`).
    Field aliases are the environment variable names."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    timeout: float = Field(
        600.0,
        gt=0,
        alias="SWARM_MCP_TIMEOUT",
        description="Default deadline of one call in seconds, retries included (swarms take minutes).",
    )
    max_timeout: float = Field(
        1800.0,
        gt=0,
        alias="SWARM_MCP_MAX_TIMEOUT",
        description="Largest deadline a call may ask for with timeout_s; larger values are lowered to it.",
    )
    connect_timeout: float = Field(
        10.0, gt=0, alias="SWARM_MCP_CONNECT_TIMEOUT", description="Seconds to open a connection upstream."
    )
    max_retries: int = Field(
        2,
        ge=0,
        le=10,
        alias="SWARM_MCP_MAX_RETRIES",
        description="Retries after a 429, 502/503/504 or refused connection; 0 turns retries off.",
    )
    retry_server_errors: bool = Field(
        False,
        alias="SWARM_MCP_RETRY_SERVER_ERRORS",
        description="Also retry HTTP 500, which may bill a job twice.",
    )
    send_floor: float = Field(
        5.0,
        ge=0,
        alias="SWARM_MCP_SEND_FLOOR",
        description="A request that waited in the queue is not sent with fewer seconds of its deadline left; "
        "it fails as a timeout, unsent and unpaid.",
    )
    heartbeat: float = Field(
        15.0,
        gt=0,
        alias="SWARM_MCP_HEARTBEAT",
        description="Seconds of silence before a heartbeat progress notification (when the client asked for progress).",
    )
    wait: float = Field(
        45.0,
        ge=0,
        alias="SWARM_MCP_WAIT",
        description="Seconds a call waits for its answer before it hands back a job handle (get_result collects it); "
        "under the 60 s most hosts allow a tool call.",
    )
    task_handover: float = Field(
        5.0,
        ge=0,
        alias="SWARM_MCP_TASK_HANDOVER",
        description="Seconds a call from a host that runs long calls as tasks (the 2026-07-28 Tasks extension) "
        "waits for its answer before it becomes a task the host polls; a faster answer comes back directly.",
    )
    task_poll: float = Field(
        5.0,
        gt=0,
        alias="SWARM_MCP_TASK_POLL",
        description="Seconds a host is asked to wait between two polls of a running task.",
    )
    job_ttl: float = Field(
        3600.0,
        gt=0,
        alias="SWARM_MCP_JOB_TTL",
        description="Seconds a finished job's outcome is kept for get_result after a handle was handed out.",
    )
    max_jobs: int = Field(
        1000,
        ge=1,
        alias="SWARM_MCP_MAX_JOBS",
        description="Most finished job outcomes kept per client (over stdio: in all); that client's oldest is "
        "forgotten first, never another client's.",
    )
    cache_ttl: float = Field(
        0.0,
        ge=0,
        alias="SWARM_MCP_CACHE_TTL",
        description="Seconds a finished answer serves exact repeats of its request; 0 turns the cache off.",
    )
    share_between_clients: bool = Field(
        False,
        alias="SWARM_MCP_SHARE_BETWEEN_CLIENTS",
        description="Let a gateway client join another client's identical request in flight (or its cached "
        "answer) instead of paying again; it is told the answer was shared, its budget is checked, and its "
        "usage row is marked shared.",
    )
    token_budget: int | None = Field(
        None,
        ge=1,
        alias="SWARM_MCP_TOKEN_BUDGET",
        description="Total tokens this server may spend in its lifetime; further calls are refused once spent.",
    )
    daily_token_budget: int | None = Field(
        None,
        ge=1,
        alias="SWARM_MCP_DAILY_TOKEN_BUDGET",
        description="Tokens spent on all providers together per calendar day (local time), all server "
        "processes sharing the state file together; unset for no limit.",
    )
    monthly_token_budget: int | None = Field(
        None,
        ge=1,
        alias="SWARM_MCP_MONTHLY_TOKEN_BUDGET",
        description="Tokens spent on all providers together per calendar month (local time), counted "
        "like the daily budget; unset for no limit.",
    )
    state_db: str | None = Field(
        None,
        alias="SWARM_MCP_STATE_DB",
        description="The usage state file shared by every server process of this user (SQLite), or off to keep "
        "usage in memory; default usage.sqlite3 in the user's state directory.",
    )
    redis_url: SecretStr | None = Field(
        None,
        alias="SWARM_MCP_REDIS_URL",
        description="Redis through which several instances share jobs, identical in-flight calls, usage and "
        "budgets (redis://host:6379/0, rediss:// for TLS); unset: each process keeps its own, usage in the state file.",
    )
    redis_password_file: str | None = Field(
        None,
        alias="SWARM_MCP_REDIS_PASSWORD_FILE",
        description="File holding the Redis password (instead of putting it in SWARM_MCP_REDIS_URL).",
    )
    redis_lease: float = Field(
        10.0,
        ge=1,
        le=600,
        alias="SWARM_MCP_REDIS_LEASE",
        description="Seconds an instance sharing Redis may go unheard before its running jobs are reported lost.",
    )
    transport: Literal["stdio", "streamable-http"] = Field(
        "stdio", alias="SWARM_MCP_TRANSPORT", description="stdio, or streamable-http for a shared server."
    )
    host: str = Field(
        "127.0.0.1", alias="SWARM_MCP_HOST", description="Address the HTTP transport binds; loopback by default."
    )
    port: int = Field(8000, ge=0, le=65535, alias="SWARM_MCP_PORT", description="Port of the HTTP transport.")
    path: str = Field("/mcp", alias="SWARM_MCP_PATH", description="URL path of the MCP endpoint.")
    stateless: bool = Field(
        False,
        alias="SWARM_MCP_STATELESS",
        description="Keep no session state between HTTP requests, so instances can sit behind any load balancer.",
    )
    token: SecretStr | None = Field(
        None,
        alias="SWARM_MCP_TOKEN",
        description="Bearer token HTTP clients must present; required on a non-loopback address.",
    )
    token_file: str | None = Field(
        None, alias="SWARM_MCP_TOKEN_FILE", description="File holding the bearer token (instead of SWARM_MCP_TOKEN)."
    )
    tokens_file: str | None = Field(
        None,
        alias="SWARM_MCP_TOKENS_FILE",
        description="File of HTTP clients, one a line: NAME TOKEN [daily_tokens=N] [max_sessions=N] (TOKEN may be "
        "sha256:HEX); re-read on SIGHUP.",
    )
    max_jobs_per_client: int = Field(
        100,
        ge=1,
        alias="SWARM_MCP_MAX_JOBS_PER_CLIENT",
        description="Most running jobs one HTTP client may hold (max_jobs= in the tokens file overrides it); past "
        "it a new call is refused as rate_limited, and nothing is queued or sent.",
    )
    max_sessions_per_client: int = Field(
        50,
        ge=1,
        alias="SWARM_MCP_MAX_SESSIONS_PER_CLIENT",
        description="Most MCP sessions one HTTP client may hold open (max_sessions= in the tokens file overrides it).",
    )
    session_idle: float = Field(
        600.0,
        gt=0,
        alias="SWARM_MCP_SESSION_IDLE",
        description="Seconds without a request after which an HTTP session is closed.",
    )
    request_timeout: float = Field(
        15.0,
        gt=0,
        alias="SWARM_MCP_REQUEST_TIMEOUT",
        description="Seconds an HTTP connection has to send a whole request before it is closed.",
    )
    allowed_hosts: str | None = Field(
        None,
        alias="SWARM_MCP_ALLOWED_HOSTS",
        description="Comma-separated Host values the HTTP transport accepts (host:* for any port), "
        "besides the bind address.",
    )
    allowed_origins: str | None = Field(
        None,
        alias="SWARM_MCP_ALLOWED_ORIGINS",
        description="Comma-separated Origin values accepted from browsers (scheme://host:* for any port).",
    )
    metrics_addr: str | None = Field(
        None,
        alias="SWARM_MCP_METRICS_ADDR",
        pattern=r"^\[?[0-9A-Za-z.:-]+\]?:[0-9]{1,5}$",
        description="HOST:PORT on which the Prometheus metrics are served, at /metrics, with no token (bind it "
        "where only the monitoring reaches); unset, they are served beside /mcp and need a client's token.",
    )
    max_line_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        alias="SWARM_MCP_MAX_LINE_BYTES",
        description="Longest line read from stdin (one JSON-RPC message); a longer one is dropped and answered "
        "with a parse error.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        alias="SWARM_MCP_MAX_BODY_BYTES",
        description="Largest HTTP request body accepted; a larger one is refused unread.",
    )
    shutdown_grace: float = Field(
        10.0,
        ge=0,
        alias="SWARM_MCP_SHUTDOWN_GRACE",
        description="Seconds in-flight HTTP calls get to finish on SIGTERM/SIGINT before they are cancelled.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", alias="SWARM_MCP_LOG_LEVEL", description="Level of the log written to stderr."
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
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False

    @property
    def metrics_bind(self) -> tuple[str, int] | None:
        """Where the metrics are served on a bind of their own (`SWARM_MCP_METRICS_ADDR`), if anywhere."""
        if self.metrics_addr is None:
            return None
        host, _, port = self.metrics_addr.rpartition(":")
        return host.strip("[]"), int(port)

    def deadline_s(self, requested: float | None) -> float:
        """The deadline of one call: what it asked for, or the default, never above the maximum."""
        return min(requested if requested is not None else self.timeout, self.max_timeout)

    def provider(self, name: str) -> ProviderSettings:
        """One provider's settings, from its `<name>_*` fields."""
        return ProviderSettings.model_validate(
            {setting: getattr(self, f"{name}_{setting}") for setting in ProviderSettings.model_fields}
        )

    def budgets(self) -> list[Budget]:
        """Every token budget that is set: lifetime, daily and monthly, for all providers and for each."""
        found = []
        for window in ("lifetime", "day", "month"):
            infix = {"lifetime": "", "day": "daily_", "month": "monthly_"}[window]
            for provider, prefix in [(None, ""), *((spec.name, f"{spec.name}_") for spec in PROVIDERS)]:
                name = f"{prefix}{infix}token_budget"
                limit = getattr(self, name)
                if limit is not None:
                    found.append(Budget(window, provider, limit, type(self).model_fields[name].alias or name))
        return found

    def state_path(self) -> Path | None:
        """Where usage is kept: `SWARM_MCP_STATE_DB`, or the user's state directory; None when it is off."""
        if self.state_db is not None:
            return None if self.state_db.lower() == "off" else Path(self.state_db).expanduser()
        import platformdirs  # noqa: PLC0415 - only when the default path is needed

        return Path(platformdirs.user_state_dir("swarm-inference-mcp", appauthor=False)) / "usage.sqlite3"

    def endpoints(self) -> dict[str, Endpoint]:
        """One `Endpoint` per provider, from its settings."""
        endpoints = {}
        for spec in PROVIDERS:
            own = self.provider(spec.name)
            endpoints[spec.name] = Endpoint(
                spec=spec,
                base_url=own.base_url,
                api_key=own.api_key,
                model=own.model,
                max_concurrency=own.max_concurrency,
            )
        return endpoints

    def shared_client(self) -> SharedClient:
        """Start building the one HTTP client these settings describe (in a thread: see `SharedClient`):
        a pool with room for every provider's concurrent requests."""
        connections = sum(self.provider(spec.name).max_concurrency for spec in PROVIDERS)
        return SharedClient(functools.partial(new_client, connections, self.connect_timeout))


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


if TYPE_CHECKING:
    Settings = ServerSettings
else:
    Settings = create_model(
        "Settings",
        __base__=ServerSettings,
        __doc__="Every knob of the server, the providers' own included. Field aliases are the environment variables.",
        __validators__={
            "_base_urls": field_validator(*(f"{spec.name}_base_url" for spec in PROVIDERS))(
                classmethod(lambda cls, value: _http_url(value))
            )
        },
        **{name: field for spec in PROVIDERS for name, field in provider_fields(spec).items()},
    )


_UNFILLED = re.compile(r"\$\{user_config\.[^}]*\}")
"""What an MCPB host leaves in a variable for an optional setting the user left empty (it substitutes
only the settings it has a value for)."""


def load_settings(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings from the environment, then CLI overrides (by field name); empty values count as
    unset, and so does a bundle's unfilled `${user_config.…}` placeholder (never sent upstream as a key).

    The token file (`SWARM_MCP_TOKEN_FILE` or `--token-file`) is read here, once.
    """
    data: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        alias = field.alias or name
        value = environ.get(alias, "").strip()
        if value and not _UNFILLED.fullmatch(value):
            data[name] = value
    for name, value in (overrides or {}).items():
        if value is not None:
            data[name] = value
    token_file = data.get("token_file")
    if token_file and "token" not in data:
        data["token"] = Path(token_file).read_text(encoding="utf-8").strip() or None
    return Settings.model_validate(data)
