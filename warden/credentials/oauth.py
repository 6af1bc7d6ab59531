"""OAuth 2.0 access tokens for one account: the provider client, the stored grant, single-flight refresh.

The account's grant lives only in the vault, on KV v2: the client secret, the
refresh token (authorization-code grants), the current access token with its
expiry, a ``generation`` counter, and a refresh lease. Every write is a
check-and-set on the version that was read, so two workers never both write.

Refresh without races. A worker that needs a new access token:

1. reads the grant; a stored access token with more than the margin left is used as is;
2. otherwise takes the lease with a check-and-set write (holder and expiry), or, while
   another worker holds an unexpired lease, polls until that worker wrote a newer
   generation, and then uses its token;
3. as holder, sends exactly one request to the token endpoint, writes the new tokens
   with generation + 1 and clears the lease in the same check-and-set write.

A lease whose holder died or hangs expires after ``lease_seconds``; the next worker
takes it over and reports a refresh-stuck event. A refresh request that outlives the
lease is abandoned and reported the same way.

NOTE: a holder that dies after the provider rotated the refresh token but before its
write leaves a consumed refresh token in the vault: the next refresh gets
``invalid_grant`` and a person must authorize the account again (`warden oauth authorize`).

Requests to the token endpoint are sent once and not retried here, because
with rotating refresh tokens a retried request could spend a token whose
response was lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from warden.connectors.http import HttpSettings, build_client, send_with_backoff
from warden.credentials.policies import LEASE_POLLS
from warden.credentials.redaction import register_secret
from warden.credentials.tokens import RevocationProof
from warden.errors import (
    ConfigError,
    LoginRequired,
    SiteUnreachable,
    UnexpectedResponse,
    WriteConflict,
)
from warden.events import EventName

__all__ = [
    "AccessToken",
    "GrantStore",
    "OAuthClient",
    "OAuthGrantType",
    "OAuthSettings",
    "TokenSet",
    "current_access_token",
    "revoke_access_token",
    "stored_access_token",
    "token_fingerprint",
]

logger = logging.getLogger("warden.oauth")


def utc_now() -> datetime:
    return datetime.now(UTC)


class OAuthGrantType(StrEnum):
    """The grant type with which the account obtains access tokens."""

    # A user authorized the client once; refresh tokens keep it going.
    AUTHORIZATION_CODE = "authorization_code"
    # A service account: the client's own credentials, no user and no refresh token.
    CLIENT_CREDENTIALS = "client_credentials"


class OAuthSettings(BaseModel):
    """An account's OAuth client: endpoints, client id, scope and refresh timing. Never secrets."""

    client_id: str
    token_url: str
    authorization_url: str | None = Field(default=None, description="Needed only by `warden oauth authorize`.")
    revocation_url: str | None = Field(default=None, description="RFC 7009 endpoint; tokens are revoked after use.")
    introspection_url: str | None = Field(default=None, description="RFC 7662 endpoint; proves a revocation.")
    grant_type: OAuthGrantType = OAuthGrantType.AUTHORIZATION_CODE
    scope: str = Field(default="mail.read", description="Space-separated scopes; keep them read-only and minimal.")
    grant_path: str | None = Field(
        default=None, description="KV v2 path of the grant on the account's KV mount; default oauth/ACCOUNT."
    )
    refresh_margin_seconds: float = Field(default=60.0, ge=0, description="Refresh when less than this is left.")
    lease_seconds: float = Field(default=30.0, gt=0, le=600, description="How long one refresh may hold the lease.")
    timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of each request to the provider.")
    revoke_after_use: bool = Field(
        default=True,
        description=(
            "Revoke the access token at the provider after each fetch. Turn it off for providers that revoke "
            "the whole grant, refresh token included, with an access token (Google does)."
        ),
    )


class TokenSet(BaseModel):
    """The tokens a token endpoint response contains."""

    model_config = ConfigDict(frozen=True)

    access_token: SecretStr
    expires_at: datetime
    refresh_token: SecretStr | None = None
    scope: str = ""


class AccessToken(BaseModel):
    """An access token a worker may use, with the grant generation it belongs to."""

    model_config = ConfigDict(frozen=True)

    secret: SecretStr
    expires_at: datetime
    generation: int
    # The origin of the token: "stored", "refreshed", or "refreshed-elsewhere" (another worker's refresh).
    source: str

    @property
    def fingerprint(self) -> str:
        return token_fingerprint(self.secret)

    @property
    def seconds_left(self) -> float:
        return (self.expires_at - utc_now()).total_seconds()


def token_fingerprint(token: SecretStr) -> str:
    """Return a short, non-reversible name of a token for logs, events and artifacts."""
    return "oauth-" + hashlib.sha256(token.get_secret_value().encode()).hexdigest()[:12]


