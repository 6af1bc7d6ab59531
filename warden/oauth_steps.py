"""The steps of the oauth access path: probe the stored grant, refresh it, fetch through the API.

Like :mod:`warden.steps`, each step takes the :class:`~warden.run.SyncRun` and
the wrapped vault token issued for its action, and never retries on its own.
The fetch revokes the access token it used at the provider (RFC 7009) before
it returns, also when it fails, and proves the revocation by introspection.
The wipe reports these proofs next to the vault tokens' proofs.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from warden.connectors.base import ProbeResult, ProbeState
from warden.connectors.mime import message_record_from_raw
from warden.credentials.oauth import (
    AccessToken,
    OAuthGrantType,
    OAuthSettings,
    current_access_token,
    revoke_access_token,
    stored_access_token,
)
from warden.credentials.policies import AccountPaths
from warden.credentials.tokens import ScopedToken, WrappedToken
from warden.credentials.vault import VaultClient
from warden.errors import BugError, RateLimited
from warden.events import EventName
from warden.run import FetchOutcome, SyncRun
from warden.steps import stop_for_later

__all__ = ["VaultGrantStore", "fetch_api", "probe_grant", "refresh_grant"]

logger = logging.getLogger("warden.sync")


class VaultGrantStore:
    """The account's OAuth grant on KV v2, read and written with one scoped vault token."""

    def __init__(self, vault: VaultClient, token: ScopedToken, paths: AccountPaths) -> None:
        self._vault = vault
        self._token = token
        self._paths = paths

    def read(self) -> tuple[dict[str, str], int]:
        return self._vault.read_oauth_grant(self._token, self._paths)

    def write(self, data: dict[str, str], *, cas: int) -> int:
        return self._vault.write_oauth_grant(self._token, self._paths, data, cas=cas)


def _settings(run: SyncRun) -> OAuthSettings:
    if run.account.oauth is None:
        raise BugError(f"Account '{run.account.name}' has no OAuth settings, yet its oauth path ran.")
    return run.account.oauth


def _store(run: SyncRun, wrapped: WrappedToken) -> VaultGrantStore:
    return VaultGrantStore(run.vault, run.token_for(wrapped), run.account.paths)


def _emitter(run: SyncRun):
    def emit(name: EventName, **payload: object) -> None:
        run.emit(name, **payload)

    return emit


# -- probe ----------------------------------------------------------------------


def probe_grant(run: SyncRun, wrapped: WrappedToken) -> ProbeResult:
    """Check the stored grant without a request to the provider: is there an access token, and for how long."""
    settings = _settings(run)
    started = time.monotonic()
    fields, version = _store(run, wrapped).read()

    def result(state: ProbeState, reason: str, expires_at: datetime | None = None) -> ProbeResult:
        probe = ProbeResult(
            state=state, reason=reason, elapsed_seconds=time.monotonic() - started, expires_at=expires_at
        )
        run.emit(EventName.SESSION_PROBED, path="oauth", state=state.value, reason=reason)
        return probe

    if version == 0 or not fields.get("client_secret"):
        return result(ProbeState.MISSING, f"no OAuth grant stored; run `warden oauth authorize {run.account.name}`")
    if settings.grant_type == OAuthGrantType.AUTHORIZATION_CODE and not fields.get("refresh_token"):
        return result(
            ProbeState.MISSING,
            f"the OAuth grant holds no refresh token; run `warden oauth authorize {run.account.name}`",
        )

    stored = stored_access_token(fields)
    if stored is None:
        return result(ProbeState.EXPIRED, "no access token stored, because the last one was revoked after use")

    seconds_left = stored.seconds_left
    if seconds_left <= 0:
        return result(ProbeState.EXPIRED, f"the access token expired {-seconds_left:.0f} s ago", stored.expires_at)
    if seconds_left <= settings.refresh_margin_seconds:
        return result(ProbeState.EXPIRING, f"the access token expires in {seconds_left:.0f} s", stored.expires_at)

    run.access_token = stored
    return result(ProbeState.VALID, f"the access token is valid for {seconds_left:.0f} s more", stored.expires_at)


# -- refresh --------------------------------------------------------------------


async def refresh_grant(run: SyncRun, wrapped: WrappedToken) -> AccessToken:
    """Get a fresh access token, with at most one request to the provider across every worker.

    After an API refused the run's last access token, that token is never returned again.
    """
    access = await current_access_token(
        _store(run, wrapped),
        _settings(run),
        account=run.account.name,
        emit=_emitter(run),
        rejected=run.rejected_access_token,
    )
    run.access_token = access
    logger.info(
        "oauth.access_token account=%s source=%s generation=%d token=%s",
        run.account.name,
        access.source,
        access.generation,
        access.fingerprint,
    )
    return access


# -- fetch ----------------------------------------------------------------------


async def fetch_api(run: SyncRun, wrapped: WrappedToken) -> FetchOutcome:
    """Fetch new messages through the API connector, store each with its cursor, then revoke the access token."""
    store = _store(run, wrapped)
    settings = _settings(run)
    access = run.access_token
    if access is None:
        access = await current_access_token(store, settings, account=run.account.name, emit=_emitter(run))

    connector = run.api_connector
    account = run.account.name
    # A fetch repeated after a refresh adds to the counts of the first attempt.
    outcome = run.fetch_outcome = run.fetch_outcome or FetchOutcome()
    try:
        async with run.site_access(connector.site), connector.open(access.secret) as session:
            mailbox = ""
            try:
                for mailbox in run.account.mailboxes:
                    stored_validity, after_uid = run.documents.cursor(account, mailbox) or (0, 0)
                    refs, _validity = await session.list_new(mailbox, after_uid=after_uid, uidvalidity=stored_validity)
                    for ref in refs:
                        record = message_record_from_raw(ref, await session.fetch_raw(ref))
                        if run.documents.save_message(account, record):
                            outcome.messages_new += 1
                            outcome.attachments_new += len(record.attachments)
                    outcome.mailboxes[mailbox] = outcome.mailboxes.get(mailbox, 0) + len(refs)
            except RateLimited as exc:
                stop_for_later(run, outcome, exc, mailbox)
            finally:
                outcome.requests_sent += session.requests_sent
    except BaseException:
        run.rejected_access_token = access
        raise
    finally:
        run.access_token = None
        if settings.revoke_after_use:
            # A fresh store: a long fetch may have outlived the token the first one holds.
            proof = await revoke_access_token(
                _store(run, wrapped), settings, access, account=account, action=wrapped.action
            )
            run.oauth_proofs.append(proof)
        del access

    logger.info(
        "fetch.done account=%s path=oauth api=%s messages_new=%d attachments_new=%d requests=%d",
        account,
        connector.kind,
        outcome.messages_new,
        outcome.attachments_new,
        outcome.requests_sent,
    )
    return outcome
