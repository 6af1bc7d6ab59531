"""The oauth access path on the real stack: oidc-provider, Dovecot with XOAUTH2, OpenBao, Prefect.

The account reads the same mailbox as a Roundcube account, over IMAP with an
access token. Refresh tokens rotate on every use and the provider refuses a
consumed one, so two workers that both refreshed would break the grant: the
tests count the refresh requests that reach the provider in its event log.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta

import hvac
import pytest
import pytest_asyncio
from pydantic import SecretStr

from stack.testing import worker_environment
from warden.accounts import AccessPath, AccountConfig
from warden.credentials.oauth import OAuthSettings, current_access_token
from warden.demo.documents import build_demo_messages
from warden.demo.seed import seed_mailbox
from warden.errors import SiteUnreachable
from warden.events import EventName

pytestmark = [pytest.mark.stack, pytest.mark.oauth]

MAIL_USER = "oauth-user"
MAIL_PASSWORD = "oauth-Password-5521"
ACCOUNT = "oauth-mail"
FALLBACK_ACCOUNT = "oauth-fallback"
RACE_ACCOUNT = "oauth-race"


def oauth_settings(provider, **overrides) -> dict:
    settings = OAuthSettings(
        client_id="warden",
        token_url=provider.token_endpoint,
        authorization_url=provider.authorization_endpoint,
        revocation_url=provider.revocation_endpoint,
        introspection_url=provider.introspection_endpoint,
        scope="mail.read",
        **overrides,
    )
    return settings.model_dump(mode="json")


def refresh_requests(provider, client_id: str = "warden") -> list[dict]:
    return [
        event
        for event in provider.events()
        if event.get("event") == "token.request"
        and event.get("grant_type") == "refresh_token"
        and event.get("client_id") == client_id
    ]


def imap_flags(mail_server) -> dict[int, str]:
    connection = imaplib.IMAP4(mail_server.imap_host, mail_server.imap_port)
    connection.login(MAIL_USER, MAIL_PASSWORD)
    connection.select("INBOX", readonly=True)
    _, data = connection.uid("FETCH", "1:*", "(FLAGS)")
    connection.logout()
    return {index: line.decode() for index, line in enumerate(data) if isinstance(line, bytes)}


@pytest.fixture(scope="module")
def sync_env(openbao_server, mail_server, oidc_provider, prefect_server, tmp_path_factory):
    with worker_environment(tmp_path_factory.mktemp("warden-home-oauth")) as home:
        yield home


async def authorize(admin: hvac.Client, config: AccountConfig, provider) -> None:
    """Play the person: log in at the provider, consent, and store the refresh token in the vault."""
    from flows.demo import authorize_with_login

    await authorize_with_login(admin, config, provider, MAIL_USER, SecretStr(MAIL_PASSWORD))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def registered(sync_env, openbao_server, mail_server, oidc_provider):
    from blocks.account import ConnectorAccount
    from flows.registration import register_account, set_up_vault

    admin = hvac.Client(url=openbao_server.address, token=openbao_server.root_token.get_secret_value())
    runner = await set_up_vault(admin)
    os.environ["WARDEN_VAULT_SECRET_ID"] = runner.secret_id.get_secret_value()

    mail_server.add_user(MAIL_USER, MAIL_PASSWORD)
    oidc_provider.add_user(MAIL_USER, MAIL_PASSWORD)
    messages = build_demo_messages(to_address=f"{MAIL_USER}@warden.test", from_address="sender@warden.test")
    seed_mailbox(mail_server.imap_host, mail_server.imap_port, MAIL_USER, SecretStr(MAIL_PASSWORD), messages)

    client_secret = oidc_provider.clients()["warden"].client_secret
    api_options = {"host": mail_server.imap_host, "port": mail_server.imap_port, "tls": False}
    configs = {}
    for name, paths in (
        (ACCOUNT, ["oauth"]),
        (FALLBACK_ACCOUNT, ["oauth", "browser-session"]),
        (RACE_ACCOUNT, ["oauth"]),
    ):
        await register_account(
            name,
            admin=admin,
            base_url=mail_server.roundcube_url,
            username=MAIL_USER,
            password=SecretStr(MAIL_PASSWORD),
            session_lifetime_seconds=mail_server.session_lifetime_minutes * 60,
            oauth_client_secret=client_secret,
            access_paths=paths,
            oauth=oauth_settings(oidc_provider, lease_seconds=4 if name == RACE_ACCOUNT else 30),
            api_connector="imap",
            api_options=api_options,
        )
        configs[name] = (await ConnectorAccount.aload(name)).to_config(name)

    for name in (ACCOUNT, RACE_ACCOUNT):
        await authorize(admin, configs[name], oidc_provider)
    return {"admin": admin, "configs": configs, "messages": messages, "runner": runner}


def grant_fields(admin: hvac.Client, config: AccountConfig) -> tuple[dict, int]:
    response = admin.secrets.kv.v2.read_secret_version(
        path=config.oauth_grant_path, mount_point=config.kv_mount, raise_on_deleted_version=True
    )
    return response["data"]["data"], response["data"]["metadata"]["version"]


# -- the flow ---------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def first_sync(registered, mail_server):
    from flows.sync import connector_sync

    flags_before = imap_flags(mail_server)
    summary = await connector_sync(ACCOUNT)
    return summary, flags_before


async def test_sync_reads_the_mailbox_over_imap(first_sync, registered, mail_server):
    summary, flags_before = first_sync
    assert summary.access_path == AccessPath.OAUTH.value
    assert summary.browser_launches == 0
    assert summary.refreshed is True
    assert summary.messages_seen == len(registered["messages"])
    assert summary.attachments_fetched > 0
    # BODY.PEEK on a read-only folder: not one flag changed.
    assert imap_flags(mail_server) == flags_before


async def test_access_token_revoked_after_fetch(first_sync, registered, oidc_provider):
    summary, _ = first_sync
    fields, _ = grant_fields(registered["admin"], registered["configs"][ACCOUNT])
    assert fields["access_token"] == ""
    assert int(fields["generation"]) >= 2
    revocations = [event for event in oidc_provider.events() if event.get("event") == "revocation.request"]
    assert revocations and revocations[-1]["status"] == 200
    # The vault tokens plus the provider's access token, each proven.
    assert summary.tokens_revoked == summary.tokens_issued + 1


async def test_second_sync_refreshes_and_fetches_nothing(first_sync, registered, oidc_provider):
    from flows.sync import connector_sync

    before = len(refresh_requests(oidc_provider))
    summary = await connector_sync(ACCOUNT)
    assert summary.access_path == "oauth"
    assert summary.messages_seen == 0
    assert summary.probe == "expired"
    assert len(refresh_requests(oidc_provider)) == before + 1


async def test_missing_grant_falls_back_to_the_browser_session(registered):
    from flows.sync import connector_sync

    summary = await connector_sync(FALLBACK_ACCOUNT)
    assert summary.access_path == AccessPath.BROWSER_SESSION.value
    assert summary.paths_unavailable and summary.paths_unavailable[0].startswith("oauth:")
    assert "warden oauth authorize" in summary.paths_unavailable[0]
    assert summary.browser_launches == 1


# -- refresh without races ----------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    from pydantic import SecretStr
    from blocks.account import ConnectorAccount
    from warden.credentials.oauth import current_access_token
    from warden.credentials.policies import Action
    from warden.credentials.vault import VaultClient, VaultSettings
    from warden.oauth_steps import VaultGrantStore

    async def main():
        name, start_at = sys.argv[1], float(sys.argv[2])
        config = (await ConnectorAccount.aload(name)).to_config(name)
        vault = VaultClient(VaultSettings(
            address=os.environ["VAULT_ADDR"], role_id=os.environ["RUNNER_ROLE_ID"],
            secret_id=SecretStr(os.environ["WARDEN_VAULT_SECRET_ID"])))
        token = vault.unwrap(vault.issue(config.paths, Action.GRANT_REFRESH, ttl_seconds=60))
        store = VaultGrantStore(vault, token, config.paths)
        events = []
        ready_at = time.time()
        time.sleep(max(0.0, start_at - time.time()))
        access = await current_access_token(
            store, config.oauth, account=name, emit=lambda event, **payload: events.append(event.value))
        print(json.dumps({"token": access.fingerprint, "source": access.source, "events": events,
                          "ready_before_start": ready_at < start_at}))

    asyncio.run(main())
    """
)


