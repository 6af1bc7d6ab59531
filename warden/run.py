"""What one sync of one account carries from step to step.

A :class:`SyncRun` contains the account's configuration, the vault session, the
ledger of issued tokens, the stores and the connector, plus what the
orchestrator lends it: an event sink and a limiter for shared resources. It is
a plain class on purpose: Prefect passes it to every task by reference.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, Field

from warden.accounts import AccountConfig
from warden.connectors.base import ApiConnector, ProbeResult
from warden.connectors.http import request_gate
from warden.connectors.registry import build_api_connector, build_connector
from warden.credentials.oauth import AccessToken
from warden.credentials.policies import Action
from warden.credentials.tokens import IssuedToken, RevocationProof, ScopedToken, TokenLedger, WrappedToken, utc_now
from warden.credentials.vault import VaultClient
from warden.events import EventName, EventSink, LoggingSink, WardenEvent
from warden.sessions.browser import BrowserPool, get_browser_pool
from warden.sessions.store import SessionStore
from warden.store import DocumentStore

# A token with less than this left is replaced before use, so no vault request fails on its expiry.
TOKEN_RENEW_MARGIN_SECONDS = 10.0
# The action under which the token journal records the runner's own AppRole login token.
RUNNER_LOGIN_ACTION = "runner-login"

__all__ = ["ExtractOutcome", "FetchOutcome", "Limiter", "NoLimits", "SyncRun", "SyncSummary"]


class Limiter(Protocol):
    """Slots of shared resources, held across worker processes by the orchestrator."""

    def browser_slot(self) -> AbstractAsyncContextManager[None]: ...

    def site_slot(self, site: str) -> AbstractAsyncContextManager[None]: ...

    async def site_rate(self, site: str) -> None:
        """Wait for the site's request rate to allow one more request."""
        ...


class NoLimits:
    """A limiter that never waits, for library use without an orchestrator."""

    @asynccontextmanager
    async def browser_slot(self) -> AsyncIterator[None]:
        yield

    @asynccontextmanager
    async def site_slot(self, site: str) -> AsyncIterator[None]:
        yield

    async def site_rate(self, site: str) -> None:
        return None


class SyncSummary(BaseModel):
    """The outcome of one sync, as ``warden sync --json`` prints it and the run artifact shows it."""

    account: str
    access_path: str = Field(description="The access path that served the sync: oauth or browser-session.")
    probe: str = Field(description="State the probe returned before any refresh.")
    refreshed: bool = False
    messages_seen: int = Field(default=0, description="New messages fetched and stored by this run.")
    attachments_fetched: int = 0
    attachments_extracted: int = 0
    attachments_skipped: int = Field(default=0, description="Attachments found encrypted or of an unsupported type.")
    attachments_pending: int = Field(default=0, description="Attachments of this account still waiting for extraction.")
    attachments_deferred: int = Field(
        default=0, description="Attachments whose OCR waits for the background extraction flow."
    )
    failed: int = Field(default=0, description="Attachments whose extraction failed, plus 1 when the sync failed.")
    run_url: str | None = None
    tokens_issued: int = 0
    tokens_revoked: int = 0
    abandoned_runs: int = Field(default=0, description="Runs of this account whose worker died, closed by this run.")
    abandoned_tokens_revoked: int = Field(
        default=0, description="Tokens that earlier runs left unrevoked, revoked and proven by this run."
    )
    browser_launches: int = 0
    rescheduled_for: datetime | None = Field(
        default=None, description="When the rest of a fetch the site throttled for long will run."
    )
    rescheduled_run_url: str | None = Field(default=None, description="The scheduled flow run that fetches the rest.")
    paths_unavailable: list[str] = Field(
        default_factory=list, description="Access paths tried before the one that served, each with its reason."
    )
    error: str | None = None


@dataclass
class FetchOutcome:
    """Counts of what one fetch stored."""

    messages_new: int = 0
    attachments_new: int = 0
    requests_sent: int = 0
    mailboxes: dict[str, int] = field(default_factory=dict)
    # Set when the site asked to wait longer than a worker may sleep: the rest runs later.
    resume_after_seconds: float | None = None
    stopped_at: str = ""


@dataclass
class ExtractOutcome:
    """Counts of extraction outcomes for an account's pending attachments."""

    extracted: int = 0
    skipped: int = 0
    failed: int = 0
    # Attachments whose OCR waits for the background extraction flow.
    deferred: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


