"""Providers and HTTP: argument models, request mapping, the upstream client, the error tree."""

from swarm_inference_mcp.tools.models import ProviderSpec
from swarm_inference_mcp.tools.providers import fortytwo, swarms

PROVIDERS: tuple[ProviderSpec, ...] = (fortytwo.SPEC, swarms.SPEC)
"""Every provider the server offers, in the order their tools are listed."""
