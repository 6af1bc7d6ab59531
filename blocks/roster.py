"""The model roster Block: the vetted models and the routes to them, with vault paths, never API keys."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from warden.routing.classify import SensitivityRule
from warden.routing.roster import Roster, RosterModel, Route


class ModelRoster(Block):
    """The fixed list of models that extracted documents may be sent to, and which one gets what.

    Each route maps one sensitivity and task type to exactly one model. The
    API key of an HTTP model lives in the vault at ``api_key_path`` (field
    ``api_key``); each call reads it with its own short-lived token.

    Example:
        ```python
        from blocks.roster import ModelRoster

        roster_block = await ModelRoster.aload("default")
        roster = roster_block.to_roster()
        ```
    """

    _block_type_name: ClassVar[str] = "Warden Model Roster"
    _block_type_slug: ClassVar[str] = "warden-model-roster"
    _description: ClassVar[str] = "Vetted models, routes by sensitivity and task type, and vault paths of API keys."

    models: list[RosterModel] = Field(description="The vetted models: name, kind, allowed sensitivity and tasks.")
    routes: list[Route] = Field(description="One model per sensitivity and task type; pairs not listed are not sent.")
    sensitivity_rule: SensitivityRule = Field(
        default_factory=SensitivityRule, description="Which findings of personal data make a document sensitive."
    )
    vault_block: str = Field(
        default="default", description="Name of the Warden Vault Connection Block that issues the key tokens."
    )
    key_token_ttl_seconds: int = Field(default=60, ge=1, description="TTL of each per-call vault token, in seconds.")

    def to_roster(self) -> Roster:
        """Return the checked roster; raise :class:`~warden.errors.ConfigError` on a bad route."""
        return Roster(self.models, self.routes)