class SyncRun:
    """The state one sync of one account carries between its steps."""

    def __init__(
        self,
        account: AccountConfig,
        *,
        vault: VaultClient,
        documents: DocumentStore,
        events: EventSink | None = None,
        limiter: Limiter | None = None,
        browser_pool: BrowserPool | None = None,
        store_run_id: int | None = None,
    ) -> None:
        self.account = account
        self.vault = vault
        self.documents = documents
        self.events = events or LoggingSink()
        self.limiter = limiter or NoLimits()
        self.browser_pool = browser_pool or get_browser_pool()
        # With a run in the store, every token is journaled there too, so a later run can revoke
        # what this one leaves behind if its worker dies.
        self.store_run_id = store_run_id
        if store_run_id is None:
            self.ledger = TokenLedger()
        else:
            self.ledger = TokenLedger(on_issued=self._journal_token)
            vault.on_login = self._journal_login
        # Revocation proofs for the tokens that runs of dead workers left behind, from when this run took over.
        self.abandoned_proofs: list[RevocationProof] = []
        self.sessions = SessionStore(documents, vault, account.paths)
        self.connector = build_connector(account)
        self.probe_result: ProbeResult | None = None
        self.fetch_outcome: FetchOutcome | None = None
        self.extract_outcome: ExtractOutcome | None = None
        self.proofs: list[RevocationProof] = []
        # The oauth access path: the access token in use, one an API refused, and the provider revocations.
        self.access_token: AccessToken | None = None
        self.rejected_access_token: AccessToken | None = None
        self.oauth_proofs: list[RevocationProof] = []
        self._api_connector: ApiConnector | None = None

    @property
    def api_connector(self) -> ApiConnector:
        """The API connector of the oauth access path, built on first use."""
        if self._api_connector is None:
            self._api_connector = build_api_connector(self.account)
        return self._api_connector

    @asynccontextmanager
    async def site_access(self, site: str) -> AsyncIterator[None]:
        """Hold one of the site's concurrency slots, and pace every request sent meanwhile by its rate limit."""

        async def gate() -> None:
            await self.limiter.site_rate(site)

        async with self.limiter.site_slot(site):
            with request_gate(gate):
                yield

    def _journal_token(self, token: IssuedToken) -> None:
        assert self.store_run_id is not None
        self.documents.record_token(self.store_run_id, token)

    def _journal_login(self, accessor: str, ttl_seconds: int) -> None:
        issued_at = utc_now()
        self._journal_token(
            IssuedToken(
                accessor=accessor,
                account=self.account.name,
                action=RUNNER_LOGIN_ACTION,
                issued_at=issued_at,
                expires_at=issued_at + timedelta(seconds=ttl_seconds),
            )
        )

    def journal_revocations(self, proofs: list[RevocationProof]) -> None:
        """Record each proven revocation in the token journal, when this run keeps one."""
        if self.store_run_id is None:
            return
        for proof in proofs:
            if proof.proven and proof.revoked_at is not None:
                self.documents.record_revocation(proof.accessor, proof.revoked_at)

    def journal_logout(self, accessor: str) -> None:
        """Record that the vault accepted the revocation of the runner's own login token."""
        if self.store_run_id is not None:
            self.documents.record_revocation(accessor, utc_now())

    def emit(self, name: EventName, **payload: object) -> None:
        self.events.emit(WardenEvent(name=name, account=self.account.name, payload=dict(payload)))

    def token_for(self, wrapped: WrappedToken) -> ScopedToken:
        """Unwrap ``wrapped`` once; a retried task gets the token already unwrapped.

        A token about to expire (a task retried after its waits, a fetch that ran long) is
        replaced by a new one for the same action, recorded for the wipe like every other.
        """
        token = self.ledger.unwrapped(wrapped.accessor)
        if token is None:
            token = self.vault.unwrap(wrapped)
            self.ledger.record_unwrapped(token)
        if token.seconds_left < min(TOKEN_RENEW_MARGIN_SECONDS, self.account.token_ttl_seconds / 4):
            renewed = self.vault.issue(
                self.account.paths, Action(token.action), ttl_seconds=self.account.token_ttl_seconds
            )
            self.ledger.record_issued(renewed)
            self.emit(
                EventName.TOKEN_ISSUED,
                action=token.action,
                accessor=renewed.accessor,
                ttl_seconds=self.account.token_ttl_seconds,
                num_uses=renewed.num_uses,
                renews=token.accessor,
            )
            token = self.vault.unwrap(renewed)
            self.ledger.record_unwrapped(token, for_accessor=wrapped.accessor)
        return token
