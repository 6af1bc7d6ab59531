"""Logins that need a person: the ``guided-login`` flow and the ``manual-login`` flow.

A sync never retries a login that failed for a reason only a person can fix
(a wrong or missing password, a challenge page, a second factor). It hands the
account to one of these flows instead:

- ``guided_login`` runs on a worker without a display. It emits
  ``warden.login.required`` and pauses until someone opens the paused run in
  the Prefect UI, clicks *Resume* and enters a one-time code or a new
  password. It deletes that input from Prefect as soon as it has read it,
  logs in once with Chromium, probes the new session, and only then stores
  the password in the vault and the session in the store.
- ``manual_login`` backs ``warden login ACCOUNT`` on a machine with a display.
  It opens a visible Chromium window on the site, waits until the person has
  logged in by hand (the connector's probe accepts the window's cookies), and
  saves that session.

Both flows issue their scoped vault tokens only after the person acted, and
revoke every token and prove each revocation at the end, as the sync does.
Neither retries a login: each person's action gets one attempt.

Start a guided login from Python with :func:`start_guided_login`, or from a
shell::

    prefect deployment run guided-login/guided-login -p account=demo
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from uuid import UUID

import httpx
from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound, PrefectHTTPStatusError
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run as current_flow_run
from prefect.utilities.urls import url_for
from pydantic import BaseModel, Field, SecretStr

from flows.orchestration import PrefectEventSink, PrefectLimits, retry_transient
from flows.sync import issue_scoped_token, load_account, wipe_tokens
from warden.connectors.base import LoginCredentials, ProbeState
from warden.credentials.policies import Action
from warden.credentials.redaction import register_secret
from warden.credentials.tokens import RevocationProof, WrappedToken
from warden.credentials.vault import VaultClient
from warden.errors import (
    ConfigError,
    LoginFailed,
    LoginRequired,
    RevocationUnproven,
    SessionRejected,
    UnexpectedResponse,
    WardenError,
)
from warden.events import EventName
from warden.logs import configure_logging
from warden.run import Limiter, NoLimits, SyncRun
from warden.sessions.capture import login_and_capture
from warden.sessions.forecast import forecast_expiry
from warden.sessions.manual import capture_by_hand
from warden.sessions.state import SessionState
from warden.store import default_document_store

__all__ = [
    "GUIDED_LOGIN_DEPLOYMENT",
    "LoginInput",
    "LoginSummary",
    "guided_login",
    "manual_login",
    "start_guided_login",
]

logger = logging.getLogger("warden.flows")

GUIDED_LOGIN_DEPLOYMENT = "guided-login/guided-login"
DEFAULT_INPUT_TIMEOUT_SECONDS = 3600
# Seconds between the paused run's reads of its own state, which show whether someone resumed it.
INPUT_POLL_SECONDS = 2
# The pause key names the run input's keys: paused-login-input-schema, -description, -response.
PAUSE_KEY = "login-input"
# A guided login in one of these states is still waiting for, or acting on, a person's input.
WAITING_STATE_TYPES = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]

DEFAULT_MANUAL_TIMEOUT_SECONDS = 600.0

SOURCE_GUIDED = "guided-login"
SOURCE_MANUAL = "manual-login"


class LoginInput(RunInput):
    """Form values a person enters in a paused guided-login run in the Prefect UI."""

    # Plain strings with an empty default (not Optional), so the Prefect UI shows a password field at once
    # instead of a choice between a password and None.
    one_time_code: SecretStr = Field(
        default_factory=lambda: SecretStr(""),
        title="One-time code",
        description="The code from your authenticator app, SMS or e-mail, if the site asks for one.",
    )
    new_password: SecretStr = Field(
        default_factory=lambda: SecretStr(""),
        title="New password",
        description="The account's current password, if it changed. Stored in the vault once the site accepts it.",
    )


class LoginSummary(BaseModel):
    """The outcome of one guided or manual login, as the flow returns it."""

    account: str
    source: str = Field(description="guided-login or manual-login; stored with the session version.")
    method: str = Field(
        description="new-password, one-time-code (with the stored password), by-hand, or none before any input."
    )
    password_stored: bool = Field(default=False, description="Whether a new password was written to the vault.")
    session_version: int | None = None
    probe: str = Field(default="not run", description="State the probe returned for the new session.")
    tokens_issued: int = 0
    tokens_revoked: int = 0
    run_url: str | None = None
    error: str | None = None


# -- vault ----------------------------------------------------------------------


async def open_login_run(account: str, *, limiter: Limiter) -> SyncRun:
    """Load the account and return a run for a login flow."""
    config, vault_block = await load_account(account)
    return SyncRun(
        config,
        vault=VaultClient(vault_block.settings()),
        documents=default_document_store(),
        events=PrefectEventSink(),
        limiter=limiter,
    )


def check_vault_login(run: SyncRun) -> None:
    """Log in to the vault and out again, so a wrong secret id fails before a person is asked for anything."""
    run.vault.login()
    run.vault.logout()


# -- tasks ----------------------------------------------------------------------

# Tasks that hold a password or a session never persist their results, whatever the Prefect settings.
_secret_task_options = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="log-in-once", retries=0, **_secret_task_options)
async def log_in_once(run: SyncRun, credentials: LoginCredentials) -> tuple[ProbeState, SessionState]:
    """Log in with Chromium in a fresh context, then probe the new session. Never retried: one attempt per input."""
    async with run.limiter.browser_slot():
        state = await login_and_capture(
            run.browser_pool,
            run.connector,
            credentials,
            account=run.account.name,
            budget=run.account.browser,
        )
    return await probe_new_session(run, state)


@task(name="read-stored-password", retries=2, retry_condition_fn=retry_transient, **_secret_task_options)
async def read_stored_password(run: SyncRun, wrapped: WrappedToken) -> SecretStr:
    """Read the account's stored password with a refresh token."""
    secret = run.vault.read_login_secret(run.token_for(wrapped), run.account.paths)
    password = secret.get("password")
    if password is None:
        raise ConfigError(
            f"The vault secret of account '{run.account.name}' at '{run.account.paths.login_secret_policy_path}' "
            "has no 'password' key, so a one-time code alone cannot log in. "
            f"{restart_hint(run.account.name)} and enter the password too."
        )
    return password