def start_workers(registered, openbao_server, count: int = 2) -> list[subprocess.Popen]:
    environment = {
        **os.environ,
        "VAULT_ADDR": openbao_server.address,
        "RUNNER_ROLE_ID": registered["runner"].role_id,
    }
    # Both workers wait for the same instant, after their imports and vault logins.
    start_at = str(time.time() + 10.0)
    return [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, RACE_ACCOUNT, start_at],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def clear_access_token(admin: hvac.Client, config: AccountConfig) -> None:
    fields, version = grant_fields(admin, config)
    fields.update(access_token="", access_expires_at="")
    admin.secrets.kv.v2.create_or_update_secret(
        path=config.oauth_grant_path, secret=fields, cas=version, mount_point=config.kv_mount
    )


async def test_two_workers_refresh_once(registered, openbao_server, oidc_provider):
    config = registered["configs"][RACE_ACCOUNT]
    clear_access_token(registered["admin"], config)
    before = refresh_requests(oidc_provider)

    workers = start_workers(registered, openbao_server)
    results = []
    for worker in workers:
        stdout, stderr = await asyncio.to_thread(worker.communicate, timeout=90)
        assert worker.returncode == 0, stderr[-2000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))

    after = refresh_requests(oidc_provider)[len(before) :]
    assert [event["status"] for event in after] == [200], after
    assert all(result["ready_before_start"] for result in results), "a worker was not ready in time; no race ran"
    assert results[0]["token"] == results[1]["token"]
    # The other worker either waited for the lease ("refreshed-elsewhere") or, if it read the grant
    # only after the refresh was written, found the new token stored.
    sources = sorted(result["source"] for result in results)
    assert sources in (["refreshed", "refreshed-elsewhere"], ["refreshed", "stored"])
    fields, _ = grant_fields(registered["admin"], config)
    assert fields["lease_holder"] == ""


