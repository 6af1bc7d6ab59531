"""The account Block: one connector account's configuration and vault paths, never its secrets."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import BlockDocument
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from pydantic import Field

from warden.accounts import AccessPath, AccountConfig, BrowserBudget
from warden.connectors.http import HttpSettings
from warden.credentials.oauth import OAuthSettings


class ConnectorAccount(Block):
    """A live-session account that Connector Warden keeps in sync.

    The Block's name is the account's name. Its password lives in the vault
    at ``login_secret_path``; its saved session is encrypted with the transit
    key ``session_key``.

    Example:
        ```python
        from blocks.account import ConnectorAccount

        account = await ConnectorAccount.aload("demo")
        config = account.to_config("demo")
        ```
    """

    _block_type_name: ClassVar[str] = "Warden Connector Account"
    _block_type_slug: ClassVar[str] = "warden-connector-account"
    _description: ClassVar[str] = "One account Connector Warden syncs: connector, URL, vault paths and limits."

    connector: str = Field(default="roundcube", description="Connector kind: roundcube, or another registered kind.")
    connector_options: dict[str, Any] = Field(
        default_factory=dict, description="Settings of the connector kind (see its module), never secrets."
    )
    base_url: str = Field(description="Base URL of the site, e.g. https://mail.example.com/.")
    username: str = Field(description="User name the connector logs in with.")
    mailboxes: list[str] = Field(default_factory=lambda: ["INBOX"], description="Mailboxes to sync.")
    access_paths: list[AccessPath] = Field(
        default_factory=lambda: [AccessPath.BROWSER_SESSION],
        description="Access paths in order of preference: oauth (an official API), browser-session.",
    )
    oauth: OAuthSettings | None = Field(
        default=None,
        description="OAuth client of the oauth path: client id, endpoints, scope. Secrets stay in the vault.",
    )
    api_connector: str = Field(default="imap", description="API connector of the oauth path: imap or http-api.")
    api_options: dict[str, Any] = Field(
        default_factory=dict, description='Settings of the API connector, e.g. {"host": "imap.example.com"}.'
    )
    vault_block: str = Field(default="default", description="Name of the Warden Vault Connection Block to use.")
    kv_mount: str = Field(default="secret", description="KV v2 mount that stores the login secret.")
    login_secret_path: str = Field(description="Path of the login secret on the KV mount, with a 'password' key.")
    transit_mount: str = Field(default="transit", description="Transit mount that encrypts saved sessions.")
    session_key: str = Field(description="Transit key name for this account's saved sessions.")
    session_lifetime_seconds: float = Field(
        default=600.0, description="Idle lifetime of a session at the site, in seconds (Roundcube: session_lifetime)."
    )
    refresh_margin_fraction: float = Field(
        default=0.2, description="Refresh when this fraction of the lifetime or less is left (jittered)."
    )
    token_ttl_seconds: int = Field(default=60, description="TTL of each per-action vault token, in seconds.")
    http_timeout_seconds: float = Field(default=20.0, description="Timeout of each HTTP request, in seconds.")
    http_max_attempts: int = Field(default=4, description="Attempts per HTTP request on 429, 5xx or network errors.")
    browser_timeout_seconds: float = Field(default=60.0, description="Wall-clock limit of one browser login.")
    browser_max_cpu_seconds: float = Field(default=30.0, description="CPU seconds one browser login may use.")
    browser_max_memory_bytes: int = Field(
        default=1024 * 1024 * 1024, description="Unique memory one browser login's Chromium may use, in bytes."
    )
    ocr_enabled: bool = Field(default=True, description="Run OCR on images and on PDF pages that have no text.")
    extraction_options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            'Extraction limits by name, e.g. {"max_depth": 12, "timeout_seconds": 300}; '
            "see warden.extraction.ExtractionSettings. Never passwords."
        ),
    )

    def to_config(self, name: str) -> AccountConfig:
        """Return the library's view of this account."""
        return AccountConfig(
            name=name,
            connector=self.connector,
            connector_options=self.connector_options,
            base_url=self.base_url,
            username=self.username,
            mailboxes=self.mailboxes,
            access_paths=self.access_paths,
            oauth=self.oauth,
            api_connector=self.api_connector,
            api_options=self.api_options,
            kv_mount=self.kv_mount,
            login_secret_path=self.login_secret_path,
            transit_mount=self.transit_mount,
            session_key=self.session_key,
            session_lifetime_seconds=self.session_lifetime_seconds,
            refresh_margin_fraction=self.refresh_margin_fraction,
            token_ttl_seconds=self.token_ttl_seconds,
            http=HttpSettings(timeout_seconds=self.http_timeout_seconds, max_attempts=self.http_max_attempts),
            browser=BrowserBudget(
                timeout_seconds=self.browser_timeout_seconds,
                max_cpu_seconds=self.browser_max_cpu_seconds,
                max_memory_bytes=self.browser_max_memory_bytes,
            ),
            ocr_enabled=self.ocr_enabled,
            extraction_options=self.extraction_options,
        )


async def account_block_documents() -> list[BlockDocument]:
    """Return every saved Warden Connector Account Block, sorted by name; none when its type is not registered yet."""
    async with get_client() as client:
        try:
            documents = await client.read_block_documents_by_type(ConnectorAccount.get_block_type_slug())
        except ObjectNotFound:
            return []
        except PrefectHTTPStatusError as exc:
            # Prefect returns 404 "Block type not found" on a server where no account was ever registered.
            if exc.response.status_code == 404:
                return []
            raise
    return sorted((document for document in documents if document.name), key=lambda document: document.name)


async def registered_account_names() -> list[str]:
    """Return the names of every saved Warden Connector Account Block, sorted."""
    return [document.name for document in await account_block_documents()]
