"""The http-api connector against a local document API that checks every bearer token at the real OAuth provider.

Tokens come from oidc-provider's client_credentials grant (client ``warden-service``,
scope ``mail.read``). The API introspects each one as the resource server ``mail-api``,
so a token revoked at the provider is rejected at the next request. The end-to-end
tests run ``connector_sync`` on the real stack (OpenBao, Prefect, the provider).
"""

from __future__ import annotations

import json
import logging
import os
from email import policy
from email.parser import BytesParser

import httpx
import hvac
import pytest
import pytest_asyncio
from pydantic import SecretStr

from stack.testing import worker_environment
from tests.sites.oauth_api import OAuthApiSite, build_api_documents
from warden.accounts import AccessPath, AccountConfig
from warden.connectors.base import ItemRef, ProbeState
from warden.connectors.http import HttpSettings
from warden.connectors.http_api import (
    ITEM_ID_HEADER,
    HttpApiConnector,
    HttpApiOptions,
    item_message_bytes,
    parse_http_api_options,
)
from warden.connectors.mime import message_record_from_raw
from warden.connectors.registry import build_api_connector
from warden.credentials.oauth import OAuthGrantType, OAuthSettings
from warden.errors import AccessTokenRejected, ConfigError, UnexpectedResponse

pytestmark = [pytest.mark.stack, pytest.mark.oauth]

ACCOUNT = "http-api-docs"
COLLECTION = "reports"
DOCUMENTS = build_api_documents()
LIST_PATH = f"/collections/{COLLECTION}/documents"
# Short backoff, so that the retry test does not wait for the production delays.
FAST_RETRIES = HttpSettings(timeout_seconds=10.0, backoff_base_seconds=0.01, backoff_max_seconds=0.05)


def content_path(document_id: int) -> str:
    return f"{LIST_PATH}/{document_id}/content"


def api_options(site: OAuthApiSite, **overrides: object) -> dict:
    options = {
        "base_url": site.origin,
        "probe_path": "/me",
        "list_path": "/collections/{mailbox}/documents",
        "items_field": "items",
        "id_field": "id",
        "after_param": "after_id",
        "next_field": "next",
        "page_size_param": "limit",
        "page_size": 50,
        "download_path": "/collections/{mailbox}/documents/{id}/content",
        "title_field": "title",
        "filename_field": "filename",
        "content_type_field": "content_type",
        "validity_field": "epoch",
    }
    options.update(overrides)
    return options


def connector_for(site: OAuthApiSite, **overrides: object) -> HttpApiConnector:
    options = parse_http_api_options(api_options(site, **overrides), account="docs-unit")
    return HttpApiConnector(options, account="docs-unit", http=FAST_RETRIES)


def service_token(provider) -> SecretStr:
    """Request a client_credentials access token for ``warden-service`` at the provider's token endpoint."""
    client = provider.clients()["warden-service"]
    response = httpx.post(
        provider.token_endpoint,
        data={"grant_type": "client_credentials", "scope": "mail.read"},
        auth=(client.client_id, client.client_secret.get_secret_value()),
        timeout=10.0,
    )
    assert response.status_code == 200, response.json().get("error")
    return SecretStr(response.json()["access_token"])


def revoke(provider, token: SecretStr) -> None:
    """Revoke ``token`` at the provider (RFC 7009) as its client."""
    client = provider.clients()["warden-service"]
    response = httpx.post(
        provider.revocation_endpoint,
        data={"token": token.get_secret_value(), "token_type_hint": "access_token"},
        auth=(client.client_id, client.client_secret.get_secret_value()),
        timeout=10.0,
    )
    assert response.status_code == 200


@pytest.fixture(scope="module")
def api_site(oidc_provider):
    mail_api = oidc_provider.clients()["mail-api"]
    with OAuthApiSite.running(
        oidc_provider.introspection_endpoint, mail_api.client_id, mail_api.client_secret, {COLLECTION: DOCUMENTS}
    ) as site:
        yield site


# -- the connector against the local API --------------------------------------------


