"""`ask_both`'s arguments: one conversation for every provider, and a model for each (`<name>_model`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, create_model

from swarm_inference_mcp.tools import PROVIDERS
from swarm_inference_mcp.tools.models import Conversation


class BothArgsBase(Conversation):
    """What `ask_both` takes besides the per-provider models that `BothArgs` adds."""

    def model_for(self, provider: str) -> str | None:
        """The model this call asks of `provider`, or None for its default."""
        model: str | None = getattr(self, f"{provider}_model")
        return model


if TYPE_CHECKING:
    BothArgs = BothArgsBase
else:
    BothArgs = create_model(
        "BothArgs",
        __base__=BothArgsBase,
        __doc__="Arguments of `ask_both`: one conversation, asked of every provider at once.",
        **{
            f"{spec.name}_model": (
                str | None,
                Field(
                    default=None,
                    min_length=1,
                    max_length=200,
                    description=f"{spec.label} model; default: the server's.",
                ),
            )
            for spec in PROVIDERS
        },
    )
