"""The document store on SQLite and on PostgreSQL: migrations, concurrent writers, cursors, sessions, runs.

Every test runs once per database. The PostgreSQL runs use a new database of
the ``postgres_server`` fixture each, so no test reads another's rows.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, inspect, select, text

from warden.credentials.tokens import IssuedToken
from warden.errors import ConfigError
from warden.store import DocumentStore, MessageRecord, migrations

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

_database_numbers = itertools.count(1)

# Run by each writer process: open the store at START_AT, save the same messages, print how many were new.
WRITER = textwrap.dedent(
    """
    import json, sys, time
    from warden.store import DocumentStore, MessageRecord

    url, account, message_count, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    time.sleep(max(0.0, start_at - time.time()))
    store = DocumentStore(url)
    created = 0
    for uid in range(1, message_count + 1):
        message = MessageRecord(
            mailbox="INBOX", uidvalidity=7, uid=uid, raw=b"Subject: %d\\r\\n\\r\\nbody" % uid,
            message_id=None, subject=str(uid), sender=None, sent_at=None, body_text="body")
        created += store.save_message(account, message)
    print(json.dumps({"created": created}))
    """
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    postgres_server = request.getfixturevalue("postgres_server")
    name = f"store_{next(_database_numbers)}"
    postgres_server.create_database(name)
    return postgres_server.sync_database_url(name)


@pytest.fixture
def store(store_url):
    documents = DocumentStore(store_url)
    yield documents
    documents.close()


def message(uid: int, mailbox: str = "INBOX", uidvalidity: int = 7) -> MessageRecord:
    return MessageRecord(
        mailbox=mailbox,
        uidvalidity=uidvalidity,
        uid=uid,
        raw=f"Subject: {uid}\r\n\r\nbody".encode(),
        message_id=f"<{uid}@example.org>",
        subject=str(uid),
        sender="a@example.org",
        sent_at=None,
        body_text="body",
    )


def recorded_versions(url: str) -> list[int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(migrations.schema_version.c.version)).scalars())
    finally:
        engine.dispose()


def start_writers(url: str, count: int, message_count: int) -> list[subprocess.Popen]:
    # Importing SQLAlchemy and the store takes about a second, so every writer waits for the same start time.
    start_at = time.time() + 3.0
    return [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, "alice", str(message_count), str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def writer_results(writers: list[subprocess.Popen]) -> list[int]:
    results = []
    for writer in writers:
        stdout, stderr = writer.communicate(timeout=120)
        assert writer.returncode == 0, stderr
        results.append(json.loads(stdout)["created"])
    return results


# -- migrations ------------------------------------------------------------------


def test_new_store_records_every_migration(store, store_url):
    assert recorded_versions(store_url) == [migration.version for migration in migrations.MIGRATIONS]


def test_reopening_applies_nothing(store, store_url):
    engine = create_engine(store_url)
    try:
        assert migrations.migrate(engine) == []
    finally:
        engine.dispose()
    assert recorded_versions(store_url) == [migration.version for migration in migrations.MIGRATIONS]


def test_newer_schema_version_rejected(store, store_url):
    engine = create_engine(store_url)
    with engine.begin() as connection:
        connection.execute(
            migrations.schema_version.insert().values(
                version=migrations.latest_version() + 1, name="from the future", applied_at=datetime.now(UTC)
            )
        )
    engine.dispose()
    with pytest.raises(ConfigError, match="schema version"):
        DocumentStore(store_url)


def test_two_processes_migrate_new_store(store_url):
    # Both writers open a store that does not exist yet at the same moment.
    results = writer_results(start_writers(store_url, count=2, message_count=1))
    assert sorted(results) == [0, 1]
    assert recorded_versions(store_url) == [migration.version for migration in migrations.MIGRATIONS]


def test_version_two_store_gets_journal(store, store_url):
    store.close()
    engine = create_engine(store_url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE issued_tokens"))
        connection.execute(text("DELETE FROM schema_version WHERE version = 3"))
    engine.dispose()

    reopened = DocumentStore(store_url)
    try:
        assert inspect(reopened._engine).has_table("issued_tokens")
    finally:
        reopened.close()
    assert recorded_versions(store_url) == [migration.version for migration in migrations.MIGRATIONS]


def test_store_of_earlier_release_upgraded(tmp_path):
    """A SQLite store created before versioned migrations: no schema_version, sessions without two columns."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE sessions (account VARCHAR(200) NOT NULL, version INTEGER NOT NULL, "
                "ciphertext TEXT NOT NULL, captured_at DATETIME NOT NULL, saved_at DATETIME NOT NULL, "
                "last_valid_at DATETIME, expires_at DATETIME, forecast_source VARCHAR(20), "
                "PRIMARY KEY (account, version))"
            )
        )
        connection.execute(
            text(
                "INSERT INTO sessions VALUES ('alice', 3, 'vault:v1:abc', '2026-01-01 00:00:00', "
                "'2026-01-01 00:00:00', NULL, NULL, NULL)"
            )
        )
    engine.dispose()

    store = DocumentStore(url)
    try:
        session = store.latest_session("alice")
        assert session is not None
        assert session.version == 3
        assert session.source is None
        assert session.rejected_at is None
        assert (
            store.save_session(
                "alice",
                "vault:v1:def",
                captured_at=datetime.now(UTC),
                last_valid_at=None,
                expires_at=None,
                forecast_source=None,
                source="import",
            )
            == 4
        )
        columns = {column["name"] for column in inspect(store._engine).get_columns("sessions")}
        assert {"source", "rejected_at"} <= columns
        assert inspect(store._engine).has_table("messages")
    finally:
        store.close()
    assert recorded_versions(url) == [migration.version for migration in migrations.MIGRATIONS]


