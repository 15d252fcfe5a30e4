"""Settings as people give them: environment variables and CLI flags, read once into `Settings`.

`VARIABLES` lists every setting with its environment variable and its flag, named after it
(`--max-retries`, `--fortytwo-base-url`); secrets are never flags, since flags show in `ps`. The
CLI builds its flags from it, `check` shows it, the docs' tests hold the docs to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource

from swarm_inference_mcp.server.config import Settings
from swarm_inference_mcp.tools import PROVIDERS
from swarm_inference_mcp.tools.connection import ProviderSettings

SECRET_FIELDS = frozenset(
    {"fortytwo_api_key", "swarms_api_key", "token", "redis_url", "metrics_token", "oauth_introspection_secret"}
)


@dataclass(frozen=True)
class Variable:
    """One setting as people give it."""

    name: str
    """Its name in flags and `SECRET_FIELDS`: the field's, after its provider's (`fortytwo_base_url`)."""
    env: str
    path: tuple[str, ...]
    """Where it is in `Settings`: `("timeout",)`, `("fortytwo", "base_url")`."""
    field: FieldInfo
    default: Any
    description: str

    @property
    def flag(self) -> str | None:
        """Its CLI flag; None for a secret."""
        return None if self.name in SECRET_FIELDS else "--" + self.name.replace("_", "-")

    def value(self, settings: Settings) -> Any:
        found: Any = settings
        for step in self.path:
            found = getattr(found, step)
        return found


def _variables() -> tuple[Variable, ...]:
    own = [
        Variable(
            name, field.alias or f"SWARM_MCP_{name.upper()}", (name,), field, field.default, field.description or ""
        )
        for name, field in Settings.model_fields.items()
        if name not in {spec.name for spec in PROVIDERS}
    ]
    for spec in PROVIDERS:
        defaults = ProviderSettings.defaults(spec)
        for setting, field in ProviderSettings.model_fields.items():
            description = (field.description or "").format(label=spec.label, tool=spec.tool_name)
            default = defaults.get(setting, field.default)
            own.append(
                Variable(
                    f"{spec.name}_{setting}",
                    f"{spec.name.upper()}_{setting.upper()}",
                    (spec.name, setting),
                    field,
                    default,
                    description,
                )
            )
    return tuple(own)


VARIABLES = _variables()
"""Every setting, the server's own first, then each provider's."""
BY_NAME = {variable.name: variable for variable in VARIABLES}
BY_ENV = {variable.env: variable for variable in VARIABLES}


_UNFILLED = re.compile(r"\$\{user_config\.[^}]*\}")
"""What an MCPB host leaves in a variable for an optional setting the user left empty (it substitutes
only the settings it has a value for)."""


def load_settings(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings from `environ` (pydantic-settings reads the variables, a provider's into its
    nested settings), then CLI overrides (by `Variable.name`). Only the variables of `VARIABLES` are
    read (the CLI warns of others that look like ours). Empty values count as unset, and so does a
    bundle's unfilled `${user_config.…}` placeholder (never sent upstream as a key).

    The token file (`SWARM_MCP_TOKEN_FILE` or `--token-file`) is read here, once.
    """
    # Another variable, even with our prefix, is not read.
    given = {name: value.strip() for name, value in environ.items() if name.upper() in BY_ENV}
    source = EnvSettingsSource(Settings)
    source.env_vars = {name.lower(): value for name, value in given.items() if value and not _UNFILLED.fullmatch(value)}
    data: dict[str, Any] = dict(source())
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        variable = BY_NAME[name]
        if len(variable.path) == 1:
            data[name] = value
        else:
            provider, setting = variable.path
            data[provider] = {**data.get(provider, {}), setting: value}
    token_file = data.get("token_file")
    if token_file and "token" not in data:
        data["token"] = Path(token_file).read_text(encoding="utf-8").strip() or None
    return Settings(**data)
