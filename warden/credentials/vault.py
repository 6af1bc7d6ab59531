"""Issue, unwrap, use, revoke and prove: the vault side of a sync (OpenBao or Vault, via hvac).

The runner logs in with AppRole. For each action it creates a child service
token through the ``warden-action`` token role, response-wrapped, with a TTL
no longer than the action's budget and a bounded ``num_uses``. The task that
needs the secret unwraps it once. The wipe revokes each token by accessor and
proves it: a lookup of the accessor must then fail.

Endpoints used (Vault HTTP API, served the same by OpenBao 2.x):
``auth/approle/login``, ``auth/token/create/:role`` with ``X-Vault-Wrap-TTL``,
``sys/wrapping/unwrap``, ``:kv/data/:path``, ``transit/encrypt/:key``,
``transit/decrypt/:key``, ``auth/token/revoke-accessor``,
``auth/token/lookup-accessor``, ``auth/token/revoke-self``.

Every third-party error is mapped to ``warden.errors`` here.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import hvac
import hvac.exceptions
import requests
from pydantic import SecretStr

from warden.credentials.policies import TOKEN_ROLE, AccountPaths, Action, action_policy_name, rule_for
from warden.credentials.redaction import register_secret
from warden.credentials.tokens import IssuedToken, RevocationProof, ScopedToken, WrappedToken, utc_now
from warden.errors import (
    BugError,
    ConfigError,
    StateCorrupt,
    TokenUnwrapFailed,
    VaultDenied,
    VaultUnavailable,
    WardenError,
    WriteConflict,
)

__all__ = ["VaultClient", "VaultSettings"]

logger = logging.getLogger("warden.vault")

# Fields of a stored OAuth grant whose values are secrets.
GRANT_SECRET_FIELDS = ("client_secret", "refresh_token", "access_token")

# Secret ids unwrapped in this process, by SHA-256 of their wrapping token: a wrapping token works once.
_unwrapped_secret_ids: dict[str, SecretStr] = {}
_unwrapped_lock = threading.Lock()


@dataclass(frozen=True)
class VaultSettings:
    """How to reach the vault and log in as the runner."""

    address: str
    role_id: str
    secret_id: SecretStr
    approle_mount: str = "approle"
    token_role: str = TOKEN_ROLE
    timeout_seconds: float = 10.0
    # A response-wrapped secret id, used when ``secret_id`` is empty; unwrapped once per process.
    wrapped_secret_id: SecretStr | None = None
    wrapped_secret_id_source: str = "WARDEN_VAULT_SECRET_ID_WRAPPED"


class VaultClient:
    """The runner's vault session: one AppRole login, many scoped child tokens.

    Not thread-safe for concurrent logins; a flow run owns one instance.
    """

    def __init__(self, settings: VaultSettings) -> None:
        self._settings = settings
        self._runner: hvac.Client | None = None
        self._runner_accessor: str | None = None
        # Called with the login token's accessor and TTL in seconds, so a journal can revoke it if the worker dies.
        self.on_login: Callable[[str, int], None] | None = None

    @property
    def runner_accessor(self) -> str | None:
        """The accessor of the runner's login token, once logged in."""
        return self._runner_accessor

    # -- runner identity ------------------------------------------------------

    def _client(self, token: str | None = None) -> hvac.Client:
        client = hvac.Client(url=self._settings.address, timeout=self._settings.timeout_seconds)
        # hvac falls back to VAULT_TOKEN or ~/.vault-token when given no token; a sync must use only its own.
        client.token = token
        return client

    def login(self) -> None:
        """Log in with AppRole unless already logged in (``auth/approle/login``)."""
        if self._runner is not None:
            return

        secret_id = self._settings.secret_id.get_secret_value()
        if not secret_id and self._settings.wrapped_secret_id is not None:
            secret_id = self._unwrap_secret_id(self._settings.wrapped_secret_id).get_secret_value()
        if not secret_id:
            raise ConfigError(
                f"Cannot log in to the vault at {self._settings.address}: the AppRole secret id is empty. "
                "Set WARDEN_VAULT_SECRET_ID in the worker's environment (see README, section Credentials)."
            )

        client = self._client()
        with _vault_errors(
            self._settings.address, "log in with AppRole", path=f"auth/{self._settings.approle_mount}/login"
        ):
            response = client.auth.approle.login(
                role_id=self._settings.role_id,
                secret_id=secret_id,
                mount_point=self._settings.approle_mount,
                use_token=True,
            )

        register_secret(client.token)
        self._runner = client
        self._runner_accessor = response["auth"]["accessor"]
        logger.info(
            "vault.login role_mount=%s accessor=%s ttl_seconds=%s",
            self._settings.approle_mount,
            self._runner_accessor,
            response["auth"]["lease_duration"],
        )
        if self.on_login is not None:
            self.on_login(self._runner_accessor, int(response["auth"]["lease_duration"]))

    def _unwrap_secret_id(self, wrapped: SecretStr) -> SecretStr:
        """Unwrap a response-wrapped AppRole secret id (``sys/wrapping/unwrap``), once per process."""
        key = hashlib.sha256(wrapped.get_secret_value().encode()).hexdigest()
        with _unwrapped_lock:
            cached = _unwrapped_secret_ids.get(key)
            if cached is not None:
                return cached

            client = self._client(wrapped.get_secret_value())
            try:
                response = client.sys.unwrap()
            except hvac.exceptions.InvalidRequest as exc:
                raise TokenUnwrapFailed(
                    f"Could not unwrap the AppRole secret id in {self._settings.wrapped_secret_id_source} at "
                    f"{self._settings.address}: the wrapping token was already used, expired or is unknown. "
                    "Hand the worker a new one; a token used by someone else means the secret id may be known "
                    "to them, so destroy it (auth/approle/role/ROLE/secret-id/destroy)."
                ) from exc
            except (hvac.exceptions.VaultError, requests.RequestException) as exc:
                raise _map_error(
                    exc, self._settings.address, "unwrap the AppRole secret id", "sys/wrapping/unwrap", None
                ) from exc

            secret_id = SecretStr(response["data"]["secret_id"])
            register_secret(secret_id.get_secret_value())
            _unwrapped_secret_ids[key] = secret_id
            logger.info("vault.secret_id_unwrapped source=%s", self._settings.wrapped_secret_id_source)
            return secret_id

    @property
    def runner(self) -> hvac.Client:
        self.login()
        assert self._runner is not None
        return self._runner

    def logout(self) -> bool:
        """Revoke the runner's own token (``auth/token/revoke-self``); return whether the vault accepted it."""
        if self._runner is None:
            return False

        try:
            self._runner.auth.token.revoke_self()
            logger.info("vault.logout accessor=%s", self._runner_accessor)
            return True
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            # The runner token expires on its own TTL; the scoped tokens were proven revoked already.
            logger.warning("vault.logout_failed accessor=%s error=%s", self._runner_accessor, type(exc).__name__)
            return False
        finally:
            self._runner = None

    # -- issuance ------------------------------------------------------------

    def issue(self, paths: AccountPaths, action: Action, *, ttl_seconds: int) -> WrappedToken:
        """Create a wrapped child token allowed only ``action`` on ``paths`` (``auth/token/create/:role``)."""
        num_uses = rule_for(action).num_uses
        policy = action_policy_name(paths.account, action)

        with _vault_errors(
            self._settings.address,
            f"issue a {action.value} token",
            path=f"auth/token/create/{self._settings.token_role}",
            account=paths.account,
        ):
            response = self.runner.auth.token.create(
                role_name=self._settings.token_role,
                policies=[policy],
                ttl=f"{ttl_seconds}s",
                explicit_max_ttl=f"{ttl_seconds}s",
                num_uses=num_uses,
                renewable=False,
                no_default_policy=True,
                meta={"account": paths.account, "action": action.value},
                wrap_ttl=f"{ttl_seconds}s",
            )

        wrap_info = response.get("wrap_info") if isinstance(response, dict) else None
        if not wrap_info:
            raise ConfigError(
                f"The vault at {self._settings.address} returned an unwrapped token for account "
                f"'{paths.account}'. Response wrapping must stay enabled for auth/token/create."
            )

        register_secret(wrap_info["token"])
        issued_at = utc_now()
        wrapped = WrappedToken(
            wrapping_token=SecretStr(wrap_info["token"]),
            accessor=wrap_info["wrapped_accessor"],
            account=paths.account,
            action=action.value,
            policies=(policy,),
            issued_at=issued_at,
            expires_at=issued_at + timedelta(seconds=ttl_seconds),
            num_uses=num_uses,
        )
        logger.info(
            "vault.token_issued account=%s action=%s accessor=%s ttl_seconds=%d num_uses=%d",
            paths.account,
            action.value,
            wrapped.accessor,
            ttl_seconds,
            num_uses,
        )
        return wrapped

    def unwrap(self, wrapped: WrappedToken) -> ScopedToken:
        """Exchange the single-use wrapping token for the child token (``sys/wrapping/unwrap``)."""
        # The wrapping token authenticates its own unwrap; no other token is sent.
        client = self._client(wrapped.wrapping_token.get_secret_value())
        try:
            response = client.sys.unwrap()
        except hvac.exceptions.InvalidRequest as exc:
            raise TokenUnwrapFailed(
                f"Could not unwrap the {wrapped.action} token for account '{wrapped.account}' "
                f"(accessor {wrapped.accessor}): the wrapping token was already used, expired or is unknown. "
                "A wrapping token that was used twice may have been intercepted: revoke the accessor and "
                "check who else received it."
            ) from exc
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise _map_error(
                exc, self._settings.address, "unwrap a token", "sys/wrapping/unwrap", wrapped.account
            ) from exc

        auth = response["auth"]
        register_secret(auth["client_token"])
        return ScopedToken(
            accessor=auth["accessor"],
            secret=SecretStr(auth["client_token"]),
            account=wrapped.account,
            action=wrapped.action,
            policies=tuple(auth.get("token_policies") or auth.get("policies") or ()),
            issued_at=wrapped.issued_at,
            expires_at=utc_now() + timedelta(seconds=auth["lease_duration"]),
            num_uses=auth.get("num_uses", wrapped.num_uses),
        )

    # -- use -----------------------------------------------------------------

    def read_login_secret(self, token: ScopedToken, paths: AccountPaths) -> dict[str, SecretStr]:
        """Read the account's login secret from KV v2 (``:mount/data/:path``)."""
        client = self._client(token.secret.get_secret_value())
        with _vault_errors(
            self._settings.address, "read the login secret", path=paths.login_secret_policy_path, account=paths.account
        ):
            response = client.secrets.kv.v2.read_secret_version(
                path=paths.login_secret_path,
                mount_point=paths.kv_mount,
                raise_on_deleted_version=True,
            )

        data = response["data"]["data"]
        secrets = {}
        for key, value in data.items():
            register_secret(str(value))
            secrets[key] = SecretStr(str(value))
        return secrets

    def write_login_secret(self, token: ScopedToken, paths: AccountPaths, secret: dict[str, SecretStr]) -> int:
        """Write a new version of the account's login secret to KV v2 (``:mount/data/:path``); return the version."""
        client = self._client(token.secret.get_secret_value())
        with _vault_errors(
            self._settings.address, "write the login secret", path=paths.login_secret_policy_path, account=paths.account
        ):
            response = client.secrets.kv.v2.create_or_update_secret(
                path=paths.login_secret_path,
                secret={key: value.get_secret_value() for key, value in secret.items()},
                mount_point=paths.kv_mount,
            )
        version = response["data"]["version"]
        logger.info("vault.login_secret_written account=%s version=%s", paths.account, version)
        return version

    def read_oauth_grant(self, token: ScopedToken, paths: AccountPaths) -> tuple[dict[str, str], int]:
        """Read the account's OAuth grant from KV v2; return its fields and version (0 when none is stored)."""
        path = self._grant_path(paths)
        client = self._client(token.secret.get_secret_value())
        try:
            with _vault_errors(
                self._settings.address,
                "read the OAuth grant",
                path=paths.oauth_grant_policy_path,
                account=paths.account,
            ):
                response = client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=paths.kv_mount, raise_on_deleted_version=True
                )
        except ConfigError as exc:
            if isinstance(exc.__cause__, hvac.exceptions.InvalidPath):
                return {}, 0
            raise

        data = {key: str(value) for key, value in response["data"]["data"].items()}
        for key in GRANT_SECRET_FIELDS:
            if data.get(key):
                register_secret(data[key])
        return data, int(response["data"]["metadata"]["version"])

    def write_oauth_grant(self, token: ScopedToken, paths: AccountPaths, data: dict[str, str], *, cas: int) -> int:
        """Write a new version of the OAuth grant only if ``cas`` is still the current version; return the new one.

        Raises:
            WriteConflict: another process wrote a newer version first.
        """
        path = self._grant_path(paths)
        client = self._client(token.secret.get_secret_value())
        try:
            response = client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=data, cas=cas, mount_point=paths.kv_mount
            )
        except hvac.exceptions.InvalidRequest as exc:
            if "check-and-set" not in str(exc):
                raise _map_error(
                    exc, self._settings.address, "write the OAuth grant", paths.oauth_grant_policy_path, paths.account
                ) from exc
            raise WriteConflict(
                f"The OAuth grant of account '{paths.account}' changed since version {cas} was read; read it again."
            ) from exc
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise _map_error(
                exc, self._settings.address, "write the OAuth grant", paths.oauth_grant_policy_path, paths.account
            ) from exc
        return int(response["data"]["version"])

    @staticmethod
    def _grant_path(paths: AccountPaths) -> str:
        if paths.oauth_grant_path is None:
            raise BugError(f"Account '{paths.account}' has no OAuth grant path, yet its grant was asked for.")
        return paths.oauth_grant_path

    def encrypt(self, token: ScopedToken, paths: AccountPaths, plaintext: bytes) -> str:
        """Encrypt with the account's transit key (``transit/encrypt/:key``); return the ciphertext."""
        client = self._client(token.secret.get_secret_value())
        with _vault_errors(
            self._settings.address,
            "encrypt the session state",
            path=f"{paths.transit_mount}/encrypt/{paths.session_key}",
            account=paths.account,
        ):
            response = client.secrets.transit.encrypt_data(
                name=paths.session_key,
                plaintext=base64.b64encode(plaintext).decode("ascii"),
                mount_point=paths.transit_mount,
            )
        return response["data"]["ciphertext"]

    def decrypt(self, token: ScopedToken, paths: AccountPaths, ciphertext: str) -> bytes:
        """Decrypt with the account's transit key (``transit/decrypt/:key``)."""
        client = self._client(token.secret.get_secret_value())
        path = f"{paths.transit_mount}/decrypt/{paths.session_key}"
        with _vault_errors(self._settings.address, "decrypt the session state", path=path, account=paths.account):
            try:
                response = client.secrets.transit.decrypt_data(
                    name=paths.session_key,
                    ciphertext=ciphertext,
                    mount_point=paths.transit_mount,
                )
            except hvac.exceptions.InvalidRequest as exc:
                raise StateCorrupt(
                    f"The stored session of account '{paths.account}' could not be decrypted with transit key "
                    f"'{paths.session_key}': the vault rejected the ciphertext as invalid. A new login will "
                    "replace it; the unreadable version stays in the store until five newer versions prune it."
                ) from exc
        return base64.b64decode(response["data"]["plaintext"])

    # -- wipe ----------------------------------------------------------------

    def revoke_and_prove(self, wrapped: WrappedToken | IssuedToken) -> RevocationProof:
        """Revoke a token by accessor, then prove it: its lookup must fail.

        Never raises for the expected failures: a refused revocation or a
        lookup that still succeeds is returned as ``proven=False`` with the
        reason, so the wipe can report every token, not only the first.
        """
        proof = RevocationProof(
            accessor=wrapped.accessor,
            account=wrapped.account,
            action=wrapped.action,
            issued_at=wrapped.issued_at,
        )

        try:
            self.runner.auth.token.revoke_accessor(wrapped.accessor)
            proof.revoked_at = utc_now()
        except hvac.exceptions.InvalidRequest:
            # Already gone (expired, or its uses ran out): the lookup below decides.
            proof.revoked_at = utc_now()
        except hvac.exceptions.Forbidden:
            proof.detail = "the vault refused the revocation (HTTP 403)"
            return proof
        except (hvac.exceptions.VaultError, requests.RequestException, WardenError) as exc:
            proof.detail = f"the revocation failed: {type(exc).__name__}"
            return proof

        try:
            self.runner.auth.token.lookup_accessor(wrapped.accessor)
        except hvac.exceptions.InvalidRequest:
            proof.proven = True
            proof.detail = "lookup of the accessor failed: invalid accessor"
        except hvac.exceptions.Forbidden:
            proof.detail = "the vault refused the lookup (HTTP 403), so revocation cannot be shown"
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            proof.detail = f"the lookup failed for another reason: {type(exc).__name__}"
        else:
            proof.detail = "the token is still valid after revocation"

        logger.info(
            "vault.token_revoked account=%s action=%s accessor=%s proven=%s",
            wrapped.account,
            wrapped.action,
            wrapped.accessor,
            proof.proven,
        )
        return proof


