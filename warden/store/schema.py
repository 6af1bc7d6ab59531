"""Tables of the document store (SQLAlchemy Core; SQLite by default, PostgreSQL by URL).

Content lives in ``blobs`` keyed by SHA-256, so an attachment sent to several
messages or accounts is stored once. A message, its attachments' rows, their
blobs and the mailbox cursor are written in one transaction, so the cursor
never moves past unsaved work.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["attachments", "blobs", "cursors", "issued_tokens", "messages", "metadata", "runs", "sessions"]

metadata = MetaData()

blobs = Table(
    "blobs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account", String(200), nullable=False),
    Column("mailbox", String(500), nullable=False),
    Column("uidvalidity", BigInteger, nullable=False, comment="0 when the source does not expose UIDVALIDITY"),
    Column("uid", BigInteger, nullable=False),
    Column("message_id", Text),
    Column("subject", Text),
    Column("sender", Text),
    Column("sent_at", Text, comment="Date header as sent"),
    Column("raw_sha256", String(64), ForeignKey("blobs.sha256"), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("body_text", Text),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("account", "mailbox", "uidvalidity", "uid", name="uq_messages_source"),
)

attachments = Table(
    "attachments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_pk", Integer, ForeignKey("messages.id"), nullable=False),
    Column("account", String(200), nullable=False),
    Column("part_index", Integer, nullable=False, comment="Position among the message's attachments, from 0"),
    Column("filename", Text),
    Column("declared_type", String(200)),
    Column("mime_type", String(200), comment="Sniffed from content by extraction"),
    Column("sha256", String(64), ForeignKey("blobs.sha256"), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column(
        "status",
        String(20),
        nullable=False,
        comment=("pending, deferred, ok, partial, failed, encrypted, unsupported, too_large, malformed, timeout"),
    ),
    Column("error", Text),
    Column("text", Text),
    Column("details", JSON, comment="Pages, members and timings from extraction"),
    Column("extracted_at", DateTime(timezone=True)),
    UniqueConstraint("message_pk", "part_index", name="uq_attachments_part"),
)

cursors = Table(
    "cursors",
    metadata,
    Column("account", String(200), primary_key=True),
    Column("mailbox", String(500), primary_key=True),
    Column("uidvalidity", BigInteger, nullable=False),
    Column("last_uid", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("account", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("ciphertext", Text, nullable=False, comment="Transit ciphertext of the storage state JSON"),
    Column("captured_at", DateTime(timezone=True), nullable=False, comment="When a login produced this session"),
    Column("saved_at", DateTime(timezone=True), nullable=False),
    Column("last_valid_at", DateTime(timezone=True), comment="Last time a request proved the session valid"),
    Column("expires_at", DateTime(timezone=True), comment="Forecast expiry"),
    Column("forecast_source", String(20)),
    Column("source", String(40), comment="What produced this version: browser-login, probe, fetch, import, ..."),
    Column("rejected_at", DateTime(timezone=True), comment="When the site refused this session during work"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account", String(200), nullable=False),
    Column("flow_run_id", String(64)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("state", String(20), nullable=False, comment="waiting, running, completed, failed or abandoned"),
    Column("summary", JSON),
)

# The token journal: every vault token a sync issued, until its revocation is proven.
issued_tokens = Table(
    "issued_tokens",
    metadata,
    Column("accessor", String(200), primary_key=True),
    Column("run_id", Integer, nullable=False, index=True),
    Column("account", String(200), nullable=False, index=True),
    Column("action", String(40), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)
