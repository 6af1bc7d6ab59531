"""The document store: idempotent writes, deduplication, cursors that only move forward."""

from datetime import UTC, datetime

import pytest

from warden.errors import ConfigError
from warden.store import AttachmentRecord, DocumentStore, MessageRecord, schema


@pytest.fixture
def store(tmp_path):
    documents = DocumentStore(f"sqlite:///{tmp_path / 'store.db'}")
    yield documents
    documents.close()


def message(uid: int, *attachments: bytes, mailbox: str = "INBOX") -> MessageRecord:
    return MessageRecord(
        mailbox=mailbox,
        uidvalidity=0,
        uid=uid,
        raw=f"Subject: {uid}\r\n\r\nbody".encode(),
        message_id=f"<{uid}@example.org>",
        subject=str(uid),
        sender="a@example.org",
        sent_at=None,
        body_text="body",
        attachments=[
            AttachmentRecord(part_index=index, filename=f"f{index}.bin", declared_type="application/pdf", data=data)
            for index, data in enumerate(attachments)
        ],
    )


def test_saving_twice_keeps_one_row(store):
    assert store.save_message("alice", message(1, b"one"))
    assert not store.save_message("alice", message(1, b"one"))
    assert store.message_count("alice") == 1
    assert len(store.attachments_for("alice")) == 1


def test_same_content_stored_once(store):
    store.save_message("alice", message(1, b"shared bytes"))
    store.save_message("bob", message(5, b"shared bytes"))
    with store._engine.connect() as connection:
        blob_count = connection.execute(schema.blobs.select().where(schema.blobs.c.data == b"shared bytes")).all()
    assert len(blob_count) == 1
    assert len(store.attachments_for("alice")) == 1
    assert len(store.attachments_for("bob")) == 1


def test_cursor_moves_only_forward(store):
    store.save_message("alice", message(5))
    store.save_message("alice", message(3))
    assert store.cursor("alice", "INBOX") == (0, 5)
    assert store.cursor("alice", "Archive") is None


def test_pending_until_recorded(store):
    store.save_message("alice", message(1, b"a", b"b"))
    pending = store.pending_attachments("alice")
    assert [item.part_index for item in pending] == [0, 1]
    assert pending[0].data == b"a"

    store.record_extraction(pending[0].id, status="ok", mime_type="text/plain", text="a", error=None, details={})
    assert [item.part_index for item in store.pending_attachments("alice")] == [1]
    assert store.pending_counts() == {"alice": 1}


def test_session_versions_pruned(store):
    now = datetime.now(UTC)
    for index in range(8):
        version = store.save_session(
            "alice", f"vault:v1:{index}", captured_at=now, last_valid_at=now, expires_at=None, forecast_source=None
        )
    assert version == 8
    latest = store.latest_session("alice")
    assert latest.ciphertext == "vault:v1:7"
    assert latest.captured_at.tzinfo is not None
    with store._engine.connect() as connection:
        kept = connection.execute(schema.sessions.select()).all()
    assert [row.version for row in kept] == [4, 5, 6, 7, 8]


def test_unwritable_location_names_the_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as caught:
        DocumentStore(f"sqlite:///{blocker / 'sub' / 'store.db'}")
    assert "WARDEN_STORE_URL" in str(caught.value)
    assert str(blocker) in str(caught.value)


@pytest.mark.parametrize("url", ["mysql://user:secret@127.0.0.1:1/warden", "mssql+pyodbc://127.0.0.1/warden"])
def test_unsupported_database_names_choices(url):
    with pytest.raises(ConfigError) as caught:
        DocumentStore(url)

    assert "supports SQLite and PostgreSQL" in str(caught.value)
    assert "WARDEN_STORE_URL" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_missing_sqlite_directory_not_created(tmp_path):
    missing = tmp_path / "typo" / "store.db"

    with pytest.raises(ConfigError, match="does not exist") as caught:
        DocumentStore(f"sqlite:///{missing}")

    assert str(missing.parent) in str(caught.value)
    assert not missing.parent.exists()


def test_relative_sqlite_path_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigError, match="is relative") as caught:
        DocumentStore("sqlite:///store.db")

    assert f"sqlite:///{tmp_path / 'store.db'}" in str(caught.value)
    assert not (tmp_path / "store.db").exists()


def test_default_store_creates_home(tmp_path, monkeypatch):
    from warden.settings import get_settings
    from warden.store import default_document_store

    home = tmp_path / "new-home"
    monkeypatch.setenv("WARDEN_HOME", str(home))
    monkeypatch.delenv("WARDEN_STORE_URL", raising=False)
    get_settings.cache_clear()
    try:
        store = default_document_store()
    finally:
        get_settings.cache_clear()

    assert store.message_count("nobody") == 0
    assert (home / "warden.db").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_rejected(url):
    with pytest.raises(ConfigError, match="cannot be an in-memory SQLite database") as caught:
        DocumentStore(url)

    assert "WARDEN_STORE_URL" in str(caught.value)


def test_missing_table_is_config_error(tmp_path):
    from sqlalchemy import text

    store = DocumentStore(f"sqlite:///{tmp_path / 'store.db'}")
    with store._engine.begin() as connection:
        connection.execute(text("DROP TABLE runs"))

    with pytest.raises(ConfigError, match="lacks part of its schema: no such table: runs") as caught:
        store.start_run("alice", None)

    assert "Restore a backup" in str(caught.value)
    store.close()