# -- behaviour on both databases ---------------------------------------------------


def test_concurrent_writers_save_each_message_once(store, store_url):
    message_count = 40
    results = writer_results(start_writers(store_url, count=2, message_count=message_count))
    assert sum(results) == message_count
    assert store.message_count("alice") == message_count
    assert store.cursor("alice", "INBOX") == (7, message_count)


def test_cursor_moves_forward_only(store):
    assert store.cursor("alice", "INBOX") is None
    store.save_message("alice", message(5))
    store.save_message("alice", message(3))
    assert store.cursor("alice", "INBOX") == (7, 5)
    # A new UIDVALIDITY restarts the mailbox, so the cursor follows it even to a lower UID.
    store.save_message("alice", message(2, uidvalidity=8))
    assert store.cursor("alice", "INBOX") == (8, 2)
    assert store.cursor("alice", "Archive") is None


def test_saving_twice_keeps_one_row(store):
    assert store.save_message("alice", message(1))
    assert not store.save_message("alice", message(1))
    assert store.message_count("alice") == 1
    assert store.message_count("alice", "INBOX") == 1


def test_sessions_versioned_and_pruned(store):
    captured_at = datetime.now(UTC)
    expires_at = captured_at + timedelta(minutes=30)
    for index in range(7):
        version = store.save_session(
            "alice",
            f"vault:v1:{index}",
            captured_at=captured_at,
            last_valid_at=captured_at,
            expires_at=expires_at,
            forecast_source="observed",
            source="browser-login",
        )
        assert version == index + 1

    versions = [session.version for session in store.session_versions("alice")]
    assert versions == [7, 6, 5, 4, 3]
    latest = store.latest_session("alice")
    assert latest.ciphertext == "vault:v1:6"
    assert latest.expires_at == expires_at
    assert latest.captured_at.tzinfo is not None

    store.reject_session("alice", 7)
    assert store.latest_session("alice").rejected_at is not None
    assert store.latest_session("bob") is None


def test_runs_recorded_per_account(store):
    first = store.start_run("alice", "flow-run-1")
    store.finish_run(first, state="failed", summary={"error": "timed out"})
    second = store.start_run("alice", "flow-run-2")
    store.finish_run(second, state="completed", summary={"messages_seen": 3})
    other = store.start_run("bob", None)

    runs = store.last_runs()
    assert runs["alice"]["id"] == second
    assert runs["alice"]["state"] == "completed"
    assert runs["alice"]["summary"] == {"messages_seen": 3}
    assert runs["bob"]["id"] == other
    assert runs["bob"]["state"] == "waiting"
    assert store.run_by_flow_run_id("flow-run-1")["summary"] == {"error": "timed out"}
    assert store.run_by_flow_run_id("missing") is None


def test_take_over_abandons_running_runs(store):
    dead = store.start_run("alice", "flow-run-dead")
    assert store.take_over_runs("alice", dead) == []
    store.start_run("alice", "flow-run-waiting")
    other = store.start_run("bob", None)
    store.take_over_runs("bob", other)
    successor = store.start_run("alice", "flow-run-next")

    assert store.take_over_runs("alice", successor) == [dead]

    abandoned = store.run_by_flow_run_id("flow-run-dead")
    assert abandoned["state"] == "abandoned"
    assert abandoned["finished_at"] is not None
    assert f"run {successor} took over" in abandoned["summary"]["error"]
    assert store.run_by_flow_run_id("flow-run-waiting")["state"] == "waiting"
    assert store.run_by_flow_run_id("flow-run-next")["state"] == "running"
    assert store.last_runs()["bob"]["state"] == "running"


def journal_entry(accessor: str, account: str = "alice") -> IssuedToken:
    issued_at = datetime.now(UTC)
    expires_at = issued_at + timedelta(minutes=5)
    return IssuedToken(accessor=accessor, account=account, action="probe", issued_at=issued_at, expires_at=expires_at)


def test_token_journal_lists_unrevoked(store):
    dead = store.start_run("alice", None)
    store.take_over_runs("alice", dead)
    for accessor in ("acc-1", "acc-2"):
        store.record_token(dead, journal_entry(accessor))
    bob_run = store.start_run("bob", None)
    store.record_token(bob_run, journal_entry("acc-bob", account="bob"))
    store.finish_run(bob_run, state="failed", summary={})

    # A running run still owns its tokens: its own wipe revokes them.
    assert store.unrevoked_tokens("alice") == []

    store.take_over_runs("alice", store.start_run("alice", None))
    store.record_revocation("acc-1", datetime.now(UTC))

    left = store.unrevoked_tokens("alice")
    assert [token.accessor for token in left] == ["acc-2"]
    assert left[0].expires_at.tzinfo is not None
    assert [token.accessor for token in store.unrevoked_tokens("bob")] == ["acc-bob"]

    store.record_revocation("acc-2", datetime.now(UTC))
    assert store.unrevoked_tokens("alice") == []


def test_take_over_abandons_stale_waiting_runs(store, store_url):
    stale = store.start_run("alice", "flow-run-stale")
    store.start_run("alice", "flow-run-recent")
    engine = create_engine(store_url)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE runs SET started_at = :started_at WHERE id = :id"),
            {"started_at": datetime.now(UTC) - timedelta(minutes=21), "id": stale},
        )
    engine.dispose()
    successor = store.start_run("alice", None)

    assert store.take_over_runs("alice", successor) == [stale]
    assert store.run_by_flow_run_id("flow-run-stale")["state"] == "abandoned"
    assert store.run_by_flow_run_id("flow-run-recent")["state"] == "waiting"
