"""API keys of HTTP models, fetched through one vault token per call.

For each call the runner creates a response-wrapped child token through the
``warden-action`` token role, allowed only to read that model's key
(``:kv/data/:api_key_path``) once. The router unwraps it, reads the key, makes
its one request, and then revokes the token by accessor and proves the
revocation with a lookup. The key is registered with the log redaction filter
the moment it is read.

Endpoints used: ``auth/token/create/:role`` with ``X-Vault-Wrap-TTL``,
``sys/wrapping/unwrap``, ``:kv/data/:path``, ``auth/token/revoke-accessor``,
``auth/token/lookup-accessor``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import hvac
import hvac.exceptions
import requests
from pydantic import SecretStr

from warden.credentials.policies import ACTION_POLICY_PREFIX, TOKEN_ROLE
from warden.credentials.redaction import register_secret
from warden.credentials.tokens import RevocationProof, WrappedToken, utc_now
from warden.credentials.vault import VaultClient
from warden.errors import ConfigError, VaultDenied, VaultUnavailable, WardenError
from warden.routing.roster import RosterModel

__all__ = [
    "MODEL_CALL_ACTION",
    "ModelKey",
    "VaultModelKeys",
    "model_call_policy_name",
    "render_model_call_policy",
]

logger = logging.getLogger("warden.routing")

# NOTE: this action is not yet a member of warden.credentials.policies.Action; move it there with its rule.
MODEL_CALL_ACTION = "model-call"
# Vault requests one model-call token makes: the read of the key.
MODEL_CALL_NUM_USES = 1


def model_call_policy_name(model_name: str) -> str:
    """Return the policy name of a model's key, e.g. ``warden-acct-model-gpt-model-call``.

    The ``warden-acct-`` prefix is what the token role's ``allowed_policies_glob`` admits.
    """
    return f"{ACTION_POLICY_PREFIX}model-{model_name}-{MODEL_CALL_ACTION}"


def render_model_call_policy(model: RosterModel) -> str:
    """Render the HCL policy that may read the model's API key and nothing else."""
    if model.api_key_path is None:
        raise ConfigError(f"Model '{model.name}' has no api_key_path, so it has no model-call policy.")
    return f'path "{model.kv_mount}/data/{model.api_key_path}" {{ capabilities = ["read"] }}\n'


@dataclass
class ModelKey:
    """The API key for one call, and after the call the proof that its vault token was revoked."""

    secret: SecretStr
    accessor: str
    proof: RevocationProof | None = None


class VaultModelKeys:
    """Issue, unwrap, read and revoke one vault token per model call."""

    def __init__(self, vault: VaultClient, *, ttl_seconds: int = 60) -> None:
        self._vault = vault
        self._ttl_seconds = ttl_seconds

    @contextmanager
    def api_key(self, model: RosterModel) -> Iterator[ModelKey]:
        """Yield the model's API key; on exit revoke the token that read it and set ``proof``."""
        wrapped = self._issue(model)
        key: ModelKey | None = None
        try:
            token = self._vault.unwrap(wrapped)
            secret = self._read_key(model, token.secret)
            key = ModelKey(secret=secret, accessor=wrapped.accessor)
            yield key
        finally:
            proof = self._vault.revoke_and_prove(wrapped)
            if key is not None:
                key.proof = proof
            if not proof.proven:
                logger.warning(
                    "routing.key_token_unrevoked model=%s accessor=%s detail=%s",
                    model.name,
                    proof.accessor,
                    proof.detail,
                )

    def _issue(self, model: RosterModel) -> WrappedToken:
        policy = model_call_policy_name(model.name)
        try:
            response = self._vault.runner.auth.token.create(
                role_name=TOKEN_ROLE,
                policies=[policy],
                ttl=f"{self._ttl_seconds}s",
                explicit_max_ttl=f"{self._ttl_seconds}s",
                num_uses=MODEL_CALL_NUM_USES,
                renewable=False,
                no_default_policy=True,
                meta={"model": model.name, "action": MODEL_CALL_ACTION},
                wrap_ttl=f"{self._ttl_seconds}s",
            )
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise _vault_error(exc, f"issue a model-call token for model '{model.name}'", policy) from exc

        wrap_info = response.get("wrap_info") if isinstance(response, dict) else None
        if not wrap_info:
            raise ConfigError(
                f"The vault returned an unwrapped model-call token for model '{model.name}'. "
                "Response wrapping must stay enabled for auth/token/create."
            )

        register_secret(wrap_info["token"])
        issued_at = utc_now()
        logger.info(
            "routing.key_token_issued model=%s accessor=%s ttl_seconds=%d",
            model.name,
            wrap_info["wrapped_accessor"],
            self._ttl_seconds,
        )
        return WrappedToken(
            wrapping_token=SecretStr(wrap_info["token"]),
            accessor=wrap_info["wrapped_accessor"],
            account=f"model:{model.name}",
            action=MODEL_CALL_ACTION,
            policies=(policy,),
            issued_at=issued_at,
            expires_at=issued_at + timedelta(seconds=self._ttl_seconds),
            num_uses=MODEL_CALL_NUM_USES,
        )

    def _read_key(self, model: RosterModel, token: SecretStr) -> SecretStr:
        client = hvac.Client(url=self._vault.runner.url, timeout=10)
        client.token = token.get_secret_value()
        path = f"{model.kv_mount}/data/{model.api_key_path}"
        try:
            response = client.secrets.kv.v2.read_secret_version(
                path=model.api_key_path, mount_point=model.kv_mount, raise_on_deleted_version=True
            )
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise _vault_error(exc, f"read the API key of model '{model.name}'", path) from exc

        value = response["data"]["data"].get("api_key")
        if not value:
            raise ConfigError(
                f"The vault secret at '{path}' has no 'api_key' field, so model '{model.name}' cannot be called. "
                "Store the key there as api_key."
            )
        register_secret(str(value))
        return SecretStr(str(value))


def _vault_error(exc: Exception, attempted: str, path: str) -> WardenError:
    where = f"Could not {attempted} (path '{path}')"
    if isinstance(exc, hvac.exceptions.Forbidden):
        return VaultDenied(
            f"{where}: permission denied. Write the model-call policy for this model (see docs/routing.md)."
        )
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return ConfigError(f"{where}: nothing is stored there. Store the key or fix api_key_path in the roster.")
    if isinstance(exc, hvac.exceptions.VaultDown | requests.RequestException):
        return VaultUnavailable(f"{where}: the vault is sealed or unreachable ({type(exc).__name__}).")
    return VaultDenied(f"{where}: the vault rejected the request ({type(exc).__name__}).")