@task(name="store-password", retries=2, retry_condition_fn=retry_transient, **_secret_task_options)
async def store_password(run: SyncRun, wrapped: WrappedToken, password: SecretStr) -> int:
    """Write the password the site accepted as a new version of the account's login secret."""
    return run.vault.write_login_secret(run.token_for(wrapped), run.account.paths, {"password": password})


@task(name="save-session", retries=2, retry_condition_fn=retry_transient, **_secret_task_options)
async def save_session(run: SyncRun, wrapped: WrappedToken, state: SessionState, source: str) -> int:
    """Encrypt and store a session the probe has just accepted; return its version."""
    now = datetime.now(UTC)
    forecast = forecast_expiry(
        state,
        last_valid_at=now,
        sliding_lifetime_seconds=run.account.session_lifetime_seconds,
        auth_cookie_names=run.connector.auth_cookie_names,
    )
    version = run.sessions.save(run.token_for(wrapped), state, last_valid_at=now, forecast=forecast, source=source)
    run.emit(EventName.SESSION_REFRESHED, method=source, version=version, cookies=len(state.cookies))
    return version


async def probe_new_session(run: SyncRun, state: SessionState) -> tuple[ProbeState, SessionState]:
    """Probe a session that was just captured; return the probe state and the rotated session.

    Raises :class:`SessionRejected` when the site does not accept the session.
    """
    async with run.site_access(run.account.site):
        result, rotated = await run.connector.probe(state)

    run.emit(EventName.SESSION_PROBED, state=result.state.value, reason=result.reason)
    if result.state not in (ProbeState.VALID, ProbeState.EXPIRING):
        raise SessionRejected(
            f"The login of account '{run.account.name}' went through, but the probe of the new session returned "
            f"{result.state.value} ({result.reason}). Nothing was stored. {restart_hint(run.account.name)}."
        )
    return result.state, rotated


# -- guided login ---------------------------------------------------------------


def restart_hint(account: str) -> str:
    """Return the clause that names the two ways to start a new guided login for ``account``."""
    return (
        f"Start a new guided login (`prefect deployment run {GUIDED_LOGIN_DEPLOYMENT} -p account={account}`, "
        "or Run on that deployment's page in the Prefect UI)"
    )