class GrantStore(Protocol):
    """Storage of the account's grant: KV v2 through a scoped vault token, or a test double."""

    def read(self) -> tuple[dict[str, str], int]:
        """Return the grant's fields and its version; ``({}, 0)`` when nothing is stored."""
        ...

    def write(self, data: dict[str, str], *, cas: int) -> int:
        """Write a new version if ``cas`` is current; return it, or raise :class:`WriteConflict`."""
        ...


# -- the provider ---------------------------------------------------------------


class OAuthClient:
    """Token, revocation and introspection requests of one OAuth client (client_secret_basic)."""

    def __init__(self, settings: OAuthSettings, client_secret: SecretStr, *, account: str) -> None:
        self._settings = settings
        self._auth = httpx.BasicAuth(settings.client_id, client_secret.get_secret_value())
        self._account = account
        self._http_settings = HttpSettings(timeout_seconds=settings.timeout_seconds, max_attempts=3)

    def _client(self) -> httpx.AsyncClient:
        return build_client("", settings=self._http_settings)

    async def _token_request(self, form: dict[str, str], what: str) -> TokenSet:
        async with self._client() as client:
            try:
                response = await client.post(self._settings.token_url, data=form, auth=self._auth)
            except httpx.TransportError as exc:
                raise SiteUnreachable(
                    f"Could not {what} for account '{self._account}' at {self._settings.token_url}: "
                    f"{type(exc).__name__}. Check that the OAuth provider is up."
                ) from exc
        return self._token_set(response, what)

    def _token_set(self, response: httpx.Response, what: str) -> TokenSet:
        where = f"Could not {what} for account '{self._account}' at {self._settings.token_url}"
        body = _json_object(response)
        error = str(body.get("error", ""))

        if response.status_code >= 500:
            raise SiteUnreachable(f"{where}: HTTP {response.status_code}. The sync will try again later.")
        if error == "invalid_grant":
            raise LoginRequired(
                f"{where}: the provider rejected the stored grant (invalid_grant: revoked, expired or already "
                f"used). Authorize the account again with `warden oauth authorize {self._account}`."
            )
        if error in ("invalid_client", "unauthorized_client") or response.status_code == 401:
            raise ConfigError(
                f"{where}: the provider rejected client '{self._settings.client_id}' ({error or 'HTTP 401'}). "
                "Check the client id on the account Block and the client secret in the vault grant."
            )
        if error == "invalid_scope":
            raise ConfigError(f"{where}: the provider rejected the scope '{self._settings.scope}' (invalid_scope).")
        if response.status_code != 200 or "access_token" not in body:
            raise UnexpectedResponse(
                f"{where}: HTTP {response.status_code} {error or 'without an access_token'}. "
                "Check token_url on the account Block."
            )

        access = str(body["access_token"])
        register_secret(access)
        refresh = body.get("refresh_token")
        if refresh:
            register_secret(str(refresh))
        expires_in = float(body.get("expires_in") or 300)
        return TokenSet(
            access_token=SecretStr(access),
            refresh_token=SecretStr(str(refresh)) if refresh else None,
            expires_at=utc_now() + timedelta(seconds=expires_in),
            scope=str(body.get("scope", "")),
        )

    async def refresh(self, refresh_token: SecretStr) -> TokenSet:
        """Exchange a refresh token for new tokens (one request, never retried)."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token.get_secret_value()}
        return await self._token_request(form, "refresh the OAuth access token")

    async def client_credentials(self) -> TokenSet:
        """Request an access token with the client's own credentials."""
        form = {"grant_type": "client_credentials", "scope": self._settings.scope}
        return await self._token_request(form, "get a client-credentials access token")

    async def exchange_code(self, code: str, *, redirect_uri: str, code_verifier: str) -> TokenSet:
        """Exchange an authorization code (with its PKCE verifier) for tokens."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        return await self._token_request(form, "exchange the authorization code")

    async def revoke(self, token: SecretStr, *, hint: str = "access_token") -> None:
        """Revoke a token at the provider (RFC 7009)."""
        url = self._require("revocation_url")
        async with self._client() as client:
            client.auth = self._auth
            response = await send_with_backoff(
                client,
                "POST",
                url,
                settings=self._http_settings,
                what=f"revoke an OAuth token of account '{self._account}'",
                data={"token": token.get_secret_value(), "token_type_hint": hint},
            )
        if response.status_code != 200:
            raise UnexpectedResponse(
                f"Could not revoke an OAuth token of account '{self._account}' at {url}: HTTP {response.status_code}."
            )

    async def introspect(self, token: SecretStr) -> dict[str, Any]:
        """Return the provider's introspection of a token (RFC 7662)."""
        url = self._require("introspection_url")
        async with self._client() as client:
            client.auth = self._auth
            response = await send_with_backoff(
                client,
                "POST",
                url,
                settings=self._http_settings,
                what=f"introspect an OAuth token of account '{self._account}'",
                data={"token": token.get_secret_value()},
            )
        body = _json_object(response)
        if response.status_code != 200 or "active" not in body:
            raise UnexpectedResponse(
                f"Could not introspect an OAuth token of account '{self._account}' at {url}: "
                f"HTTP {response.status_code}."
            )
        return body

    def _require(self, field: str) -> str:
        value = getattr(self._settings, field)
        if not value:
            raise ConfigError(f"Account '{self._account}' has no OAuth {field}; set it on the account Block.")
        return value


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# -- the stored grant -----------------------------------------------------------