async def test_dead_lease_holder_is_taken_over(registered, openbao_server, oidc_provider):
    """A holder that died leaves its lease. After it expires, the next worker refreshes and emits refresh-stuck."""
    admin, config = registered["admin"], registered["configs"][RACE_ACCOUNT]
    fields, version = grant_fields(admin, config)
    fields.update(
        access_token="",
        access_expires_at="",
        lease_holder="gone-host:4242:deadbeef",
        lease_expires_at=(datetime.now(UTC) + timedelta(seconds=3)).isoformat(),
    )
    admin.secrets.kv.v2.create_or_update_secret(
        path=config.oauth_grant_path, secret=fields, cas=version, mount_point=config.kv_mount
    )
    before = len(refresh_requests(oidc_provider))

    [worker] = start_workers(registered, openbao_server, count=1)
    stdout, stderr = await asyncio.to_thread(worker.communicate, timeout=90)
    assert worker.returncode == 0, stderr[-2000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["source"] == "refreshed"
    assert EventName.OAUTH_REFRESH_STUCK.value in result["events"]
    assert len(refresh_requests(oidc_provider)) == before + 1


class SilentServer:
    """A server that accepts connections on loopback and never responds: a provider that hangs."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.connections:
            connection.close()


class MemoryGrantStore:
    """A grant store with check-and-set in memory, for a provider that never responds."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields, self.version = dict(fields), 1

    def read(self):
        return dict(self.fields), self.version

    def write(self, data, *, cas):
        from warden.errors import WriteConflict

        if cas != self.version:
            raise WriteConflict("conflict")
        self.fields, self.version = dict(data), self.version + 1
        return self.version


async def test_hanging_provider_releases_the_lease_and_reports_it():
    server = SilentServer()
    try:
        settings = OAuthSettings(
            client_id="warden", token_url=f"http://127.0.0.1:{server.port}/token", lease_seconds=1.5
        )
        store = MemoryGrantStore({"client_secret": "s" * 20, "refresh_token": "r" * 30, "generation": "3"})
        events = []
        started = time.monotonic()
        with pytest.raises(SiteUnreachable, match="timed out"):
            await current_access_token(
                store, settings, account="hang", emit=lambda event, **payload: events.append(event)
            )
        assert time.monotonic() - started < 10
        assert events == [EventName.OAUTH_REFRESH_STUCK]
        assert store.fields["lease_holder"] == ""
        assert store.fields["refresh_token"] == "r" * 30
    finally:
        server.close()


async def test_revoked_grant_is_login_required_not_retried(registered, oidc_provider):
    """After the refresh token is spent elsewhere, the path is unavailable and a person is asked, once."""
    from flows.sync import connector_sync

    admin, config = registered["admin"], registered["configs"][RACE_ACCOUNT]
    fields, version = grant_fields(admin, config)
    fields.update(access_token="", access_expires_at="", refresh_token="not-a-refresh-token-anymore")
    admin.secrets.kv.v2.create_or_update_secret(
        path=config.oauth_grant_path, secret=fields, cas=version, mount_point=config.kv_mount
    )
    before = len(refresh_requests(oidc_provider))

    state = await connector_sync(RACE_ACCOUNT, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="warden oauth authorize"):
        await state.aresult()
    # One refused request, no retry loop.
    assert [event["status"] for event in refresh_requests(oidc_provider)[before:]] == [400]


class AdminGrantStore:
    """The grant on KV v2 through the administrator's token, for setting up a case."""

    def __init__(self, admin: hvac.Client, config: AccountConfig) -> None:
        self.admin, self.config = admin, config

    def read(self):
        return grant_fields(self.admin, self.config)

    def write(self, data, *, cas):
        response = self.admin.secrets.kv.v2.create_or_update_secret(
            path=self.config.oauth_grant_path, secret=data, cas=cas, mount_point=self.config.kv_mount
        )
        return response["data"]["version"]


async def test_token_refused_by_imap_is_refreshed_once(first_sync, registered, oidc_provider):
    """A token the grant calls valid but the provider revoked: IMAP refuses it, one refresh, then the fetch."""
    from flows.sync import connector_sync
    from warden.credentials.oauth import OAuthClient

    admin, config = registered["admin"], registered["configs"][ACCOUNT]
    access = await current_access_token(
        AdminGrantStore(admin, config), config.oauth, account=ACCOUNT, emit=lambda event, **payload: None
    )
    client = OAuthClient(config.oauth, oidc_provider.clients()["warden"].client_secret, account=ACCOUNT)
    await client.revoke(access.secret)
    before = len(refresh_requests(oidc_provider))

    summary = await connector_sync(ACCOUNT)

    assert summary.probe == "valid"
    assert summary.access_path == "oauth"
    assert summary.refreshed is True
    assert len(refresh_requests(oidc_provider)) == before + 1


async def test_token_about_to_expire_is_renewed(registered, openbao_server):
    """A retried or long task gets a new token for its action instead of a vault refusal."""
    from warden.credentials.policies import Action
    from warden.credentials.vault import VaultClient, VaultSettings
    from warden.oauth_steps import VaultGrantStore
    from warden.run import SyncRun
    from warden.store import default_document_store

    config = registered["configs"][ACCOUNT].model_copy(update={"token_ttl_seconds": 8})
    vault = VaultClient(
        VaultSettings(openbao_server.address, registered["runner"].role_id, registered["runner"].secret_id)
    )
    run = SyncRun(config, vault=vault, documents=default_document_store())
    wrapped = vault.issue(config.paths, Action.GRANT_PROBE, ttl_seconds=8)
    run.ledger.record_issued(wrapped)
    first = run.token_for(wrapped)
    assert run.token_for(wrapped) == first

    await asyncio.sleep(6.5)
    renewed = run.token_for(wrapped)
    assert renewed.accessor != first.accessor
    assert len(run.ledger) == 2
    assert VaultGrantStore(vault, renewed, config.paths).read()[1] > 0

    proofs = [vault.revoke_and_prove(issued) for issued in run.ledger.issued()]
    assert all(proof.proven for proof in proofs)
