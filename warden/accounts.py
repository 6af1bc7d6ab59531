"""An account as the library uses it: plain configuration, no secrets.

The flows build an :class:`AccountConfig` from the account's Prefect Block;
tests and other callers can build one directly.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, model_validator

from warden.connectors.http import HttpSettings
from warden.credentials.oauth import OAuthSettings
from warden.credentials.policies import AccountPaths
from warden.errors import AccountNotFound

__all__ = [
    "ACCOUNT_NAME",
    "ACCOUNT_NAME_RULE",
    "AccessPath",
    "AccountConfig",
    "BrowserBudget",
    "check_account_name",
]

ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ACCOUNT_NAME_RULE = "1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit"


def check_account_name(name: str) -> None:
    """Raise :class:`AccountNotFound` with the naming rule when ``name`` cannot be an account name."""
    if not ACCOUNT_NAME.fullmatch(name):
        raise AccountNotFound(f"{name!r} is not a valid account name: use {ACCOUNT_NAME_RULE}.")


class AccessPath(StrEnum):
    """A way to reach an account's data, in the order the account prefers them."""

    # An official API with an OAuth 2.0 access token (IMAP with XOAUTH2, or an HTTP API).
    OAUTH = "oauth"
    # A saved browser session replayed over HTTP, renewed by a Playwright login.
    BROWSER_SESSION = "browser-session"


class BrowserBudget(BaseModel):
    """Limits for one browser job of this account."""

    timeout_seconds: float = Field(default=60.0, description="Wall-clock limit of one login.")
    max_cpu_seconds: float = Field(default=30.0, description="CPU seconds the job's Chromium processes may use.")
    max_memory_bytes: int = Field(default=1024 * 1024 * 1024, description="Unique memory of the job's Chromium tree.")


class AccountConfig(BaseModel):
    """Everything a sync needs to know about one account, except its secrets."""

    name: str = Field(pattern=ACCOUNT_NAME.pattern, description=f"Account name: {ACCOUNT_NAME_RULE}.")
    connector: str = Field(default="roundcube", description="Connector kind, a name from the connector registry.")
    connector_options: dict[str, Any] = Field(
        default_factory=dict, description="Settings the connector kind defines, validated by the connector."
    )
    base_url: str
    username: str
    mailboxes: list[str] = Field(default_factory=lambda: ["INBOX"])
    access_paths: list[AccessPath] = Field(
        default_factory=lambda: [AccessPath.BROWSER_SESSION],
        min_length=1,
        description="Access paths in order of preference; the sync takes the first one that is available.",
    )
    oauth: OAuthSettings | None = Field(default=None, description="The OAuth client of the oauth access path.")
    api_connector: str = Field(default="imap", description="API connector kind the oauth access path reads with.")
    api_options: dict[str, Any] = Field(default_factory=dict, description="Settings of the API connector kind.")

    kv_mount: str = "secret"
    login_secret_path: str
    transit_mount: str = "transit"
    session_key: str

    session_lifetime_seconds: float = Field(default=600.0, gt=0)
    refresh_margin_fraction: float = Field(default=0.2, ge=0, lt=1)
    token_ttl_seconds: int = Field(default=60, ge=5, le=600)

    http: HttpSettings = Field(default_factory=HttpSettings)
    browser: BrowserBudget = Field(default_factory=BrowserBudget)
    ocr_enabled: bool = True
    extraction_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extraction limits by field name of ExtractionSettings, e.g. max_depth or timeout_seconds.",
    )

    @model_validator(mode="after")
    def _oauth_path_has_a_client(self) -> AccountConfig:
        if AccessPath.OAUTH in self.access_paths and self.oauth is None:
            raise ValueError("the access path 'oauth' needs the 'oauth' settings (client id and token URL)")
        if len(set(self.access_paths)) != len(self.access_paths):
            raise ValueError(f"access_paths names a path twice: {[path.value for path in self.access_paths]}")
        return self

    @property
    def oauth_grant_path(self) -> str | None:
        if self.oauth is None:
            return None
        return self.oauth.grant_path or f"oauth/{self.name}"

    @property
    def paths(self) -> AccountPaths:
        return AccountPaths(
            account=self.name,
            kv_mount=self.kv_mount,
            login_secret_path=self.login_secret_path,
            transit_mount=self.transit_mount,
            session_key=self.session_key,
            oauth_grant_path=self.oauth_grant_path,
        )

    @property
    def site(self) -> str:
        """The host the account's requests go to, which names its per-site limits."""
        return urlsplit(self.base_url).netloc
