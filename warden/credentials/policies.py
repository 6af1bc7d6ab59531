"""Vault policies: what each action of a sync may touch, per account.

A sync never has a token that can read another account's paths or do more
than its current action needs. The runner (the AppRole identity of the flows)
may only create child tokens through one token role whose
``allowed_policies_glob`` admits the per-account action policies below, and
revoke and look up tokens by accessor for the wipe.

An account with an OAuth access path has three more actions, each limited to
its grant secret on KV v2 (client secret, refresh token, the current access
token, a generation counter and a refresh lease): ``grant-probe`` reads it,
``grant-refresh`` and ``api-fetch`` read and write it, always with
check-and-set. None of them can read the login password or the session key.

The guided login adds one action, ``store-password``, whose token may write
the account's login secret and nothing else: it cannot read the secret back.

KV v2 policy paths include ``data/``: the secret at ``connectors/demo`` on the
``secret`` mount is ``secret/data/connectors/demo`` in a policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ACTION_POLICY_PREFIX",
    "RUNNER_POLICY",
    "TOKEN_ROLE",
    "Action",
    "ActionRule",
    "AccountPaths",
    "action_policy_name",
    "model_call_policy_name",
    "render_action_policy",
    "render_model_call_policy",
    "render_runner_policy",
    "rule_for",
    "actions_for",
]

ACTION_POLICY_PREFIX = "warden-acct-"
RUNNER_POLICY = "warden-runner"
TOKEN_ROLE = "warden-action"


class Action(StrEnum):
    """A step of a sync or login that needs a secret, and so gets its own token."""

    PROBE = "probe"
    REFRESH = "refresh"
    FETCH = "fetch"
    # Replace the login secret with a password a person entered and the site accepted (guided login).
    STORE_PASSWORD = "store-password"
    # OAuth access path: check the stored access token, refresh it, and use it at the API.
    GRANT_PROBE = "grant-probe"
    GRANT_REFRESH = "grant-refresh"
    API_FETCH = "api-fetch"
    # Read one roster model's API key for one call (not per account: see model_call_policy_name).
    MODEL_CALL = "model-call"


OAUTH_ACTIONS = frozenset({Action.GRANT_PROBE, Action.GRANT_REFRESH, Action.API_FETCH})
# Actions whose policies belong to a model of the roster, not to an account.
MODEL_ACTIONS = frozenset({Action.MODEL_CALL})


@dataclass(frozen=True)
class ActionRule:
    """Capabilities one action needs, and how many vault requests its token may make."""

    read_login_secret: bool
    decrypt_session: bool
    encrypt_session: bool
    num_uses: int
    write_login_secret: bool = False
    read_oauth_grant: bool = False
    write_oauth_grant: bool = False


# A token serves every attempt of its task: the orchestrator retries a task up to twice, and a retry
# reuses the unwrapped token. So each count is the requests of one attempt, times three:
# probe and fetch decrypt up to three stored versions (the newest, then two older ones if it is
# unreadable) and encrypt once; refresh reads the password, decrypts the newest version to seed
# the browser, and encrypts once. Denied requests also consume uses.
#
# OAuth actions: grant-probe reads the grant once. grant-refresh reads it and takes the lease with
# one write. While another worker holds the lease it polls, at most LEASE_POLLS reads, then writes
# the new tokens. api-fetch reads the grant; after revoking the access token it reads and clears it,
# with one more read and write when it loses a race.
ATTEMPTS_PER_TOKEN = 3
LEASE_POLLS = 40
_NO_SESSION = dict(read_login_secret=False, decrypt_session=False, encrypt_session=False)
_RULES = {
    Action.PROBE: ActionRule(
        read_login_secret=False, decrypt_session=True, encrypt_session=True, num_uses=4 * ATTEMPTS_PER_TOKEN
    ),
    Action.REFRESH: ActionRule(
        read_login_secret=True, decrypt_session=True, encrypt_session=True, num_uses=3 * ATTEMPTS_PER_TOKEN
    ),
    Action.FETCH: ActionRule(
        read_login_secret=False, decrypt_session=True, encrypt_session=True, num_uses=4 * ATTEMPTS_PER_TOKEN
    ),
    Action.STORE_PASSWORD: ActionRule(
        read_login_secret=False, decrypt_session=False, encrypt_session=False, num_uses=2, write_login_secret=True
    ),
    Action.GRANT_PROBE: ActionRule(**_NO_SESSION, num_uses=1 * ATTEMPTS_PER_TOKEN, read_oauth_grant=True),
    Action.GRANT_REFRESH: ActionRule(
        **_NO_SESSION, num_uses=(LEASE_POLLS + 4) * ATTEMPTS_PER_TOKEN, read_oauth_grant=True, write_oauth_grant=True
    ),
    Action.API_FETCH: ActionRule(
        **_NO_SESSION, num_uses=5 * ATTEMPTS_PER_TOKEN, read_oauth_grant=True, write_oauth_grant=True
    ),
    # One read of the key per call; a model call is never retried, so no attempts factor.
    Action.MODEL_CALL: ActionRule(**_NO_SESSION, num_uses=1),
}


def rule_for(action: Action) -> ActionRule:
    """Return the capabilities and use count of an action."""
    return _RULES[action]


def actions_for(paths: AccountPaths) -> list[Action]:
    """Return the actions an account has policies for: the OAuth ones only when it has a grant path."""
    return [
        action
        for action in Action
        if action not in MODEL_ACTIONS and (paths.oauth_grant_path is not None or action not in OAUTH_ACTIONS)
    ]


@dataclass(frozen=True)
class AccountPaths:
    """Vault locations of one account's login secret and session key."""

    account: str
    kv_mount: str
    login_secret_path: str
    transit_mount: str
    session_key: str
    # KV v2 path of the OAuth grant on ``kv_mount``; None for accounts without an OAuth access path.
    oauth_grant_path: str | None = None

    @property
    def login_secret_policy_path(self) -> str:
        return f"{self.kv_mount}/data/{self.login_secret_path}"

    @property
    def oauth_grant_policy_path(self) -> str | None:
        return None if self.oauth_grant_path is None else f"{self.kv_mount}/data/{self.oauth_grant_path}"


