"""Per-action vault tokens against a real OpenBao: scope, single unwrap, revocation and its proof."""

import uuid

import hvac
import pytest
from pydantic import SecretStr

from stack.openbao import OpenBaoDevServer
from warden.credentials.policies import AccountPaths, Action
from warden.credentials.provision import provision_account, provision_runner, store_oauth_grant
from warden.credentials.vault import VaultClient, VaultSettings
from warden.errors import TokenUnwrapFailed, VaultDenied, VaultUnavailable, WriteConflict

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def admin(openbao_server):
    return hvac.Client(url=openbao_server.address, token=openbao_server.root_token.get_secret_value())


@pytest.fixture(scope="module")
def runner(admin):
    return provision_runner(admin)


def new_account(admin, password: str = "correct horse battery", *, oauth: bool = False) -> AccountPaths:
    name = f"acct-{uuid.uuid4().hex[:8]}"
    paths = AccountPaths(
        account=name,
        kv_mount="secret",
        login_secret_path=f"connectors/{name}",
        transit_mount="transit",
        session_key=f"session-{name}",
        oauth_grant_path=f"oauth/{name}" if oauth else None,
    )
    provision_account(admin, paths, {"password": SecretStr(password)})
    return paths


@pytest.fixture
def vault(openbao_server, runner):
    client = VaultClient(VaultSettings(openbao_server.address, runner.role_id, runner.secret_id))
    yield client
    client.logout()


def test_refresh_token_reads_own_password(admin, vault):
    paths = new_account(admin, password="s3cret-for-refresh")
    token = vault.unwrap(vault.issue(paths, Action.REFRESH, ttl_seconds=30))
    assert vault.read_login_secret(token, paths)["password"].get_secret_value() == "s3cret-for-refresh"


def test_token_denied_other_account(admin, vault):
    mine = new_account(admin)
    other = new_account(admin)
    token = vault.unwrap(vault.issue(mine, Action.REFRESH, ttl_seconds=30))
    with pytest.raises(VaultDenied) as caught:
        vault.read_login_secret(token, other)
    assert other.account in str(caught.value)
    assert other.login_secret_policy_path in str(caught.value)


def test_probe_token_cannot_read_password(admin, vault):
    paths = new_account(admin)
    probe_token = vault.unwrap(vault.issue(paths, Action.PROBE, ttl_seconds=30))
    with pytest.raises(VaultDenied):
        vault.read_login_secret(probe_token, paths)

    ciphertext = vault.encrypt(probe_token, paths, b'{"cookies": []}')
    assert vault.decrypt(probe_token, paths, ciphertext) == b'{"cookies": []}'


def test_store_password_token_cannot_decrypt(admin, vault):
    paths = new_account(admin)
    fetch_token = vault.unwrap(vault.issue(paths, Action.FETCH, ttl_seconds=30))
    ciphertext = vault.encrypt(fetch_token, paths, b'{"cookies": []}')

    store_token = vault.unwrap(vault.issue(paths, Action.STORE_PASSWORD, ttl_seconds=30))
    with pytest.raises(VaultDenied):
        vault.decrypt(store_token, paths, ciphertext)


def test_token_ttl_and_uses_bounded(admin, vault):
    paths = new_account(admin)
    wrapped = vault.issue(paths, Action.PROBE, ttl_seconds=45)
    token = vault.unwrap(wrapped)
    looked_up = admin.auth.token.lookup_accessor(token.accessor)["data"]
    assert looked_up["ttl"] <= 45
    assert looked_up["num_uses"] == wrapped.num_uses
    assert looked_up["policies"] == [f"warden-acct-{paths.account}-probe"]
    assert token.accessor == wrapped.accessor


def test_second_unwrap_fails(admin, vault):
    paths = new_account(admin)
    wrapped = vault.issue(paths, Action.FETCH, ttl_seconds=30)
    vault.unwrap(wrapped)
    with pytest.raises(TokenUnwrapFailed) as caught:
        vault.unwrap(wrapped)
    assert wrapped.accessor in str(caught.value)


def test_revocation_proven_by_failed_lookup(admin, vault):
    paths = new_account(admin)
    wrapped = vault.issue(paths, Action.FETCH, ttl_seconds=30)
    token = vault.unwrap(wrapped)

    proof = vault.revoke_and_prove(wrapped)
    assert proof.proven
    assert proof.revoked_at is not None
    with pytest.raises(hvac.exceptions.InvalidRequest):
        admin.auth.token.lookup_accessor(token.accessor)
    with pytest.raises(VaultDenied):
        vault.decrypt(token, paths, "vault:v1:AAAA")