def pause_description(account: str, reason: str | None) -> str:
    """Return the Markdown the Prefect UI shows above the guided login's input form."""
    why = f" Reason: {reason}" if reason else ""
    return (
        f"**Account `{account}` needs a person to log in.**{why}\n\n"
        "Fill in one field, or both, then submit. The run then makes exactly one login attempt.\n\n"
        "- **One-time code**: if the site asks for a code from your authenticator app, SMS or e-mail, "
        "enter it. The password stored in the vault is used with it.\n"
        "- **New password**: if the account's password changed, enter the new one. It replaces the stored "
        "password only after the site accepts it.\n\n"
        f"Or, on a machine with a display, run `warden login {account}`, log in in the browser window it opens, "
        "then cancel this run.\n\n"
        "The form shows what you type in plain text. What you enter is deleted from Prefect as soon as this "
        "run reads it."
    )


async def delete_run_inputs(flow_run_id: UUID) -> list[str]:
    """Delete every input of a flow run from Prefect's database, then check none is left; return the keys deleted.

    Prefect stores what a person submits to resume a run (``DELETE /flow_runs/{id}/input/{key}`` removes it).
    The guided login receives input only through its pause, so every input of its run is deleted.

    NOTE: whether the deleted bytes also leave the database file depends on Prefect's database. Debian's
    SQLite 3.40 is built with SECURE_DELETE, which overwrites them. PostgreSQL keeps dead rows until VACUUM.
    """
    deleted = []
    try:
        async with get_client() as client:
            inputs = await client.filter_flow_run_input(flow_run_id, key_prefix="", limit=100, exclude_keys=set())
            for flow_run_input in inputs:
                await client.delete_flow_run_input(flow_run_id, flow_run_input.key)
                deleted.append(flow_run_input.key)
            left = await client.filter_flow_run_input(flow_run_id, key_prefix="", limit=100, exclude_keys=set())
    except (PrefectHTTPStatusError, httpx.HTTPError) as exc:
        raise UnexpectedResponse(
            f"Could not delete the input of guided login run {flow_run_id} from Prefect ({type(exc).__name__}). "
            "It may contain a password: delete the flow run in the Prefect UI, which deletes its input."
        ) from exc

    if left:
        keys = ", ".join(flow_run_input.key for flow_run_input in left)
        raise UnexpectedResponse(
            f"Prefect still contains input {keys} of guided login run {flow_run_id} after its deletion. "
            "It may contain a password: delete the flow run in the Prefect UI, which deletes its input."
        )
    logger.info("login.input_deleted flow_run_id=%s keys=%d", flow_run_id, len(deleted))
    return deleted


async def wait_for_login_input(run: SyncRun, *, reason: str | None, timeout_seconds: int) -> LoginInput:
    """Pause until a person submits the input form; delete what they entered from Prefect before returning it."""
    account = run.account.name
    form = LoginInput.with_initial_data(description=pause_description(account, reason))
    flow_run_id = UUID(current_flow_run.id)

    try:
        login_input = await pause_flow_run(
            wait_for_input=form, timeout=timeout_seconds, poll_interval=INPUT_POLL_SECONDS, key=PAUSE_KEY
        )
    except FlowPauseTimeout as exc:
        run.emit(EventName.LOGIN_REQUIRED, reason="no input within the timeout", stage="input-timeout")
        raise LoginRequired(
            f"No one entered a one-time code or a new password for account '{account}' within {timeout_seconds} s, "
            f"so the guided login ended without logging in. {restart_hint(account)}, "
            f"or run `warden login {account}` on a machine with a display."
        ) from exc
    finally:
        await delete_run_inputs(flow_run_id)

    register_secret(login_input.one_time_code.get_secret_value())
    register_secret(login_input.new_password.get_secret_value())
    return login_input


def _present(value: SecretStr, *, strip: bool = False) -> SecretStr | None:
    text = value.get_secret_value().strip() if strip else value.get_secret_value()
    return SecretStr(text) if text else None


