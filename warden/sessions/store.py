"""Encrypted, versioned storage of an account's session.

The state is serialised to JSON in memory, encrypted with the account's
transit key using the action's scoped token, and stored as ciphertext in the
document store. Every save adds a version and the store keeps the last five,
so a bad save does not overwrite the previous working session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from warden.credentials.policies import AccountPaths
from warden.credentials.tokens import ScopedToken
from warden.credentials.vault import VaultClient
from warden.sessions.forecast import Forecast
from warden.sessions.state import SessionState
from warden.store import DocumentStore

__all__ = ["LoadedSession", "SessionStore"]

logger = logging.getLogger("warden.sessions")


@dataclass(frozen=True)
class LoadedSession:
    """A decrypted session and its stored metadata."""

    state: SessionState
    version: int
    captured_at: datetime
    last_valid_at: datetime | None
    expires_at: datetime | None


class SessionStore:
    """Load and save one account's session through the vault's transit engine."""

    def __init__(self, documents: DocumentStore, vault: VaultClient, paths: AccountPaths) -> None:
        self._documents = documents
        self._vault = vault
        self._paths = paths

    @property
    def account(self) -> str:
        return self._paths.account

    def has_session(self) -> bool:
        return self._documents.latest_session(self.account) is not None

    def load(self, token: ScopedToken) -> LoadedSession | None:
        """Decrypt the newest session, or return None when none was ever saved.

        Raises :class:`warden.errors.StateCorrupt` when the newest version
        cannot be decrypted or parsed.
        """
        stored = self._documents.latest_session(self.account)
        if stored is None:
            return None

        plaintext = self._vault.decrypt(token, self._paths, stored.ciphertext)
        state = SessionState.from_bytes(plaintext, account=self.account)
        state.register_secrets()
        return LoadedSession(
            state=state,
            version=stored.version,
            captured_at=stored.captured_at,
            last_valid_at=stored.last_valid_at,
            expires_at=stored.expires_at,
        )

    def save(
        self,
        token: ScopedToken,
        state: SessionState,
        *,
        last_valid_at: datetime | None,
        forecast: Forecast,
        source: str,
    ) -> int:
        """Encrypt and store ``state`` as a new version; return the version number.

        ``source`` names what produced this version, e.g. ``browser-login`` or ``probe``.
        """
        ciphertext = self._vault.encrypt(token, self._paths, state.to_bytes())
        version = self._documents.save_session(
            self.account,
            ciphertext,
            captured_at=state.captured_at,
            last_valid_at=last_valid_at,
            expires_at=forecast.expires_at,
            forecast_source=forecast.source,
            source=source,
        )
        logger.info(
            "session.saved account=%s version=%d source=%s cookies=%d expires_at=%s forecast=%s",
            self.account,
            version,
            source,
            len(state.cookies),
            forecast.expires_at.isoformat() if forecast.expires_at else None,
            forecast.source,
        )
        return version