async def test_list_and_download_all_pages(api_site, oidc_provider):
    api_site.configure()
    token = service_token(oidc_provider)
    connector = connector_for(api_site)

    async with connector.open(token) as session:
        refs, validity = await session.list_new(COLLECTION, after_uid=0, uidvalidity=0)
        raws = [await session.fetch_raw(ref) for ref in refs]

    assert [ref.uid for ref in refs] == [document.id for document in DOCUMENTS]
    assert validity == 1
    assert all(ref.uidvalidity == 1 for ref in refs)

    counts = api_site.request_counts()
    assert counts["/me"] == 1
    # Five documents, two per page.
    assert counts[LIST_PATH] == 3
    for document in DOCUMENTS:
        assert counts[content_path(document.id)] == 1
    assert session.requests_sent == 1 + 3 + len(DOCUMENTS)

    for ref, raw, document in zip(refs, raws, DOCUMENTS, strict=True):
        record = message_record_from_raw(ref, raw)
        headers = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        assert record.subject == document.title
        assert headers[ITEM_ID_HEADER] == str(document.id)
        assert json.loads(record.body_text) == document.metadata()
        assert len(record.attachments) == 1
        attachment = record.attachments[0]
        assert attachment.filename == document.filename
        assert attachment.declared_type == document.content_type
        assert attachment.data == document.data
        assert attachment.error is None


async def test_requests_get_only_token_in_header(api_site, oidc_provider, caplog):
    caplog.set_level(logging.DEBUG)
    api_site.configure()
    token = service_token(oidc_provider)

    async with connector_for(api_site).open(token) as session:
        refs, _ = await session.list_new(COLLECTION, after_uid=0, uidvalidity=0)
        await session.fetch_raw(refs[0])

    lines = api_site.request_lines
    assert lines
    assert all(line.startswith("GET ") for line in lines)
    assert not any(token.get_secret_value() in line for line in lines)
    # Every request was authenticated at the provider, the probe included.
    assert api_site.introspections == len(lines)
    assert caplog.records
    assert token.get_secret_value() not in caplog.text


async def test_link_header_pagination(api_site, oidc_provider):
    api_site.configure(pagination="link")
    token = service_token(oidc_provider)

    async with connector_for(api_site, next_field=None).open(token) as session:
        refs, _ = await session.list_new(COLLECTION, after_uid=0, uidvalidity=0)

    assert [ref.uid for ref in refs] == [document.id for document in DOCUMENTS]
    assert api_site.request_counts()[LIST_PATH] == 3


async def test_rerun_after_id_fetches_nothing(api_site, oidc_provider):
    api_site.configure()
    token = service_token(oidc_provider)
    last_id = DOCUMENTS[-1].id

    async with connector_for(api_site).open(token) as session:
        refs, validity = await session.list_new(COLLECTION, after_uid=last_id, uidvalidity=1)

    assert refs == []
    assert validity == 1
    assert session.requests_sent <= 2
    counts = api_site.request_counts()
    assert counts[LIST_PATH] == 1
    assert not any("/content" in path for path in counts)
    assert f"after_id={last_id}" in api_site.request_lines[-1]


async def test_collection_list_is_cached_between_sessions(api_site, oidc_provider):
    """Capability discovery: the collection list is fetched once, then served from the cache or by 304."""
    from warden.connectors.http_api import METADATA_CACHE

    api_site.configure()
    token = service_token(oidc_provider)
    connector = connector_for(api_site, collections_path="/collections")
    METADATA_CACHE.invalidate("docs-unit")

    for _ in range(3):
        async with connector.open(token) as session:
            await session.list_new(COLLECTION, after_uid=DOCUMENTS[-1].id, uidvalidity=1)
    assert api_site.request_counts()["/collections"] == 1

    async with connector.open(token) as session:
        with pytest.raises(ConfigError, match="'nosuch'.*does not offer"):
            await session.list_new("nosuch", after_uid=0, uidvalidity=0)
    assert api_site.request_counts()["/collections"] == 1


async def test_after_id_lists_only_newer_items(api_site, oidc_provider):
    api_site.configure()
    token = service_token(oidc_provider)

    async with connector_for(api_site).open(token) as session:
        refs, _ = await session.list_new(COLLECTION, after_uid=DOCUMENTS[2].id, uidvalidity=1)

    assert [ref.uid for ref in refs] == [DOCUMENTS[3].id, DOCUMENTS[4].id]
    assert api_site.request_counts()[LIST_PATH] == 1