def explain_login_error(exc: WardenError, *, account: str, method: str) -> WardenError:
    """Return the error to end a guided login with: what failed and what the person can do next."""
    if isinstance(exc, LoginFailed):
        if method == "new-password":
            detail = (
                "The site rejected the new password entered in the guided login. "
                "The vault still holds the previous password."
            )
        else:
            detail = (
                "The site rejected the login with the stored password and the one-time code. If the password "
                "changed, enter the new one; if the code expired, enter a fresh one."
            )
        return LoginFailed(f"Guided login of account '{account}' failed. {detail} {restart_hint(account)}.")

    if isinstance(exc, LoginRequired):
        return LoginRequired(
            f"Guided login of account '{account}' failed: the site still shows a challenge (CAPTCHA or second "
            f"factor) that this connector cannot answer. Run `warden login {account}` on a machine with a display "
            "and solve it in the browser window."
        )
    return exc


@flow(name="guided-login", log_prints=False)
async def guided_login(
    account: str,
    reason: str | None = None,
    input_timeout_seconds: int = DEFAULT_INPUT_TIMEOUT_SECONDS,
) -> LoginSummary:
    """Wait for a person's one-time code or new password in the Prefect UI, then log in once and save the session.

    ``reason`` is why the login is needed, shown in the form and the event.
    ``input_timeout_seconds`` is how long the run waits for input before it fails.
    """
    # Installs the redaction filter on every handler, and JSON output when WARDEN_LOG_FORMAT=json.
    configure_logging(add_root_handler=False)
    run_logger = get_run_logger()

    run = await open_login_run(account, limiter=PrefectLimits())
    check_vault_login(run)
    run_url = url_for("flow-run", obj_id=current_flow_run.id)
    summary = LoginSummary(account=account, source=SOURCE_GUIDED, method="none", run_url=run_url)

    run.emit(
        EventName.LOGIN_REQUIRED,
        reason=reason or "a person must log in",
        stage="waiting-for-input",
        guided_login_flow_run_id=current_flow_run.id,
        guided_login_url=run_url,
    )
    run_logger.info(
        "login.waiting account=%s timeout_seconds=%d: open this paused run in the Prefect UI, click Resume "
        "and enter a one-time code or a new password",
        account,
        input_timeout_seconds,
    )
    login_input = await wait_for_login_input(run, reason=reason, timeout_seconds=input_timeout_seconds)
    new_password = _present(login_input.new_password)
    one_time_code = _present(login_input.one_time_code, strip=True)
    del login_input

    failure: BaseException | None = None
    try:
        if new_password is None and one_time_code is None:
            raise LoginRequired(
                f"The guided login of account '{account}' received neither a one-time code nor a new password, "
                f"so it did not try to log in. {restart_hint(account)} and fill in at least one field."
            )
        summary.method = "new-password" if new_password is not None else "one-time-code"

        if new_password is not None:
            password = new_password
        else:
            password = await read_stored_password(run, await issue_scoped_token(run, Action.REFRESH))
        credentials = LoginCredentials(username=run.account.username, password=password, one_time_code=one_time_code)
        del password

        try:
            probe_state, state = await log_in_once(run, credentials)
        except (LoginFailed, LoginRequired) as exc:
            raise explain_login_error(exc, account=account, method=summary.method) from exc
        finally:
            del credentials
        summary.probe = probe_state.value

        if new_password is not None:
            await store_password(run, await issue_scoped_token(run, Action.STORE_PASSWORD), new_password)
            summary.password_stored = True
        summary.session_version = await save_session(
            run, await issue_scoped_token(run, Action.PROBE), state, SOURCE_GUIDED
        )
    except Exception as exc:  # noqa: BLE001 - recorded, the wipe runs, then re-raised below
        failure = exc
        summary.error = str(exc) if isinstance(exc, WardenError) else f"{type(exc).__name__}: {exc}"
        run.emit(EventName.LOGIN_REQUIRED, reason=type(exc).__name__, stage="login-failed")
    finally:
        del new_password, one_time_code
        failure = await finish_login_run(run, summary, failure)

    if failure is not None:
        raise failure
    run_logger.info(
        "login.done account=%s method=%s password_stored=%s session_version=%s",
        account,
        summary.method,
        summary.password_stored,
        summary.session_version,
    )
    return summary


