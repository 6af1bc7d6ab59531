"""The document store: messages, attachments, extraction results, cursors, sessions, runs and tokens.

One :class:`DocumentStore` per process; it is safe to share between threads.
Every write is idempotent: saving the same message twice keeps one row, and
content is deduplicated by SHA-256 across messages and accounts.

SQLite is the embedded default (WAL mode, a busy timeout, so a worker and the
CLI can share it). PostgreSQL is the choice for workers on several hosts, with
a URL such as ``postgresql+psycopg://USER:PASSWORD@HOST:5432/warden`` and the
psycopg driver installed. Opening a store creates or upgrades its schema
(see :mod:`warden.store.migrations`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from warden.credentials.tokens import IssuedToken
from warden.errors import BugError, ConfigError, TransientError
from warden.store import migrations, schema

__all__ = ["AttachmentRecord", "DocumentStore", "MessageRecord", "PendingAttachment", "StoredSession"]

logger = logging.getLogger("warden.store")

# A sync stops waiting for its account's lock after 900 s (ACCOUNT_LOCK_TIMEOUT_SECONDS in flows/orchestration.py),
# so a run still marked waiting this long after it started lost its worker.
WAITING_RUN_STALE_AFTER = timedelta(minutes=20)
# Versions of a session kept per account; older ones are deleted on save.
SESSION_VERSIONS_KEPT = 5
# Databases whose insert has on_conflict_do_nothing, which saving a message needs.
SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def utc_now() -> datetime:
    return datetime.now(UTC)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class AttachmentRecord:
    """One attachment of a fetched message, before extraction."""

    part_index: int
    filename: str | None
    declared_type: str | None
    data: bytes
    error: str | None = None


@dataclass(frozen=True)
class MessageRecord:
    """One fetched message with its raw bytes and its attachments."""

    mailbox: str
    uidvalidity: int
    uid: int
    raw: bytes
    message_id: str | None
    subject: str | None
    sender: str | None
    sent_at: str | None
    body_text: str | None
    attachments: Sequence[AttachmentRecord] = field(default_factory=tuple)


@dataclass(frozen=True)
class PendingAttachment:
    """An attachment waiting for extraction."""

    id: int
    account: str
    message_uid: int
    part_index: int
    filename: str | None
    declared_type: str | None
    sha256: str
    data: bytes


@dataclass(frozen=True)
class StoredSession:
    """The latest encrypted session of an account, with its forecast."""

    account: str
    version: int
    ciphertext: str
    captured_at: datetime
    saved_at: datetime
    last_valid_at: datetime | None
    expires_at: datetime | None
    forecast_source: str | None
    source: str | None
    rejected_at: datetime | None = None


def _in_memory_error() -> ConfigError:
    return ConfigError(
        "The document store cannot be an in-memory SQLite database: each connection would see a new, empty one "
        "and nothing would be kept. Set WARDEN_STORE_URL to a file, such as sqlite:////var/lib/warden/warden.db."
    )


def _schema_damaged(exc: SQLAlchemyError) -> bool:
    """Return whether ``exc`` reports a missing table or column (SQLite's message, or PostgreSQL's SQLSTATE)."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in ("42P01", "42703"):
        return True
    return isinstance(exc, OperationalError) and ("no such table" in str(orig) or "no such column" in str(orig))


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes even for timezone-aware columns; every value stored here is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _stored_session(row: Any) -> StoredSession:
    return StoredSession(
        account=row.account,
        version=row.version,
        ciphertext=row.ciphertext,
        captured_at=_aware(row.captured_at),
        saved_at=_aware(row.saved_at),
        last_valid_at=_aware(row.last_valid_at),
        expires_at=_aware(row.expires_at),
        forecast_source=row.forecast_source,
        source=row.source,
        rejected_at=_aware(row.rejected_at),
    )