async def test_changed_epoch_lists_everything_again(api_site, oidc_provider):
    api_site.configure(epoch=2)
    token = service_token(oidc_provider)

    async with connector_for(api_site).open(token) as session:
        refs, validity = await session.list_new(COLLECTION, after_uid=DOCUMENTS[-1].id, uidvalidity=1)

    assert validity == 2
    assert [ref.uid for ref in refs] == [document.id for document in DOCUMENTS]
    assert all(ref.uidvalidity == 2 for ref in refs)
    # One incremental page that revealed the new epoch, then the full listing of three pages.
    assert api_site.request_counts()[LIST_PATH] == 4


async def test_revoked_token_rejected_by_probe(api_site, oidc_provider):
    api_site.configure()
    token = service_token(oidc_provider)
    revoke(oidc_provider, token)

    with pytest.raises(AccessTokenRejected, match="rejected the OAuth access token") as caught:
        async with connector_for(api_site).open(token):
            pass
    assert api_site.request_counts() == {"/me": 1}
    assert token.get_secret_value() not in str(caught.value)


async def test_revoked_token_rejected_without_probe(api_site, oidc_provider):
    api_site.configure()
    token = service_token(oidc_provider)
    revoke(oidc_provider, token)

    async with connector_for(api_site, probe_path=None).open(token) as session:
        with pytest.raises(AccessTokenRejected, match="invalid_token"):
            await session.list_new(COLLECTION, after_uid=0, uidvalidity=0)
    assert api_site.request_counts() == {LIST_PATH: 1}


async def test_probe_reports_valid_and_expired(api_site, oidc_provider):
    api_site.configure()
    token = service_token(oidc_provider)
    connector = connector_for(api_site)

    valid = await connector.probe(token)
    revoke(oidc_provider, token)
    expired = await connector.probe(token)

    assert valid.state == ProbeState.VALID
    assert expired.state == ProbeState.EXPIRED
    assert token.get_secret_value() not in expired.reason


async def test_missing_scope_names_the_scope(api_site, oidc_provider):
    api_site.configure(required_scope="documents.read")
    token = service_token(oidc_provider)

    with pytest.raises(ConfigError, match="'documents.read'") as caught:
        async with connector_for(api_site).open(token):
            pass
    assert "insufficient_scope" in str(caught.value)


@pytest.mark.parametrize(("pagination", "overrides"), [("body", {}), ("link", {"next_field": None})])
async def test_next_link_to_other_host_rejected(api_site, oidc_provider, pagination, overrides):
    # 127.0.0.2 is loopback, but another host: nothing listens there and nothing is sent there.
    api_site.configure(pagination=pagination, next_host="127.0.0.2")
    token = service_token(oidc_provider)

    async with connector_for(api_site, **overrides).open(token) as session:
        with pytest.raises(ConfigError, match="127.0.0.2.*another host"):
            await session.list_new(COLLECTION, after_uid=0, uidvalidity=0)

    assert api_site.request_counts() == {"/me": 1, LIST_PATH: 1}


async def test_429_and_503_are_retried(api_site, oidc_provider):
    api_site.configure(fail_statuses=(429, 503))
    token = service_token(oidc_provider)

    async with connector_for(api_site).open(token) as session:
        refs, _ = await session.list_new(COLLECTION, after_uid=0, uidvalidity=0)

    assert len(refs) == len(DOCUMENTS)
    # The API returned 429, then 503, then accepted the probe.
    assert api_site.request_counts()["/me"] == 3


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"items_field": "documents"}, "items_field"),
        ({"id_field": "uuid"}, "id_field"),
        ({"validity_field": "generation"}, "validity_field"),
    ],
)
async def test_wrong_item_fields_are_config_errors(api_site, oidc_provider, overrides, field):
    api_site.configure()
    token = service_token(oidc_provider)

    async with connector_for(api_site, **overrides).open(token) as session:
        with pytest.raises(ConfigError, match=field):
            await session.list_new(COLLECTION, after_uid=0, uidvalidity=0)