async def finish_login_run(run: SyncRun, summary: LoginSummary, failure: BaseException | None) -> BaseException | None:
    """Revoke every token the run issued, record the counts and artifacts; return the failure to raise, if any."""
    summary.tokens_issued = len(run.ledger)
    try:
        proofs = await wipe_tokens(run)
    except RevocationUnproven as exc:
        get_run_logger().error("%s", exc)
        if failure is None:
            failure = exc
            summary.error = str(exc)
        proofs = run.proofs
    summary.tokens_revoked = sum(1 for proof in proofs if proof.proven)
    await publish_login_artifacts(summary, proofs)
    return failure


async def publish_login_artifacts(summary: LoginSummary, proofs: list[RevocationProof]) -> None:
    key = f"{summary.source}-{summary.account}".replace("_", "-")
    if proofs:
        await acreate_table_artifact(
            key=f"{key}-revocations",
            table=[proof.model_dump(mode="json") for proof in proofs],
            description="Every vault token this login issued, when it was revoked, and whether a lookup proved it.",
        )
    if summary.error:
        await acreate_markdown_artifact(
            key=f"{key}-failure",
            markdown=f"## Login of `{summary.account}` failed\n\n{summary.error}\n",
            description="What failed and what to do.",
        )


async def start_guided_login(account: str, *, reason: str | None = None) -> str | None:
    """Start a run of the guided-login deployment for ``account``; return its flow run id.

    Returns the id of a run already waiting for the same account instead of
    starting a second one. Returns None, after logging how to start one, when
    no deployment named ``guided-login/guided-login`` exists. Does not wait for
    the run (``run_deployment(..., timeout=0)``).
    """
    async with get_client() as client:
        try:
            deployment = await client.read_deployment_by_name(GUIDED_LOGIN_DEPLOYMENT)
        except ObjectNotFound:
            logger.warning(
                "login.guided_unavailable account=%s: no deployment %s. Deploy it (prefect.yaml) and run "
                "`prefect deployment run %s -p account=%s`, or run `warden login %s` on a machine with a display.",
                account,
                GUIDED_LOGIN_DEPLOYMENT,
                GUIDED_LOGIN_DEPLOYMENT,
                account,
                account,
            )
            return None

        waiting = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=WAITING_STATE_TYPES))
            ),
        )
    for existing in waiting:
        if existing.parameters.get("account") == account:
            logger.info("login.guided_already_waiting account=%s flow_run_id=%s", account, existing.id)
            return str(existing.id)

    parameters: dict[str, object] = {"account": account}
    if reason:
        parameters["reason"] = reason
    flow_run = await run_deployment(GUIDED_LOGIN_DEPLOYMENT, parameters=parameters, timeout=0)
    logger.info("login.guided_started account=%s flow_run_id=%s", account, flow_run.id)
    return str(flow_run.id)


# -- manual login ---------------------------------------------------------------


@flow(name="manual-login", log_prints=False)
async def manual_login(
    account: str,
    timeout_seconds: float = DEFAULT_MANUAL_TIMEOUT_SECONDS,
    remote_debugging_port: int | None = None,
) -> LoginSummary:
    """Let a person log in by hand in a visible Chromium window, then save the session the probe accepts.

    Needs a display. ``remote_debugging_port`` opens Chromium's DevTools
    protocol on 127.0.0.1 so a program can drive the window, as the tests do.
    """
    # Installs the redaction filter on every handler, and JSON output when WARDEN_LOG_FORMAT=json.
    configure_logging(add_root_handler=False)

    # A person's window on their own machine takes no slot of the workers' shared browser limit.
    run = await open_login_run(account, limiter=NoLimits())
    check_vault_login(run)
    summary = LoginSummary(
        account=account, source=SOURCE_MANUAL, method="by-hand", run_url=url_for("flow-run", obj_id=current_flow_run.id)
    )

    failure: BaseException | None = None
    try:
        probe_state, state = await capture_by_hand(
            run, timeout_seconds=timeout_seconds, remote_debugging_port=remote_debugging_port
        )
        summary.probe = probe_state.value
        summary.session_version = await save_session(
            run, await issue_scoped_token(run, Action.PROBE), state, SOURCE_MANUAL
        )
    except Exception as exc:  # noqa: BLE001 - recorded, the wipe runs, then re-raised below
        failure = exc
        summary.error = str(exc) if isinstance(exc, WardenError) else f"{type(exc).__name__}: {exc}"
    finally:
        failure = await finish_login_run(run, summary, failure)

    if failure is not None:
        raise failure
    return summary