@contextmanager
def _vault_errors(address: str, attempted: str, *, path: str, account: str | None = None) -> Iterator[None]:
    try:
        yield
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        raise _map_error(exc, address, attempted, path, account) from exc


def _map_error(exc: Exception, address: str, attempted: str, path: str, account: str | None) -> WardenError:
    who = f" for account '{account}'" if account else ""
    where = f"Could not {attempted}{who} at {address} (path '{path}')"

    if isinstance(exc, hvac.exceptions.Forbidden):
        return VaultDenied(
            f"{where}: permission denied. Check that the account is registered "
            "(`warden account add`) and that its vault policies grant this path. A vault that lost its data "
            "(the dev stack's keeps it in memory) needs the account registered again: "
            "`warden account add NAME --replace ... --password-stdin`."
        )
    if isinstance(exc, hvac.exceptions.VaultDown):
        return VaultUnavailable(f"{where}: the vault is sealed. Unseal it, then run the sync again.")
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return ConfigError(f"{where}: nothing is stored there. Store the secret or fix the path on the account Block.")
    if isinstance(exc, hvac.exceptions.Unauthorized | hvac.exceptions.InvalidRequest):
        return VaultDenied(
            f"{where}: the vault rejected the request ({type(exc).__name__}). "
            "Check the AppRole role id on the vault Block and WARDEN_VAULT_SECRET_ID."
        )
    if isinstance(exc, requests.Timeout):
        return VaultUnavailable(f"{where}: timed out. Check that the vault is running.")
    if isinstance(exc, requests.ConnectionError):
        return VaultUnavailable(
            f"{where}: connection failed. Check that the vault is running at that address; the flows take it "
            "from the vault Block (`warden setup` or `make demo` saves it again after the vault moved)."
        )
    if isinstance(
        exc, hvac.exceptions.InternalServerError | hvac.exceptions.BadGateway | hvac.exceptions.RateLimitExceeded
    ):
        return VaultUnavailable(f"{where}: the vault returned a server error ({type(exc).__name__}).")
    if isinstance(exc, requests.RequestException):
        return VaultUnavailable(f"{where}: {type(exc).__name__}.")
    return BugError(f"{where}: unexpected vault error {type(exc).__name__}. Please report it.")