class DocumentStore:
    """Messages, attachments and their text, with cursors and sessions, in one database."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self._engine = self._create_engine(url)
            self._insert = self._insert_for_dialect(self._engine.dialect.name)
            migrations.migrate(self._engine)
        except (OSError, SQLAlchemyError) as exc:
            safe_url = url.split("@")[-1] if "@" in url else url
            raise ConfigError(
                f"Could not open the document store at {safe_url}: {type(exc).__name__}: {exc}. "
                "Check WARDEN_STORE_URL or WARDEN_HOME, and that the database is reachable and writable."
            ) from exc

    @staticmethod
    def _insert_for_dialect(dialect: str) -> Callable[..., Any]:
        """Return the dialect's ``insert``, which has ``on_conflict_do_nothing`` (``_create_engine`` checked it)."""
        return postgresql.insert if dialect == "postgresql" else sqlite.insert

    @staticmethod
    def _create_engine(url: str) -> Engine:
        backend = make_url(url).get_backend_name()
        if backend not in SUPPORTED_BACKENDS:
            raise ConfigError(
                f"The document store supports SQLite and PostgreSQL, not {backend}. "
                "Set WARDEN_STORE_URL to a sqlite:/// or postgresql+psycopg:// URL."
            )
        try:
            return DocumentStore._create_engine_for(url)
        except ImportError as exc:
            raise ConfigError(
                f"The database driver of WARDEN_STORE_URL ({make_url(url).drivername}) is not installed: {exc}. "
                "For PostgreSQL, install the project's postgres extra (pip install -e '.[postgres]')."
            ) from exc

    @staticmethod
    def _create_engine_for(url: str) -> Engine:
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///").split("?", 1)[0]).expanduser()
            if str(path) == ":memory:":
                raise _in_memory_error()
            if not path.is_absolute():
                raise ConfigError(
                    f"The SQLite document store's path '{path}' is relative, so each process would open a "
                    "different file depending on its current directory. Set WARDEN_STORE_URL to an absolute "
                    f"path, with four slashes (sqlite:///{Path.cwd() / path}), or WARDEN_HOME to an absolute directory."
                )
            directory = path.parent
            if not directory.is_dir():
                # Not created here: a mistyped path would otherwise start a new, empty store.
                raise ConfigError(
                    f"The directory {directory} of the SQLite document store does not exist. "
                    "Create it, or fix WARDEN_STORE_URL (or WARDEN_HOME)."
                )
            engine = create_engine(url, connect_args={"timeout": 30})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

            return engine
        if make_url(url).get_backend_name() == "sqlite":
            # sqlite:// without a path: a new, empty database in memory for each connection.
            raise _in_memory_error()
        return create_engine(url, pool_pre_ping=True)

    def _safe_url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        try:
            with self._engine.begin() as connection:
                yield connection
        except SQLAlchemyError as exc:
            if _schema_damaged(exc):
                raise ConfigError(
                    f"The document store at {self._safe_url()} lacks part of its schema: {exc.orig}. It was damaged "
                    "or changed by another program. Restore a backup, or set WARDEN_STORE_URL to a new store."
                ) from exc
            if isinstance(exc, OperationalError):
                raise TransientError(
                    f"The document store at {self._safe_url()} is busy or unreachable: {exc.orig}. "
                    "The write was rolled back, so retrying is safe."
                ) from exc
            # str(exc) would carry the statement's parameters (message bodies, file contents); exc.orig does not.
            raise BugError(
                f"A write to the document store at {self._safe_url()} failed and was rolled back: "
                f"{type(exc).__name__}: {getattr(exc, 'orig', None) or 'no driver message'}. Please report it."
            ) from exc

    # -- messages and attachments --------------------------------------------

    def _put_blob(self, connection: Connection, data: bytes) -> str:
        digest = sha256_hex(data)
        statement = self._insert(schema.blobs).values(
            sha256=digest, size_bytes=len(data), data=data, stored_at=utc_now()
        )
        connection.execute(statement.on_conflict_do_nothing(index_elements=["sha256"]))
        return digest

    def save_message(self, account: str, message: MessageRecord) -> bool:
        """Save a message, its attachments and blobs, and advance the cursor, in one transaction.

        Returns False when the message was already stored (nothing changes then,
        except that the cursor still moves forward if it lagged).
        """
        with self._transaction() as connection:
            raw_sha256 = self._put_blob(connection, message.raw)
            # Insert-or-skip in one statement, so two workers saving the same message cannot both insert it.
            statement = (
                self._insert(schema.messages)
                .values(
                    account=account,
                    mailbox=message.mailbox,
                    uidvalidity=message.uidvalidity,
                    uid=message.uid,
                    message_id=message.message_id,
                    subject=message.subject,
                    sender=message.sender,
                    sent_at=message.sent_at,
                    raw_sha256=raw_sha256,
                    size_bytes=len(message.raw),
                    body_text=message.body_text,
                    fetched_at=utc_now(),
                )
                .on_conflict_do_nothing(index_elements=["account", "mailbox", "uidvalidity", "uid"])
                .returning(schema.messages.c.id)
            )
            message_pk = connection.execute(statement).scalar_one_or_none()
            created = message_pk is not None

            if created:
                for attachment in message.attachments:
                    digest = self._put_blob(connection, attachment.data)
                    connection.execute(
                        schema.attachments.insert().values(
                            message_pk=message_pk,
                            account=account,
                            part_index=attachment.part_index,
                            filename=attachment.filename,
                            declared_type=attachment.declared_type,
                            sha256=digest,
                            size_bytes=len(attachment.data),
                            status="failed" if attachment.error else "pending",
                            error=attachment.error,
                        )
                    )

            self._advance_cursor(connection, account, message.mailbox, message.uidvalidity, message.uid)
        return created

    def _advance_cursor(self, connection: Connection, account: str, mailbox: str, uidvalidity: int, uid: int) -> None:
        current = connection.execute(
            select(schema.cursors.c.uidvalidity, schema.cursors.c.last_uid).where(
                schema.cursors.c.account == account, schema.cursors.c.mailbox == mailbox
            )
        ).one_or_none()

        if current is None:
            connection.execute(
                schema.cursors.insert().values(
                    account=account, mailbox=mailbox, uidvalidity=uidvalidity, last_uid=uid, updated_at=utc_now()
                )
            )
        elif current.uidvalidity != uidvalidity or uid > current.last_uid:
            connection.execute(
                update(schema.cursors)
                .where(schema.cursors.c.account == account, schema.cursors.c.mailbox == mailbox)
                .values(uidvalidity=uidvalidity, last_uid=uid, updated_at=utc_now())
            )

    def cursor(self, account: str, mailbox: str) -> tuple[int, int] | None:
        """Return ``(uidvalidity, last_uid)`` of the last saved message, or None before the first sync."""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(schema.cursors.c.uidvalidity, schema.cursors.c.last_uid).where(
                    schema.cursors.c.account == account, schema.cursors.c.mailbox == mailbox
                )
            ).one_or_none()
        return None if row is None else (row.uidvalidity, row.last_uid)

    def pending_attachments(self, account: str, limit: int = 1000, status: str = "pending") -> list[PendingAttachment]:
        """Return the account's attachments not yet extracted, oldest first."""
        query = (
            select(
                schema.attachments.c.id,
                schema.attachments.c.account,
                schema.messages.c.uid,
                schema.attachments.c.part_index,
                schema.attachments.c.filename,
                schema.attachments.c.declared_type,
                schema.attachments.c.sha256,
                schema.blobs.c.data,
            )
            .join(schema.messages, schema.messages.c.id == schema.attachments.c.message_pk)
            .join(schema.blobs, schema.blobs.c.sha256 == schema.attachments.c.sha256)
            .where(schema.attachments.c.account == account, schema.attachments.c.status == status)
            .order_by(schema.attachments.c.id)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            PendingAttachment(
                id=row.id,
                account=row.account,
                message_uid=row.uid,
                part_index=row.part_index,
                filename=row.filename,
                declared_type=row.declared_type,
                sha256=row.sha256,
                data=row.data,
            )
            for row in rows
        ]

    def record_extraction(
        self, attachment_id: int, *, status: str, mime_type: str | None, text: str, error: str | None, details: dict
    ) -> None:
        """Store the extraction result of one attachment."""
        with self._transaction() as connection:
            connection.execute(
                update(schema.attachments)
                .where(schema.attachments.c.id == attachment_id)
                .values(
                    status=status,
                    mime_type=mime_type,
                    text=text,
                    error=error,
                    details=details,
                    extracted_at=utc_now(),
                )
            )

    def attachments_for(self, account: str) -> list[dict[str, Any]]:
        """Return every attachment row of an account with its message UID, for reports and tests."""
        query = (
            select(
                schema.messages.c.uid,
                schema.messages.c.subject,
                schema.attachments.c.id,
                schema.attachments.c.part_index,
                schema.attachments.c.filename,
                schema.attachments.c.declared_type,
                schema.attachments.c.mime_type,
                schema.attachments.c.sha256,
                schema.attachments.c.size_bytes,
                schema.attachments.c.status,
                schema.attachments.c.error,
                schema.attachments.c.text,
                schema.attachments.c.details,
            )
            .join(schema.messages, schema.messages.c.id == schema.attachments.c.message_pk)
            .where(schema.attachments.c.account == account)
            .order_by(schema.messages.c.uid, schema.attachments.c.part_index)
        )
        with self._engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def message_count(self, account: str, mailbox: str | None = None) -> int:
        """Return how many messages of an account (and mailbox, if given) are stored."""
        query = select(func.count()).select_from(schema.messages).where(schema.messages.c.account == account)
        if mailbox is not None:
            query = query.where(schema.messages.c.mailbox == mailbox)
        with self._engine.connect() as connection:
            return connection.execute(query).scalar_one()

    # -- sessions ------------------------------------------------------------

    def latest_session(self, account: str) -> StoredSession | None:
        """Return the newest stored session of an account, or None."""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(schema.sessions)
                .where(schema.sessions.c.account == account)
                .order_by(schema.sessions.c.version.desc())
                .limit(1)
            ).one_or_none()
        return None if row is None else _stored_session(row)

    def reject_session(self, account: str, version: int) -> None:
        """Mark a stored session version as refused by the site, so the next probe treats it as expired."""
        with self._transaction() as connection:
            connection.execute(
                update(schema.sessions)
                .where(schema.sessions.c.account == account, schema.sessions.c.version == version)
                .values(rejected_at=utc_now())
            )

    def session_versions(self, account: str) -> list[StoredSession]:
        """Return every stored version of an account's session, newest first."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(schema.sessions)
                .where(schema.sessions.c.account == account)
                .order_by(schema.sessions.c.version.desc())
            ).all()
        return [_stored_session(row) for row in rows]

    def save_session(
        self,
        account: str,
        ciphertext: str,
        *,
        captured_at: datetime,
        last_valid_at: datetime | None,
        expires_at: datetime | None,
        forecast_source: str | None,
        source: str | None = None,
    ) -> int:
        """Store a new version of an account's session and prune old versions; return the version."""
        with self._transaction() as connection:
            latest = connection.execute(
                select(func.max(schema.sessions.c.version)).where(schema.sessions.c.account == account)
            ).scalar_one()
            version = (latest or 0) + 1
            connection.execute(
                schema.sessions.insert().values(
                    account=account,
                    version=version,
                    ciphertext=ciphertext,
                    captured_at=captured_at,
                    saved_at=utc_now(),
                    last_valid_at=last_valid_at,
                    expires_at=expires_at,
                    forecast_source=forecast_source,
                    source=source,
                )
            )
            connection.execute(
                schema.sessions.delete().where(
                    schema.sessions.c.account == account,
                    schema.sessions.c.version <= version - SESSION_VERSIONS_KEPT,
                )
            )
        return version

    # -- runs ----------------------------------------------------------------

    def start_run(self, account: str, flow_run_id: str | None) -> int:
        """Record a run that waits for the account's lock; return its id."""
        with self._transaction() as connection:
            return connection.execute(
                schema.runs.insert().values(
                    account=account, flow_run_id=flow_run_id, started_at=utc_now(), state="waiting"
                )
            ).inserted_primary_key[0]

    def take_over_runs(self, account: str, run_id: int) -> list[int]:
        """Mark run ``run_id`` running and the account's runs whose worker died abandoned; return the abandoned ids.

        Call it while holding the account's lock. Only one run holds the lock, so
        another run still marked running lost its worker before it could finish.
        So did a run still waiting for the lock after ``WAITING_RUN_STALE_AFTER``.
        """
        stale_before = utc_now() - WAITING_RUN_STALE_AFTER
        with self._transaction() as connection:
            abandoned = list(
                connection.execute(
                    select(schema.runs.c.id).where(
                        schema.runs.c.account == account,
                        schema.runs.c.id != run_id,
                        (schema.runs.c.state == "running")
                        | ((schema.runs.c.state == "waiting") & (schema.runs.c.started_at < stale_before)),
                    )
                ).scalars()
            )
            if abandoned:
                connection.execute(
                    update(schema.runs)
                    .where(schema.runs.c.id.in_(abandoned))
                    .values(
                        finished_at=utc_now(),
                        state="abandoned",
                        summary={
                            "account": account,
                            "error": f"The worker of this run stopped before it finished; run {run_id} took over.",
                        },
                    )
                )
            connection.execute(update(schema.runs).where(schema.runs.c.id == run_id).values(state="running"))
        return abandoned

    def finish_run(self, run_id: int, *, state: str, summary: dict[str, Any]) -> None:
        with self._transaction() as connection:
            connection.execute(
                update(schema.runs)
                .where(schema.runs.c.id == run_id)
                .values(finished_at=utc_now(), state=state, summary=summary)
            )

    def run_by_flow_run_id(self, flow_run_id: str) -> dict[str, Any] | None:
        with self._engine.connect() as connection:
            row = connection.execute(
                select(schema.runs).where(schema.runs.c.flow_run_id == flow_run_id).order_by(schema.runs.c.id.desc())
            ).first()
        return None if row is None else dict(row._mapping)

    def last_runs(self) -> dict[str, dict[str, Any]]:
        """Return the newest run of each account."""
        newest = (
            select(schema.runs.c.account, func.max(schema.runs.c.id).label("id")).group_by(schema.runs.c.account)
        ).subquery()
        query = select(schema.runs).join(newest, newest.c.id == schema.runs.c.id)
        with self._engine.connect() as connection:
            return {row.account: dict(row._mapping) for row in connection.execute(query)}

    def pending_counts(self, status: str = "pending") -> dict[str, int]:
        """Return the number of attachments with ``status`` (by default waiting for extraction), per account."""
        query = (
            select(schema.attachments.c.account, func.count())
            .where(schema.attachments.c.status == status)
            .group_by(schema.attachments.c.account)
        )
        with self._engine.connect() as connection:
            return {account: count for account, count in connection.execute(query)}

    # -- the token journal ---------------------------------------------------

    def record_token(self, run_id: int, token: IssuedToken) -> None:
        """Record a token that run ``run_id`` issued, before anything uses it."""
        with self._transaction() as connection:
            connection.execute(
                schema.issued_tokens.insert().values(run_id=run_id, **token.model_dump(), revoked_at=None)
            )

    def record_revocation(self, accessor: str, revoked_at: datetime) -> None:
        """Record that the revocation of the token with ``accessor`` was proven."""
        with self._transaction() as connection:
            connection.execute(
                update(schema.issued_tokens)
                .where(schema.issued_tokens.c.accessor == accessor)
                .values(revoked_at=revoked_at)
            )

    def unrevoked_tokens(self, account: str) -> list[IssuedToken]:
        """Return the account's tokens without a proven revocation whose run no longer waits or runs."""
        query = (
            select(schema.issued_tokens)
            .join(schema.runs, schema.runs.c.id == schema.issued_tokens.c.run_id)
            .where(
                schema.issued_tokens.c.account == account,
                schema.issued_tokens.c.revoked_at.is_(None),
                schema.runs.c.state.not_in(("waiting", "running")),
            )
            .order_by(schema.issued_tokens.c.issued_at)
        )
        with self._engine.connect() as connection:
            return [
                IssuedToken(
                    accessor=row.accessor,
                    account=row.account,
                    action=row.action,
                    issued_at=_aware(row.issued_at),
                    expires_at=_aware(row.expires_at),
                )
                for row in connection.execute(query)
            ]