def test_revocation_refused_is_unproven(admin, openbao_server):
    # A runner whose policy lacks revoke-accessor: the 403 must never count as revoked.
    admin.sys.create_or_update_policy(
        "runner-without-revoke",
        'path "auth/token/create/warden-action" { capabilities = ["update"] }\n'
        'path "auth/token/lookup-accessor" { capabilities = ["update"] }\n',
    )
    admin.auth.approle.create_or_update_approle("no-revoke", token_policies=["runner-without-revoke"])
    role_id = admin.auth.approle.read_role_id("no-revoke")["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id("no-revoke")["data"]["secret_id"]
    vault = VaultClient(VaultSettings(openbao_server.address, role_id, SecretStr(secret_id)))

    paths = new_account(admin)
    wrapped = vault.issue(paths, Action.FETCH, ttl_seconds=30)
    proof = vault.revoke_and_prove(wrapped)
    assert not proof.proven
    assert "403" in proof.detail
    assert admin.auth.token.lookup_accessor(wrapped.accessor)["data"]["accessor"] == wrapped.accessor


def test_wrong_secret_id_names_the_fix(openbao_server, runner):
    vault = VaultClient(VaultSettings(openbao_server.address, runner.role_id, SecretStr("not-the-secret-id")))
    with pytest.raises(VaultDenied) as caught:
        vault.login()
    assert "WARDEN_VAULT_SECRET_ID" in str(caught.value)


def test_vault_down_is_transient(runner):
    vault = VaultClient(VaultSettings("http://127.0.0.1:9", runner.role_id, runner.secret_id, timeout_seconds=2))
    with pytest.raises(VaultUnavailable) as caught:
        vault.login()
    assert "127.0.0.1:9" in str(caught.value)


def test_sealed_vault_is_transient(stack_run_dir):
    server = OpenBaoDevServer(stack_run_dir / "sealed-openbao")
    server.start()
    try:
        admin = hvac.Client(url=server.address, token=server.root_token.get_secret_value())
        credentials = provision_runner(admin)
        admin.sys.seal()
        vault = VaultClient(VaultSettings(server.address, credentials.role_id, credentials.secret_id))
        with pytest.raises(VaultUnavailable) as caught:
            vault.login()
        assert "sealed" in str(caught.value)
    finally:
        server.stop()


def test_wrapped_secret_id_unwrapped_once(admin, openbao_server, runner):
    from warden.credentials import vault as vault_module

    wrapped = admin.auth.approle.generate_secret_id("warden", wrap_ttl="60s")["wrap_info"]["token"]
    settings = VaultSettings(
        openbao_server.address, runner.role_id, SecretStr(""), wrapped_secret_id=SecretStr(wrapped)
    )
    first = VaultClient(settings)
    first.login()
    first.logout()

    # A second client in the same process reuses the unwrapped secret id.
    second = VaultClient(settings)
    second.login()
    second.logout()

    # Another process would have to unwrap again, and the wrapping token works once only.
    vault_module._unwrapped_secret_ids.clear()
    with pytest.raises(TokenUnwrapFailed) as caught:
        VaultClient(settings).login()
    assert "WARDEN_VAULT_SECRET_ID_WRAPPED" in str(caught.value)
    assert "already used" in str(caught.value)


def test_oauth_actions_touch_only_the_grant(admin, vault):
    paths = new_account(admin, oauth=True)
    store_oauth_grant(admin, paths, client_secret=SecretStr("client-secret-of-the-test"))

    probe = vault.unwrap(vault.issue(paths, Action.GRANT_PROBE, ttl_seconds=30))
    fields, version = vault.read_oauth_grant(probe, paths)
    assert fields["client_secret"] == "client-secret-of-the-test" and version == 1
    with pytest.raises(VaultDenied):
        vault.write_oauth_grant(probe, paths, fields, cas=version)
    with pytest.raises(VaultDenied):
        vault.read_login_secret(probe, paths)

    fetch = vault.unwrap(vault.issue(paths, Action.API_FETCH, ttl_seconds=30))
    with pytest.raises(VaultDenied):
        vault.decrypt(fetch, paths, "vault:v1:AAAA")
    assert vault.write_oauth_grant(fetch, paths, {**fields, "generation": "1"}, cas=version) == 2


def test_grant_write_is_check_and_set(admin, vault):
    paths = new_account(admin, oauth=True)
    store_oauth_grant(admin, paths, client_secret=SecretStr("client-secret-of-the-test"))
    token = vault.unwrap(vault.issue(paths, Action.GRANT_REFRESH, ttl_seconds=30))
    fields, version = vault.read_oauth_grant(token, paths)

    vault.write_oauth_grant(token, paths, {**fields, "lease_holder": "first"}, cas=version)
    with pytest.raises(WriteConflict):
        vault.write_oauth_grant(token, paths, {**fields, "lease_holder": "second"}, cas=version)
    assert vault.read_oauth_grant(token, paths)[0]["lease_holder"] == "first"


def test_accounts_without_oauth_have_no_grant_policies(admin):
    paths = new_account(admin)
    assert f"warden-acct-{paths.account}-grant-probe" not in admin.sys.list_policies()["data"]["policies"]