def action_policy_name(account: str, action: Action) -> str:
    """Return the policy name for one account's action, e.g. ``warden-acct-demo-fetch``."""
    return f"{ACTION_POLICY_PREFIX}{account}-{action.value}"


def render_action_policy(paths: AccountPaths, action: Action) -> str:
    """Render the HCL policy that grants exactly what ``action`` needs on ``paths``."""
    rule = rule_for(action)
    blocks = []

    if rule.read_login_secret:
        blocks.append(f'path "{paths.login_secret_policy_path}" {{ capabilities = ["read"] }}')
    if rule.write_login_secret:
        # KV v2 requires "create" for a path without a secret and "update" for a new version. No "read".
        blocks.append(f'path "{paths.login_secret_policy_path}" {{ capabilities = ["create", "update"] }}')
    grant_path = paths.oauth_grant_policy_path
    if (rule.read_oauth_grant or rule.write_oauth_grant) and grant_path is None:
        raise ValueError(f"Account '{paths.account}' has no OAuth grant path, so it has no {action.value} policy.")
    if rule.write_oauth_grant:
        # Check-and-set writes need "create" for the first version and "update" after it.
        blocks.append(f'path "{grant_path}" {{ capabilities = ["read", "create", "update"] }}')
    elif rule.read_oauth_grant:
        blocks.append(f'path "{grant_path}" {{ capabilities = ["read"] }}')
    if rule.decrypt_session:
        blocks.append(f'path "{paths.transit_mount}/decrypt/{paths.session_key}" {{ capabilities = ["update"] }}')
    if rule.encrypt_session:
        blocks.append(f'path "{paths.transit_mount}/encrypt/{paths.session_key}" {{ capabilities = ["update"] }}')
    return "\n".join(blocks) + "\n"


def model_call_policy_name(model_name: str) -> str:
    """Return the policy name of a model's key, e.g. ``warden-acct-model-hosted-model-call``.

    The ``warden-acct-`` prefix is what the token role's ``allowed_policies_glob`` admits.
    """
    return f"{ACTION_POLICY_PREFIX}model-{model_name}-{Action.MODEL_CALL.value}"


def render_model_call_policy(kv_mount: str, api_key_path: str) -> str:
    """Render the HCL policy that may read one model's API key on KV v2 and nothing else."""
    return f'path "{kv_mount}/data/{api_key_path}" {{ capabilities = ["read"] }}\n'


def render_runner_policy() -> str:
    """Render the policy of the runner identity: create action tokens, revoke and look them up."""
    return (
        f'path "auth/token/create/{TOKEN_ROLE}" {{ capabilities = ["update"] }}\n'
        'path "auth/token/revoke-accessor" { capabilities = ["update"] }\n'
        'path "auth/token/lookup-accessor" { capabilities = ["update"] }\n'
        'path "auth/token/revoke-self" { capabilities = ["update"] }\n'
    )