def stored_access_token(fields: dict[str, str]) -> AccessToken | None:
    """Return the access token a stored grant contains, whatever its expiry, or None when it contains none."""
    token = fields.get("access_token")
    expires = fields.get("access_expires_at")
    if not token or not expires:
        return None
    return AccessToken(
        secret=SecretStr(token),
        expires_at=datetime.fromisoformat(expires),
        generation=int(fields.get("generation") or 0),
        source="stored",
    )


@dataclass
class _Grant:
    fields: dict[str, str]
    version: int

    @property
    def generation(self) -> int:
        return int(self.fields.get("generation") or 0)

    def access_token(self, margin_seconds: float) -> AccessToken | None:
        token = stored_access_token(self.fields)
        if token is None or token.seconds_left <= margin_seconds:
            return None
        return token

    def lease(self) -> tuple[str, datetime] | None:
        holder = self.fields.get("lease_holder")
        expires = self.fields.get("lease_expires_at")
        if not holder or not expires:
            return None
        return holder, datetime.fromisoformat(expires)


def _read(store: GrantStore, account: str) -> _Grant:
    fields, version = store.read()
    if version == 0 or not fields.get("client_secret"):
        raise LoginRequired(
            f"Account '{account}' has no OAuth grant in the vault. "
            f"Authorize it once with `warden oauth authorize {account}`."
        )
    return _Grant(dict(fields), version)


def _holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


EventCallback = Callable[..., None]


async def current_access_token(
    store: GrantStore,
    settings: OAuthSettings,
    *,
    account: str,
    emit: EventCallback,
    rejected: AccessToken | None = None,
    poll_seconds: float = 0.25,
) -> AccessToken:
    """Return an access token with more than the margin left, refreshing at most once across all workers.

    ``rejected`` is a token an API just rejected. It is not returned again, and a
    refresh runs unless another worker already replaced it.
    """
    margin = settings.refresh_margin_seconds
    grant = _read(store, account)
    seen_generation = grant.generation
    stored = grant.access_token(margin)
    if stored is not None and (rejected is None or stored.secret != rejected.secret):
        return stored

    holder = _holder_id()
    polls = 0
    while True:
        lease = grant.lease()
        if grant.generation > seen_generation:
            fresh = grant.access_token(margin)
            if fresh is not None:
                logger.info("oauth.refreshed_elsewhere account=%s generation=%d", account, grant.generation)
                return fresh.model_copy(update={"source": "refreshed-elsewhere"})

        if lease is not None and lease[1] > utc_now():
            polls += 1
            if polls > LEASE_POLLS:
                raise SiteUnreachable(
                    f"Another worker ({lease[0]}) has been refreshing the OAuth token of account '{account}' "
                    f"for too long; its lease ends at {lease[1].isoformat(timespec='seconds')}. Try again later."
                )
            await asyncio.sleep(min(poll_seconds * 2 ** min(polls - 1, 3), 2.0))
            grant = _read(store, account)
            continue

        if lease is not None:
            # The lease ran out without the holder writing a result: it died or its request hung.
            logger.warning("oauth.refresh_stuck account=%s holder=%s", account, lease[0])
            emit(
                EventName.OAUTH_REFRESH_STUCK, holder=lease[0], lease_expired_at=lease[1].isoformat(timespec="seconds")
            )

        try:
            taken = _Grant(
                {
                    **grant.fields,
                    "lease_holder": holder,
                    "lease_expires_at": (utc_now() + timedelta(seconds=settings.lease_seconds)).isoformat(),
                },
                0,
            )
            taken.version = store.write(taken.fields, cas=grant.version)
        except WriteConflict:
            grant = _read(store, account)
            continue
        break

    return await _refresh_as_holder(store, settings, taken, account=account, emit=emit)


