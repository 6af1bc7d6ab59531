"""Prepare a vault for Connector Warden, and register an account's secrets in it.

These functions need an administrator's token (the root token of the dev
stack, or an operator's token in production); flows never call them. Each
step is idempotent, so running set-up again repairs a partial set-up.

What is created:
- the AppRole auth method and a role (default ``warden``) whose tokens carry
  only the runner policy;
- the transit engine, with one key per account for its saved sessions;
- the token role ``warden-action`` that child tokens are created through;
- per account and action, a policy named ``warden-acct-<account>-<action>``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import hvac
import hvac.exceptions
from pydantic import SecretStr

from warden.credentials.policies import (
    ACTION_POLICY_PREFIX,
    RUNNER_POLICY,
    TOKEN_ROLE,
    AccountPaths,
    action_policy_name,
    actions_for,
    model_call_policy_name,
    render_action_policy,
    render_model_call_policy,
    render_runner_policy,
)

__all__ = ["RunnerCredentials", "provision_account", "provision_model", "provision_runner", "store_oauth_grant"]

logger = logging.getLogger("warden.vault")

# The longest any action token may live, whatever an account Block requests.
MAX_ACTION_TOKEN_TTL_SECONDS = 600


@dataclass(frozen=True)
class RunnerCredentials:
    """The AppRole identity the flows log in with."""

    role_id: str
    secret_id: SecretStr


def provision_runner(
    admin: hvac.Client,
    *,
    role_name: str = "warden",
    approle_mount: str = "approle",
    transit_mount: str = "transit",
    runner_token_ttl: str = "1h",
    secret_id_ttl: str = "0",
) -> RunnerCredentials:
    """Enable AppRole and transit, write the runner policy and token role, and mint a secret id."""
    auth_methods = admin.sys.list_auth_methods()["data"]
    if f"{approle_mount}/" not in auth_methods:
        admin.sys.enable_auth_method("approle", path=approle_mount)

    engines = admin.sys.list_mounted_secrets_engines()["data"]
    if f"{transit_mount}/" not in engines:
        admin.sys.enable_secrets_engine("transit", path=transit_mount)

    admin.sys.create_or_update_policy(RUNNER_POLICY, render_runner_policy())
    admin.write(
        f"auth/token/roles/{TOKEN_ROLE}",
        allowed_policies_glob=[f"{ACTION_POLICY_PREFIX}*"],
        disallowed_policies=["root"],
        orphan=False,
        renewable=False,
        token_type="service",
        token_explicit_max_ttl=MAX_ACTION_TOKEN_TTL_SECONDS,
        token_no_default_policy=True,
    )
    admin.auth.approle.create_or_update_approle(
        role_name,
        token_policies=[RUNNER_POLICY],
        token_ttl=runner_token_ttl,
        token_max_ttl=runner_token_ttl,
        token_type="service",
        secret_id_ttl=secret_id_ttl,
        mount_point=approle_mount,
    )

    role_id = admin.auth.approle.read_role_id(role_name, mount_point=approle_mount)["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id(role_name, mount_point=approle_mount)["data"]["secret_id"]
    logger.info("vault.runner_provisioned role=%s mount=%s", role_name, approle_mount)
    return RunnerCredentials(role_id=role_id, secret_id=SecretStr(secret_id))


def provision_account(
    admin: hvac.Client, paths: AccountPaths, login_secret: dict[str, SecretStr] | None = None
) -> None:
    """Create the account's transit key and action policies, and store its login secret if given."""
    admin.secrets.transit.create_key(name=paths.session_key, mount_point=paths.transit_mount)

    for action in actions_for(paths):
        admin.sys.create_or_update_policy(
            action_policy_name(paths.account, action), render_action_policy(paths, action)
        )

    if login_secret is not None:
        admin.secrets.kv.v2.create_or_update_secret(
            path=paths.login_secret_path,
            secret={key: value.get_secret_value() for key, value in login_secret.items()},
            mount_point=paths.kv_mount,
        )
    logger.info("vault.account_provisioned account=%s", paths.account)


def store_oauth_grant(
    admin: hvac.Client,
    paths: AccountPaths,
    *,
    client_secret: SecretStr | None = None,
    refresh_token: SecretStr | None = None,
) -> int:
    """Write the client secret and, after an authorization, the refresh token to the account's grant.

    Fields not given keep their stored values. A new refresh token starts a new
    generation and drops the stored access token. The write is a check-and-set
    on the version read, so a worker's refresh in between is never overwritten
    unnoticed. Returns the new version.
    """
    if paths.oauth_grant_path is None:
        raise ValueError(f"Account '{paths.account}' has no OAuth access path, so it has no grant to store.")

    try:
        response = admin.secrets.kv.v2.read_secret_version(
            path=paths.oauth_grant_path, mount_point=paths.kv_mount, raise_on_deleted_version=True
        )
        fields = {key: str(value) for key, value in response["data"]["data"].items()}
        version = int(response["data"]["metadata"]["version"])
    except hvac.exceptions.InvalidPath:
        fields, version = {}, 0

    if client_secret is not None:
        fields["client_secret"] = client_secret.get_secret_value()
    if refresh_token is not None:
        fields.update(
            refresh_token=refresh_token.get_secret_value(),
            access_token="",
            access_expires_at="",
            lease_holder="",
            lease_expires_at="",
            generation=str(int(fields.get("generation") or 0) + 1),
        )
    fields.setdefault("generation", "0")

    response = admin.secrets.kv.v2.create_or_update_secret(
        path=paths.oauth_grant_path, secret=fields, cas=version, mount_point=paths.kv_mount
    )
    logger.info("vault.oauth_grant_stored account=%s refresh_token=%s", paths.account, refresh_token is not None)
    return int(response["data"]["version"])


def provision_model(
    admin: hvac.Client, model_name: str, *, kv_mount: str, api_key_path: str, api_key: SecretStr | None = None
) -> None:
    """Write the model-call policy of a roster model, and store its API key if given (field ``api_key``)."""
    admin.sys.create_or_update_policy(
        model_call_policy_name(model_name), render_model_call_policy(kv_mount, api_key_path)
    )
    if api_key is not None:
        admin.secrets.kv.v2.create_or_update_secret(
            path=api_key_path, secret={"api_key": api_key.get_secret_value()}, mount_point=kv_mount
        )
    logger.info("vault.model_provisioned model=%s", model_name)
