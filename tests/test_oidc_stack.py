"""The stack's OAuth 2.0 / OIDC provider and Dovecot's XOAUTH2 and OAUTHBEARER logins, against the real servers."""

from __future__ import annotations

import base64
import hashlib
import imaplib
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from stack.mail import MailServer
from stack.oidc import OidcClient, OidcLoginError, OidcProvider
from stack.ports import free_port
from stack.process import is_alive, process_tree

pytestmark = [pytest.mark.stack, pytest.mark.oauth]

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
FULL_SCOPE = "openid offline_access mail.read"
AddUser = Callable[[str, str], None]


@pytest.fixture
def add_mail_user(mail_server: MailServer, oidc_provider: OidcProvider) -> AddUser:
    """Add a user with the same password to the mail server and the provider."""

    def add(name: str, password: str) -> None:
        mail_server.add_user(name, password)
        oidc_provider.add_user(name, password)

    return add


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A fresh directory (mode 0755) that the mail server's daemon users can reach."""
    path = Path(tempfile.mkdtemp(prefix="warden-oidc-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def basic_auth(client: OidcClient) -> tuple[str, str]:
    return client.client_id, client.client_secret.get_secret_value()


def pkce_pair() -> tuple[str, str]:
    """Return a PKCE code verifier and its S256 code challenge."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=")
    return verifier, challenge.decode("ascii")


def authorization_url(provider: OidcProvider, redirect_uri: str, state: str, challenge: str, scope: str) -> str:
    # offline_access needs prompt=consent, else the provider drops it (OpenID Connect Core 1.0, section 11).
    query = {
        "client_id": "warden",
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "prompt": "consent",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return f"{provider.authorization_endpoint}?{urlencode(query)}"


def log_in(provider: OidcProvider, user: str, password: str, scope: str = FULL_SCOPE) -> dict[str, Any]:
    """Run the authorization code flow with PKCE for the client ``warden`` and return the token response."""
    redirect_uri = "http://127.0.0.1:48213/callback"
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(8)

    final_url = provider.complete_login(
        authorization_url(provider, redirect_uri, state, challenge, scope), user, password
    )

    query = parse_qs(urlsplit(final_url).query)
    assert final_url.startswith(redirect_uri + "?")
    assert query["state"] == [state]
    response = httpx.post(
        provider.token_endpoint,
        auth=basic_auth(provider.clients()["warden"]),
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return response.json()


def refresh(provider: OidcProvider, refresh_token: str) -> httpx.Response:
    return httpx.post(
        provider.token_endpoint,
        auth=basic_auth(provider.clients()["warden"]),
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        trust_env=False,
    )


def introspect(provider: OidcProvider, token: str) -> dict[str, Any]:
    """Introspect ``token`` as Dovecot does: POST with the ``dovecot`` client's credentials."""
    response = httpx.post(
        provider.introspection_endpoint,
        auth=basic_auth(provider.clients()["dovecot"]),
        data={"token": token},
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return response.json()


def sasl_message(mechanism: str, user: str, token: str, port: int) -> bytes:
    if mechanism == "XOAUTH2":
        return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    return f"n,a={user},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


def imap_authenticate(server: MailServer, mechanism: str, user: str, token: str) -> tuple[str, list[bytes]]:
    """AUTHENTICATE with a bearer token, then EXAMINE INBOX; return the outcome and the server's challenges.

    The outcome is "OK" when both succeeded, or the server's error message. After a
    failed token Dovecot sends an error challenge, and the client must respond with
    an empty line for XOAUTH2 or with ``\\x01`` for OAUTHBEARER (RFC 7628).
    """
    challenges: list[bytes] = []
    failure_answer = b"" if mechanism == "XOAUTH2" else b"\x01"

    def respond(challenge: bytes) -> bytes:
        challenges.append(challenge)
        return sasl_message(mechanism, user, token, server.imap_port) if len(challenges) == 1 else failure_answer

    with imaplib.IMAP4(server.imap_host, server.imap_port, timeout=10) as client:
        try:
            client.authenticate(mechanism, respond)
        except imaplib.IMAP4.error as exc:
            return str(exc), challenges
        status, _ = client.select("INBOX", readonly=True)
        client.logout()
    return status, challenges


# Provider


def test_discovery_matches_endpoints(oidc_provider: OidcProvider) -> None:
    document = httpx.get(oidc_provider.discovery_url, trust_env=False).json()

    assert document["issuer"] == oidc_provider.issuer
    assert document["authorization_endpoint"] == oidc_provider.authorization_endpoint
    assert document["token_endpoint"] == oidc_provider.token_endpoint
    assert document["introspection_endpoint"] == oidc_provider.introspection_endpoint
    assert document["revocation_endpoint"] == oidc_provider.revocation_endpoint
    assert document["jwks_uri"] == oidc_provider.jwks_uri
    assert {"openid", "offline_access", "mail.read"} <= set(document["scopes_supported"])
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(document["grant_types_supported"])
    assert "S256" in document["code_challenge_methods_supported"]


def test_clients_have_fixed_ids(oidc_provider: OidcProvider) -> None:
    clients = oidc_provider.clients()

    assert set(clients) == {"warden", "warden-service", "dovecot", "mail-api"}
    assert clients["warden"].grant_types == ("authorization_code", "refresh_token")
    assert clients["warden-service"].grant_types == ("client_credentials",)
    assert clients["dovecot"].grant_types == ()
    assert stat.S_IMODE(oidc_provider.clients_path.stat().st_mode) == 0o600
    assert "**" in repr(clients["warden"].client_secret)


def test_code_flow_issues_tokens(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("code-flow", "code flow password")

    tokens = log_in(oidc_provider, "code-flow", "code flow password")

    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 300
    assert set(tokens["scope"].split()) == {"openid", "offline_access", "mail.read"}
    assert tokens["access_token"]
    assert tokens["refresh_token"]
    assert tokens["id_token"].count(".") == 2


def test_access_token_introspection(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("introspected", "introspected password")
    tokens = log_in(oidc_provider, "introspected", "introspected password")

    body = introspect(oidc_provider, tokens["access_token"])

    assert body["active"] is True
    assert body["sub"] == "introspected"
    assert body["client_id"] == "warden"
    assert "mail.read" in body["scope"].split()
    assert body["exp"] - body["iat"] == 300
    assert 0 < body["exp"] - time.time() <= 300


def test_introspection_needs_resource_server(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("foreign-token", "foreign password")
    tokens = log_in(oidc_provider, "foreign-token", "foreign password")

    response = httpx.post(
        oidc_provider.introspection_endpoint,
        auth=basic_auth(oidc_provider.clients()["warden-service"]),
        data={"token": tokens["access_token"]},
        trust_env=False,
    )

    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_refresh_rotates_refresh_token(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("rotation", "rotation password")
    first = log_in(oidc_provider, "rotation", "rotation password")

    second = refresh(oidc_provider, first["refresh_token"])
    reused = refresh(oidc_provider, first["refresh_token"])

    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    assert second.json()["access_token"] != first["access_token"]
    assert second.json()["expires_in"] == 300
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"


def test_refresh_token_reuse_revokes_grant(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("reuse", "reuse password")
    first = log_in(oidc_provider, "reuse", "reuse password")
    second = refresh(oidc_provider, first["refresh_token"]).json()

    reused = refresh(oidc_provider, first["refresh_token"])
    newest = refresh(oidc_provider, second["refresh_token"])

    assert reused.json()["error"] == "invalid_grant"
    assert newest.status_code == 400
    assert newest.json()["error"] == "invalid_grant"
    assert introspect(oidc_provider, second["access_token"]) == {"active": False}
    details = [event.get("error_detail") for event in oidc_provider.events() if event["event"] == "grant.error"]
    assert "refresh token already used" in details


def test_client_credentials_for_service(oidc_provider: OidcProvider) -> None:
    response = httpx.post(
        oidc_provider.token_endpoint,
        auth=basic_auth(oidc_provider.clients()["warden-service"]),
        data={"grant_type": "client_credentials", "scope": "mail.read"},
        trust_env=False,
    )

    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["scope"] == "mail.read"
    assert tokens["expires_in"] == 300
    assert "refresh_token" not in tokens
    body = introspect(oidc_provider, tokens["access_token"])
    assert body["active"] is True
    assert body["client_id"] == "warden-service"
    assert "sub" not in body


def test_client_credentials_rejected_for_warden(oidc_provider: OidcProvider) -> None:
    response = httpx.post(
        oidc_provider.token_endpoint,
        auth=basic_auth(oidc_provider.clients()["warden"]),
        data={"grant_type": "client_credentials", "scope": "mail.read"},
        trust_env=False,
    )

    # oidc-provider 9 returns invalid_request here, where RFC 6749 suggests unauthorized_client.
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["error_description"] == "requested grant type is not allowed for this client"


def test_pkce_wrong_verifier_rejected(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("pkce", "pkce password")
    redirect_uri = "http://127.0.0.1:50001/callback"
    _, challenge = pkce_pair()
    final_url = oidc_provider.complete_login(
        authorization_url(oidc_provider, redirect_uri, "s", challenge, FULL_SCOPE), "pkce", "pkce password"
    )
    code = parse_qs(urlsplit(final_url).query)["code"][0]

    response = httpx.post(
        oidc_provider.token_endpoint,
        auth=basic_auth(oidc_provider.clients()["warden"]),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": pkce_pair()[0],
        },
        trust_env=False,
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_complete_login_wrong_password(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("careless", "right password")
    _, challenge = pkce_pair()
    url = authorization_url(oidc_provider, "http://127.0.0.1:50002/callback", "s", challenge, FULL_SCOPE)

    with pytest.raises(OidcLoginError, match="invalid user name or password") as caught:
        oidc_provider.complete_login(url, "careless", "wrong password")

    assert "'careless'" in str(caught.value)
    assert "wrong password" not in str(caught.value)
    failures = [event for event in oidc_provider.events() if event["event"] == "login.failure"]
    assert failures[-1]["username"] == "careless"


def test_complete_login_rejects_foreign_redirect(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("redirected", "redirected password")
    _, challenge = pkce_pair()
    url = authorization_url(oidc_provider, "http://127.0.0.1/unregistered", "s", challenge, FULL_SCOPE)

    with pytest.raises(OidcLoginError, match="redirect_uri"):
        oidc_provider.complete_login(url, "redirected", "redirected password")


def test_add_user_rejects_invalid_name(oidc_provider: OidcProvider) -> None:
    with pytest.raises(ValueError, match="invalid user name"):
        oidc_provider.add_user("../escape", "password")
    with pytest.raises(ValueError, match="must not be empty"):
        oidc_provider.add_user("no-password", "")


def test_users_file_private_without_password(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("hashed", "plain text password")

    text = oidc_provider.users_path.read_text(encoding="utf-8")

    assert stat.S_IMODE(oidc_provider.users_path.stat().st_mode) == 0o600
    assert "plain text password" not in text
    assert json.loads(text)["hashed"]["scheme"] == "scrypt"
    assert "hashed" in oidc_provider.users


# Event log


def test_events_count_token_requests(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("counted", "counted password")
    before = len(oidc_provider.events())
    tokens = log_in(oidc_provider, "counted", "counted password")
    rotated = refresh(oidc_provider, tokens["refresh_token"]).json()
    refresh(oidc_provider, tokens["refresh_token"])

    token_requests = [event for event in oidc_provider.events()[before:] if event["event"] == "token.request"]

    assert [(event["grant_type"], event["status"]) for event in token_requests] == [
        ("authorization_code", 200),
        ("refresh_token", 200),
        ("refresh_token", 400),
    ]
    assert {event["client_id"] for event in token_requests} == {"warden"}
    assert token_requests[-1]["error"] == "invalid_grant"
    assert rotated["refresh_token"]


def test_events_contain_no_secrets(
    oidc_provider: OidcProvider, mail_server: MailServer, add_mail_user: AddUser
) -> None:
    add_mail_user("secretive", "secretive password")
    tokens = log_in(oidc_provider, "secretive", "secretive password")
    rotated = refresh(oidc_provider, tokens["refresh_token"]).json()
    imap_authenticate(mail_server, "XOAUTH2", "secretive", rotated["access_token"])
    httpx.post(
        oidc_provider.revocation_endpoint,
        auth=basic_auth(oidc_provider.clients()["warden"]),
        data={"token": rotated["refresh_token"]},
        trust_env=False,
    )
    secret_values = [
        tokens["access_token"],
        tokens["refresh_token"],
        tokens["id_token"],
        rotated["access_token"],
        rotated["refresh_token"],
        "secretive password",
        *(client.client_secret.get_secret_value() for client in oidc_provider.clients().values()),
    ]

    events_text = oidc_provider.events_path.read_text(encoding="utf-8")
    names = {event["event"] for event in oidc_provider.events()}

    assert {"token.request", "introspection.request", "revocation.request", "refresh_token.consumed"} <= names
    assert stat.S_IMODE(oidc_provider.events_path.stat().st_mode) == 0o600
    for path in (oidc_provider.events_path, oidc_provider.log_path, mail_server.dovecot_log_path):
        text = path.read_text(encoding="utf-8")
        for value in secret_values:
            assert value not in text, f"a secret value is in {path}"
    assert events_text


# Dovecot


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_imap_bearer_login(
    mechanism: str, oidc_provider: OidcProvider, mail_server: MailServer, add_mail_user: AddUser
) -> None:
    user = f"bearer-{mechanism.lower()}"
    add_mail_user(user, "bearer password")
    tokens = log_in(oidc_provider, user, "bearer password")

    outcome, challenges = imap_authenticate(mail_server, mechanism, user, tokens["access_token"])

    assert outcome == "OK"
    assert challenges == [b""]


def test_imap_advertises_bearer_mechanisms(mail_server: MailServer) -> None:
    with imaplib.IMAP4(mail_server.imap_host, mail_server.imap_port, timeout=10) as client:
        capabilities = set(client.capabilities)

    assert {"AUTH=PLAIN", "AUTH=LOGIN", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER"} <= capabilities


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_imap_rejects_revoked_token(
    mechanism: str, oidc_provider: OidcProvider, mail_server: MailServer, add_mail_user: AddUser
) -> None:
    user = f"revoked-{mechanism.lower()}"
    add_mail_user(user, "revoked password")
    access_token = log_in(oidc_provider, user, "revoked password")["access_token"]
    assert imap_authenticate(mail_server, mechanism, user, access_token)[0] == "OK"

    revocation = httpx.post(
        oidc_provider.revocation_endpoint,
        auth=basic_auth(oidc_provider.clients()["warden"]),
        data={"token": access_token, "token_type_hint": "access_token"},
        trust_env=False,
    )
    outcome, challenges = imap_authenticate(mail_server, mechanism, user, access_token)

    assert revocation.status_code == 200
    assert introspect(oidc_provider, access_token) == {"active": False}
    assert "AUTHENTICATIONFAILED" in outcome
    assert len(challenges) == 2
    assert json.loads(challenges[1])["status"] in ("401", "invalid_token")


def test_imap_rejects_token_without_mail_scope(
    oidc_provider: OidcProvider, mail_server: MailServer, add_mail_user: AddUser
) -> None:
    add_mail_user("no-mail-scope", "scope password")
    tokens = log_in(oidc_provider, "no-mail-scope", "scope password", scope="openid offline_access")

    outcome, _ = imap_authenticate(mail_server, "XOAUTH2", "no-mail-scope", tokens["access_token"])

    assert "mail.read" not in tokens["scope"].split()
    assert introspect(oidc_provider, tokens["access_token"])["active"] is True
    assert "AUTHENTICATIONFAILED" in outcome


def test_imap_rejects_other_users_token(
    oidc_provider: OidcProvider, mail_server: MailServer, add_mail_user: AddUser
) -> None:
    add_mail_user("token-owner", "owner password")
    add_mail_user("token-thief", "thief password")
    owner_token = log_in(oidc_provider, "token-owner", "owner password")["access_token"]

    outcome, _ = imap_authenticate(mail_server, "XOAUTH2", "token-thief", owner_token)

    assert "AUTHENTICATIONFAILED" in outcome


def test_imap_rejects_service_token(oidc_provider: OidcProvider, mail_server: MailServer) -> None:
    response = httpx.post(
        oidc_provider.token_endpoint,
        auth=basic_auth(oidc_provider.clients()["warden-service"]),
        data={"grant_type": "client_credentials", "scope": "mail.read"},
        trust_env=False,
    )

    outcome, _ = imap_authenticate(mail_server, "XOAUTH2", "warden-service", response.json()["access_token"])

    # The token is active but has no sub. Dovecot 2.3.19 logs "No username returned"
    # and returns a temporary failure (UNAVAILABLE) instead of AUTHENTICATIONFAILED.
    assert "UNAVAILABLE" in outcome


def test_plain_login_rejects_access_token(
    oidc_provider: OidcProvider, mail_server: MailServer, add_mail_user: AddUser
) -> None:
    add_mail_user("plain-only", "plain password")
    access_token = log_in(oidc_provider, "plain-only", "plain password")["access_token"]

    with (
        imaplib.IMAP4(mail_server.imap_host, mail_server.imap_port, timeout=10) as client,
        pytest.raises(imaplib.IMAP4.error),
    ):
        client.login("plain-only", access_token)
    with imaplib.IMAP4(mail_server.imap_host, mail_server.imap_port, timeout=10) as client:
        status, _ = client.login("plain-only", "plain password")

    assert status == "OK"


def test_dovecot_oauth2_config_private(mail_server: MailServer, oidc_provider: OidcProvider) -> None:
    path = mail_server.dovecot_oauth2_config_path
    secret = oidc_provider.clients()["dovecot"].client_secret.get_secret_value()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.owner() == "dovecot"
    assert f"dovecot:{secret}@127.0.0.1:{oidc_provider.port}" in path.read_text(encoding="utf-8")
    assert secret not in mail_server.dovecot_config_path.read_text(encoding="utf-8")


# Lifecycle


def test_restart_keeps_secrets_and_users(scratch_dir: Path) -> None:
    provider = OidcProvider(scratch_dir / "oidc")
    provider.start()
    try:
        provider.add_user("survivor", "survivor password")
        first_secrets = {name: client.client_secret.get_secret_value() for name, client in provider.clients().items()}
        provider.stop()
        provider.start()
        second_secrets = {name: client.client_secret.get_secret_value() for name, client in provider.clients().items()}
        tokens = log_in(provider, "survivor", "survivor password")
    finally:
        provider.stop()

    assert second_secrets == first_secrets
    assert tokens["access_token"]


def test_stop_leaves_no_process(scratch_dir: Path) -> None:
    provider = OidcProvider(scratch_dir / "oidc")
    provider.start()
    provider.stop()

    provider.start()
    pids = [pid for root in provider.pids for pid in process_tree(root)]
    provider.stop()

    assert pids
    assert [pid for pid in pids if is_alive(pid)] == []


def test_stalled_start_tried_again(scratch_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider that never becomes ready is killed, and a second start serves discovery."""
    from stack import process as process_module

    original = process_module.ForegroundProcess.wait_ready
    stalled: list[int] = []

    def stall_once(self, check, timeout_seconds):
        if not stalled:
            stalled.append(self.popen.pid)
            return original(self, lambda: False, 0.5)
        return original(self, check, timeout_seconds)

    monkeypatch.setattr(process_module.ForegroundProcess, "wait_ready", stall_once)
    provider = OidcProvider(scratch_dir / "oidc")
    provider.start()
    try:
        discovery = httpx.get(f"{provider.issuer}/.well-known/openid-configuration", timeout=10)
    finally:
        provider.stop()

    assert len(stalled) == 1
    assert not is_alive(stalled[0])
    assert discovery.status_code == 200
    assert not provider.is_running()


# python -m stack


def test_cli_up_enables_bearer_login(scratch_dir: Path) -> None:
    stack_dir = scratch_dir / "stack"
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    # An external Prefect API, so `up` starts no Prefect server.
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stack", *args, "--dir", str(stack_dir)],
            cwd=REPOSITORY_ROOT,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    up = run("up", "--mail-user", "cli-user", "--mail-password-stdin", stdin="cli password\n")
    try:
        assert up.returncode == 0, up.stderr
        state_text = (stack_dir / "stack.json").read_text(encoding="utf-8")
        state = json.loads(state_text)
        oidc = state["components"]["oidc"]
        mail = state["components"]["mail"]
        provider = OidcProvider(Path(oidc["run_dir"]), port=oidc["port"])
        server = MailServer(Path(mail["run_dir"]), imap_port=mail["imap_port"], http_port=mail["http_port"])
        tokens = log_in(provider, "cli-user", "cli password")
        outcome, _ = imap_authenticate(server, "OAUTHBEARER", "cli-user", tokens["access_token"])
        second_up = run("up")
        second_oidc = json.loads((stack_dir / "stack.json").read_text(encoding="utf-8"))["components"]["oidc"]
        status = run("status")
    finally:
        down = run("down")

    assert outcome == "OK"
    assert oidc["issuer"] == provider.issuer
    assert oidc["clients_file"] == str(provider.clients_path)
    assert mail["oauth2_introspection_url"] == provider.introspection_endpoint
    assert "OIDC" in up.stdout
    assert second_up.returncode == 0, second_up.stderr
    assert second_oidc["pids"] == oidc["pids"]
    assert second_up.stdout.count("reused") == 3
    assert status.returncode == 0, status.stdout
    for client in provider.clients().values():
        assert client.client_secret.get_secret_value() not in state_text
        assert client.client_secret.get_secret_value() not in up.stdout
    assert down.returncode == 0, down.stderr
    assert [pid for pid in oidc["pids"] if is_alive(pid)] == []


def test_complete_login_provider_unreachable(scratch_dir: Path) -> None:
    provider = OidcProvider(scratch_dir / "never-started", port=free_port())
    url = authorization_url(provider, "http://127.0.0.1/callback", "s", pkce_pair()[1], FULL_SCOPE)

    with pytest.raises(OidcLoginError, match="Check that the provider runs"):
        provider.complete_login(url, "anyone", "password")
    with pytest.raises(ValueError, match="authorization URL"):
        provider.complete_login(provider.token_endpoint, "anyone", "password")


def test_access_token_revocation_keeps_grant(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("keeps-grant", "keeps password")
    tokens = log_in(oidc_provider, "keeps-grant", "keeps password")

    revocation = httpx.post(
        oidc_provider.revocation_endpoint,
        auth=basic_auth(oidc_provider.clients()["warden"]),
        data={"token": tokens["access_token"], "token_type_hint": "access_token"},
        trust_env=False,
    )
    refreshed = refresh(oidc_provider, tokens["refresh_token"])

    assert revocation.status_code == 200
    assert introspect(oidc_provider, tokens["access_token"]) == {"active": False}
    assert refreshed.status_code == 200, refreshed.text
    assert introspect(oidc_provider, refreshed.json()["access_token"])["active"] is True
    revocations = [event for event in oidc_provider.events() if event["event"] == "revocation.request"]
    assert revocations[-1]["token_type"] == "access_token"


def test_refresh_token_revocation_ends_grant(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("ends-grant", "ends password")
    tokens = log_in(oidc_provider, "ends-grant", "ends password")

    revocation = httpx.post(
        oidc_provider.revocation_endpoint,
        auth=basic_auth(oidc_provider.clients()["warden"]),
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        trust_env=False,
    )
    refreshed = refresh(oidc_provider, tokens["refresh_token"])

    assert revocation.status_code == 200
    assert introspect(oidc_provider, tokens["access_token"]) == {"active": False}
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"
    names = [event["event"] for event in oidc_provider.events()]
    assert "grant.revoked" in names


def test_revocation_by_other_client_rejected(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_user("not-yours", "not yours password")
    tokens = log_in(oidc_provider, "not-yours", "not yours password")

    response = httpx.post(
        oidc_provider.revocation_endpoint,
        auth=basic_auth(oidc_provider.clients()["warden-service"]),
        data={"token": tokens["access_token"]},
        trust_env=False,
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert introspect(oidc_provider, tokens["access_token"])["active"] is True


def test_refresh_token_survives_many_tokens(oidc_provider: OidcProvider) -> None:
    # oidc-provider's own memory adapter drops its oldest entries after about 2000
    # writes; with it, this refresh token was "not found" after 2100 other tokens.
    oidc_provider.add_user("long-lived", "long-lived password")
    tokens = log_in(oidc_provider, "long-lived", "long-lived password")

    statuses: set[int] = set()
    with httpx.Client(trust_env=False, auth=basic_auth(oidc_provider.clients()["warden-service"])) as client:
        for _ in range(2100):
            response = client.post(oidc_provider.token_endpoint, data={"grant_type": "client_credentials"})
            statuses.add(response.status_code)
    refreshed = refresh(oidc_provider, tokens["refresh_token"])

    assert statuses == {200}
    assert refreshed.status_code == 200, refreshed.text