async def test_unknown_collection_is_config_error(api_site, oidc_provider):
    api_site.configure()
    token = service_token(oidc_provider)

    async with connector_for(api_site).open(token) as session:
        with pytest.raises(ConfigError, match="HTTP 404.*list_path"):
            await session.list_new("no-such-collection", after_uid=0, uidvalidity=0)


async def test_missing_item_is_unexpected_response(api_site, oidc_provider):
    api_site.configure()
    token = service_token(oidc_provider)

    async with connector_for(api_site).open(token) as session:
        with pytest.raises(UnexpectedResponse, match="HTTP 404.*deleted"):
            await session.fetch_raw(ItemRef(mailbox=COLLECTION, uid=999))


# -- options and messages, without a server -------------------------------------------

MISSING = object()
VALID_OPTIONS = {
    "base_url": "https://api.example.com/v1",
    "list_path": "/documents",
    "download_path": "/documents/{id}/content",
}


@pytest.mark.parametrize(
    ("overrides", "field", "detail"),
    [
        ({"list_path": MISSING}, "list_path", "Field required"),
        ({"download_path": "/documents/content"}, "download_path", "must contain {id}"),
        ({"download_path": "/documents/{name}"}, "download_path", "unknown placeholder"),
        ({"list_path": "https://elsewhere.example/documents"}, "list_path", "not a URL"),
        ({"probe_path": "me"}, "probe_path", "starting with a single '/'"),
        ({"base_url": "http://api.example.com"}, "base_url", "use https"),
        ({"base_url": "ftp://api.example.com"}, "base_url", "http or https"),
        ({"base_url": "https://user:secret@api.example.com"}, "base_url", "user info"),
        ({"page_size": 0}, "page_size", "greater than or equal to 1"),
        ({"cursor_param": "cursor"}, "cursor_param", "without next_field"),
        ({"page_sise": 10}, "page_sise", "Extra inputs are not permitted"),
    ],
)
def test_invalid_options_name_the_field(overrides, field, detail):
    options = {**VALID_OPTIONS, **overrides}
    options = {key: value for key, value in options.items() if value is not MISSING}

    with pytest.raises(ConfigError) as caught:
        parse_http_api_options(options, account="docs-unit")

    message = str(caught.value)
    assert "Account 'docs-unit'" in message
    assert field in message
    assert detail in message


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:8080", "http://127.9.9.9", "http://[::1]:8080", "http://localhost"]
)
def test_plain_http_accepted_on_loopback(base_url):
    options = parse_http_api_options({**VALID_OPTIONS, "base_url": base_url}, account="docs-unit")

    assert options.base_url == base_url


def test_registry_builds_http_api_connector():
    config = AccountConfig(
        name="docs-registry",
        base_url="https://api.example.com/",
        username="warden-service",
        login_secret_path="connectors/docs-registry",
        session_key="session-docs-registry",
        access_paths=[AccessPath.OAUTH],
        oauth=OAuthSettings(client_id="warden-service", token_url="https://id.example.com/token"),
        api_connector="http-api",
        api_options=VALID_OPTIONS,
    )

    connector = build_api_connector(config)

    assert isinstance(connector, HttpApiConnector)
    assert connector.kind == "http-api"
    assert connector.site == "api.example.com"
    with pytest.raises(ConfigError, match="Account 'docs-registry'.*download_path"):
        build_api_connector(config.model_copy(update={"api_options": {**VALID_OPTIONS, "download_path": "/x"}}))


def test_item_message_reproducible_and_safe():
    options = HttpApiOptions.model_validate(VALID_OPTIONS)
    ref = ItemRef(mailbox=COLLECTION, uid=7)
    metadata = {"id": 7, "title": "Line one\r\nBcc: someone@example.com", "filename": "../../etc/passwd"}

    first = item_message_bytes(ref, metadata, b"%PDF-1.4 data", options=options, response_type="application/pdf")
    second = item_message_bytes(ref, metadata, b"%PDF-1.4 data", options=options, response_type="application/pdf")
    record = message_record_from_raw(ref, first)
    headers = BytesParser(policy=policy.default).parsebytes(first, headersonly=True)

    assert first == second
    assert record.subject == "Line one Bcc: someone@example.com"
    assert headers["Bcc"] is None
    assert record.attachments[0].filename == "passwd"
    assert record.attachments[0].declared_type == "application/pdf"
    assert record.attachments[0].data == b"%PDF-1.4 data"