async def _refresh_as_holder(
    store: GrantStore, settings: OAuthSettings, grant: _Grant, *, account: str, emit: EventCallback
) -> AccessToken:
    client = OAuthClient(settings, SecretStr(grant.fields["client_secret"]), account=account)
    released = {**grant.fields, "lease_holder": "", "lease_expires_at": ""}

    try:
        async with asyncio.timeout(settings.lease_seconds):
            if settings.grant_type == OAuthGrantType.CLIENT_CREDENTIALS:
                tokens = await client.client_credentials()
            else:
                refresh_token = grant.fields.get("refresh_token")
                if not refresh_token:
                    raise LoginRequired(
                        f"The OAuth grant of account '{account}' has no refresh token. "
                        f"Authorize it with `warden oauth authorize {account}`."
                    )
                tokens = await client.refresh(SecretStr(refresh_token))
    except TimeoutError as exc:
        emit(
            EventName.OAUTH_REFRESH_STUCK,
            holder="this worker",
            reason=f"no answer within {settings.lease_seconds:.0f} s",
        )
        _release(store, released, grant.version, account)
        raise SiteUnreachable(
            f"The refresh of account '{account}' timed out: the OAuth provider sent no response within the "
            f"{settings.lease_seconds:.0f} s lease at {settings.token_url}. The next sync tries again."
        ) from exc
    except BaseException:
        _release(store, released, grant.version, account)
        raise

    generation = grant.generation + 1
    fields = {
        **released,
        "access_token": tokens.access_token.get_secret_value(),
        "access_expires_at": tokens.expires_at.isoformat(),
        "generation": str(generation),
    }
    if tokens.refresh_token is not None:
        fields["refresh_token"] = tokens.refresh_token.get_secret_value()
    try:
        store.write(fields, cas=grant.version)
    except WriteConflict as exc:
        # Another worker took the lease over after it expired; the rotated refresh token is lost.
        raise LoginRequired(
            f"The refresh of account '{account}' finished after its lease ran out and another worker wrote "
            "the grant meanwhile; the rotated refresh token could not be kept. "
            f"If the next sync fails, authorize again with `warden oauth authorize {account}`, "
            "and raise lease_seconds on the account's OAuth settings."
        ) from exc

    logger.info("oauth.refreshed account=%s generation=%d", account, generation)
    emit(EventName.OAUTH_REFRESHED, generation=generation, expires_at=tokens.expires_at.isoformat(timespec="seconds"))
    return AccessToken(
        secret=tokens.access_token, expires_at=tokens.expires_at, generation=generation, source="refreshed"
    )


def _release(store: GrantStore, fields: dict[str, str], version: int, account: str) -> None:
    try:
        store.write(fields, cas=version)
    except WriteConflict:
        # Someone took the lease over already; nothing of ours is left to release.
        logger.info("oauth.lease_taken_over account=%s", account)


# -- revocation -----------------------------------------------------------------


async def revoke_access_token(
    store: GrantStore, settings: OAuthSettings, token: AccessToken, *, account: str, action: str
) -> RevocationProof:
    """Revoke an access token at the provider, prove it by introspection, and drop it from the grant.

    A failed revocation raises nothing: the proof has ``proven=False`` and the reason in ``detail``.
    """
    proof = RevocationProof(accessor=token.fingerprint, account=account, action=action, issued_at=utc_now())
    grant = _read(store, account)
    client = OAuthClient(settings, SecretStr(grant.fields["client_secret"]), account=account)

    try:
        await client.revoke(token.secret)
        proof.revoked_at = utc_now()
        introspection = await client.introspect(token.secret)
    except (SiteUnreachable, UnexpectedResponse, ConfigError) as exc:
        proof.detail = f"the provider revocation failed: {exc}"
        return proof

    if introspection.get("active") is False:
        proof.proven = True
        proof.detail = "introspection answered active: false"
    else:
        proof.detail = "introspection still answers active: true after revocation"

    refresh_token = grant.fields.get("refresh_token")
    if refresh_token and proof.proven:
        # Some providers revoke the whole grant with an access token; the next refresh would then fail.
        try:
            grant_alive = (await client.introspect(SecretStr(refresh_token))).get("active") is not False
        except (SiteUnreachable, UnexpectedResponse, ConfigError):
            grant_alive = True
        if not grant_alive:
            logger.error("oauth.grant_revoked_with_access_token account=%s", account)
            proof.detail += (
                "; the provider revoked the refresh token with it, so the account needs "
                f"`warden oauth authorize {account}` and revoke_after_use set to false on its OAuth settings"
            )

    # Drop the token from the grant unless another worker already replaced it.
    for _ in range(3):
        if grant.fields.get("access_token") != token.secret.get_secret_value():
            break
        fields = {**grant.fields, "access_token": "", "access_expires_at": ""}
        try:
            store.write(fields, cas=grant.version)
            break
        except WriteConflict:
            grant = _read(store, account)

    logger.info("oauth.token_revoked account=%s token=%s proven=%s", account, token.fingerprint, proof.proven)
    return proof
