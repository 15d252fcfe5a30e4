"""Providers and HTTP: argument models, request mapping, the upstream client, the error tree."""

from tools import fortytwo, swarms
from tools.models import ProviderSpec

PROVIDERS: tuple[ProviderSpec, ...] = (fortytwo.SPEC, swarms.SPEC)
"""Every provider the server offers, in the order their tools are listed."""
