"""Encrypted, versioned storage of an account's session.

The state is serialised to JSON in memory, encrypted with the account's
transit key using the action's scoped token, and stored as ciphertext in the
document store. Every save adds a version and the store keeps the last five,
so a bad save does not overwrite the previous working session, and a load
falls back to an older version when the newest cannot be read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from warden.credentials.policies import AccountPaths
from warden.credentials.tokens import ScopedToken
from warden.credentials.vault import VaultClient
from warden.errors import StateCorrupt
from warden.sessions.forecast import Forecast
from warden.sessions.state import SessionState
from warden.store import DocumentStore

__all__ = ["LoadedSession", "SessionStore"]

logger = logging.getLogger("warden.sessions")

# Older versions tried when the newest cannot be read; each try costs one use of the action's token.
FALLBACK_VERSIONS = 2


@dataclass(frozen=True)
class LoadedSession:
    """A decrypted session and its stored metadata."""

    state: SessionState
    version: int
    captured_at: datetime
    last_valid_at: datetime | None
    expires_at: datetime | None
    rejected_at: datetime | None = None


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

    def load(self, token: ScopedToken, *, fallback: bool = True) -> LoadedSession | None:
        """Decrypt the newest readable session, or return None when none was ever saved.

        When the newest version cannot be decrypted or parsed, up to
        ``FALLBACK_VERSIONS`` older versions are tried (unless ``fallback`` is False) before
        :class:`warden.errors.StateCorrupt` is raised for the newest one.
        Unreadable versions stay in the store until newer saves prune them.
        """
        versions = self._documents.session_versions(self.account)
        if not versions:
            return None

        newest_error: StateCorrupt | None = None
        tries = 1 + FALLBACK_VERSIONS if fallback else 1
        for stored in versions[:tries]:
            try:
                plaintext = self._vault.decrypt(token, self._paths, stored.ciphertext)
                state = SessionState.from_bytes(plaintext, account=self.account)
            except StateCorrupt as exc:
                logger.warning("session.unreadable account=%s version=%d error=%s", self.account, stored.version, exc)
                newest_error = newest_error or exc
                continue

            state.register_secrets()
            if stored.version != versions[0].version:
                logger.warning(
                    "session.fallback account=%s unreadable_version=%d used_version=%d",
                    self.account,
                    versions[0].version,
                    stored.version,
                )
            return LoadedSession(
                state=state,
                version=stored.version,
                captured_at=stored.captured_at,
                last_valid_at=stored.last_valid_at,
                expires_at=stored.expires_at,
                rejected_at=stored.rejected_at,
            )

        assert newest_error is not None
        raise newest_error

    def reject(self, version: int) -> None:
        """Record that the site refused this version, so the next probe treats it as expired."""
        self._documents.reject_session(self.account, version)
        logger.info("session.rejected account=%s version=%d", self.account, version)

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