# -- end to end: connector_sync on the oauth access path --------------------------------


@pytest.fixture(scope="module")
def sync_env(openbao_server, oidc_provider, prefect_server, tmp_path_factory):
    with worker_environment(tmp_path_factory.mktemp("warden-home-http-api")) as home:
        yield home


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def registered(sync_env, openbao_server, oidc_provider, api_site):
    from flows.registration import register_account, set_up_vault

    admin = hvac.Client(url=openbao_server.address, token=openbao_server.root_token.get_secret_value())
    runner = await set_up_vault(admin)
    os.environ["WARDEN_VAULT_SECRET_ID"] = runner.secret_id.get_secret_value()

    oauth = OAuthSettings(
        client_id="warden-service",
        grant_type=OAuthGrantType.CLIENT_CREDENTIALS,
        token_url=oidc_provider.token_endpoint,
        revocation_url=oidc_provider.revocation_endpoint,
        introspection_url=oidc_provider.introspection_endpoint,
        scope="mail.read",
    )
    await register_account(
        ACCOUNT,
        admin=admin,
        base_url=api_site.origin,
        username="warden-service",
        password=None,
        oauth_client_secret=oidc_provider.clients()["warden-service"].client_secret,
        access_paths=["oauth"],
        oauth=oauth.model_dump(mode="json"),
        api_connector="http-api",
        api_options=api_options(api_site),
        mailboxes=[COLLECTION],
    )
    return admin


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def first_sync(registered, api_site, oidc_provider):
    from flows.sync import connector_sync

    api_site.configure()
    events_before = len(oidc_provider.events())
    summary = await connector_sync(ACCOUNT)
    return summary, api_site.request_counts(), api_site.request_lines, oidc_provider.events()[events_before:]


async def test_sync_reads_api_on_oauth_path(first_sync):
    summary, counts, lines, _ = first_sync

    assert summary.access_path == AccessPath.OAUTH.value
    assert summary.probe == "expired"
    assert summary.refreshed is True
    assert summary.browser_launches == 0
    assert summary.messages_seen == len(DOCUMENTS)
    assert summary.attachments_fetched == len(DOCUMENTS)
    assert counts["/me"] == 1
    assert counts[LIST_PATH] == 3
    assert all(line.startswith("GET ") for line in lines)


async def test_sync_extracts_downloaded_files(first_sync):
    from warden.store import default_document_store

    summary, _, _, _ = first_sync
    attachments = {row["filename"]: row for row in default_document_store().attachments_for(ACCOUNT)}

    assert summary.attachments_extracted == len(DOCUMENTS)
    assert summary.failed == 0
    assert sorted(attachments) == sorted(document.filename for document in DOCUMENTS)
    assert "ZEPHYR-4471" in attachments["quarterly-report.pdf"]["text"]
    assert "CORMORANT-8812" in attachments["meeting-notes.txt"]["text"]
    assert attachments["budget.xlsx"]["subject"] == "Department budget"


async def test_sync_revokes_access_token(first_sync):
    summary, _, _, events = first_sync
    issued = [
        event
        for event in events
        if event.get("event") == "token.request" and event.get("grant_type") == "client_credentials"
    ]
    revocations = [event for event in events if event.get("event") == "revocation.request"]

    assert [event["status"] for event in issued] == [200]
    assert [(event["client_id"], event["status"]) for event in revocations] == [("warden-service", 200)]
    # The vault tokens plus the provider's access token, each proven revoked.
    assert summary.tokens_revoked == summary.tokens_issued + 1


async def test_second_sync_finds_nothing_new(first_sync, api_site):
    from flows.sync import connector_sync

    api_site.configure()
    summary = await connector_sync(ACCOUNT)
    counts = api_site.request_counts()

    assert summary.access_path == AccessPath.OAUTH.value
    assert summary.messages_seen == 0
    assert summary.attachments_fetched == 0
    assert summary.tokens_revoked == summary.tokens_issued + 1
    assert counts[LIST_PATH] == 1
    assert not any("/content" in path for path in counts)
