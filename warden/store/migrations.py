"""Versioned schema migrations of the document store, run when a store opens.

The table ``schema_version`` records each applied step (version, name, time).
:func:`migrate` applies the steps above the recorded version, in order, inside
one transaction that first takes a database-wide lock, so two processes that
open the same store at once neither apply a step twice nor see a half-built
schema:

- PostgreSQL: ``pg_advisory_xact_lock(MIGRATION_LOCK_KEY)``, released at commit
  or rollback. DDL is transactional there, so a failed step leaves nothing behind.
- SQLite: ``BEGIN IMMEDIATE``, which takes the database's write lock and waits
  for it up to the connection's busy timeout. SQLite also rolls DDL back.

Step 1 creates the tables with ``CREATE TABLE IF NOT EXISTS``, and step 2 adds
the nullable columns that older releases lacked, so a database written before
this module existed (without ``schema_version``) is upgraded in place. Step 3
adds the token journal, ``issued_tokens``, to stores created before it existed.

A new step is a function taking a :class:`~sqlalchemy.Connection`, appended to
``MIGRATIONS`` with the next version number. Applied steps never change.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, Connection, DateTime, Engine, Integer, MetaData, String, Table, func, inspect, select
from sqlalchemy import text as sql_text
from sqlalchemy.exc import OperationalError

from warden.errors import ConfigError
from warden.store import schema

__all__ = ["MIGRATIONS", "MIGRATION_LOCK_KEY", "Migration", "applied_version", "latest_version", "migrate"]

logger = logging.getLogger("warden.store")

# Key of the PostgreSQL advisory lock held while migrating; any fixed 64-bit integer unused by other
# applications in the same database works. This one is the ASCII bytes of "wardenmg".
MIGRATION_LOCK_KEY = 0x77617264656E6D67

# Attempts, and the base of the growing delay between them, when SQLite reports a lock without waiting.
SQLITE_LOCKED_ATTEMPTS = 5
SQLITE_LOCKED_DELAY_SECONDS = 0.2

_version_metadata = MetaData()

schema_version = Table(
    "schema_version",
    _version_metadata,
    Column("version", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Migration:
    """One schema change: its version (1, 2, ...), a short name, and the function that applies it."""

    version: int
    name: str
    apply: Callable[[Connection], None]


def _create_tables(connection: Connection) -> None:
    schema.metadata.create_all(connection, checkfirst=True)


def _add_missing_nullable_columns(connection: Connection) -> None:
    """Add the nullable columns that releases before versioned migrations created tables without."""
    inspector = inspect(connection)
    for table in schema.metadata.sorted_tables:
        existing = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in existing:
                continue
            if not column.nullable:
                raise ConfigError(
                    f"The document store's table '{table.name}' lacks the required column '{column.name}', "
                    "which no migration can add to existing rows. Restore a backup or start a new store."
                )
            column_type = column.type.compile(dialect=connection.dialect)
            connection.execute(sql_text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {column_type}'))
            logger.info("store.column_added table=%s column=%s", table.name, column.name)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create tables", _create_tables),
    Migration(2, "add nullable columns missing from stores of earlier releases", _add_missing_nullable_columns),
    Migration(3, "add the token journal", _create_tables),
)


def latest_version() -> int:
    """Return the version of the last migration this release defines."""
    return MIGRATIONS[-1].version


def applied_version(connection: Connection) -> int:
    """Return the highest version recorded in ``schema_version``, or 0 when the table is empty or missing."""
    if not inspect(connection).has_table(schema_version.name):
        return 0
    return connection.execute(select(func.max(schema_version.c.version))).scalar_one() or 0


def _lock(connection: Connection) -> None:
    """Take the migration lock for the rest of the current transaction (see the module docstring)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(sql_text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    elif dialect == "sqlite":
        # pysqlite opens no transaction before DDL on its own; an explicit BEGIN IMMEDIATE takes the write lock now.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        raise ConfigError(
            f"The document store supports SQLite and PostgreSQL, not {dialect}. "
            "Set WARDEN_STORE_URL to a sqlite:/// or postgresql+psycopg:// URL."
        )


def migrate(engine: Engine) -> list[int]:
    """Apply the migrations above the database's recorded version; return the versions applied now.

    On SQLite, a "database is locked" error is retried up to ``SQLITE_LOCKED_ATTEMPTS`` times.
    SQLite can return it at once, without waiting for the busy timeout, while another
    connection switches a new database to WAL mode.

    Raises:
        ConfigError: the database records a version newer than this release defines,
            or a step cannot apply to the data found.
        OperationalError: the database could not be reached, or stayed locked.
    """
    for attempt in range(1, SQLITE_LOCKED_ATTEMPTS + 1):
        try:
            return _migrate_once(engine)
        except OperationalError as exc:
            locked = engine.dialect.name == "sqlite" and "database is locked" in str(exc.orig)
            if not locked or attempt == SQLITE_LOCKED_ATTEMPTS:
                raise
            delay_seconds = random.uniform(0.5, 1.5) * attempt * SQLITE_LOCKED_DELAY_SECONDS
            logger.info(
                "store.migration_retry attempt=%d delay_seconds=%.2f error=%s", attempt, delay_seconds, exc.orig
            )
            time.sleep(delay_seconds)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _migrate_once(engine: Engine) -> list[int]:
    applied: list[int] = []
    with engine.connect() as connection:
        _lock(connection)
        _version_metadata.create_all(connection, checkfirst=True)
        current = applied_version(connection)
        if current > latest_version():
            connection.rollback()
            raise ConfigError(
                f"The document store has schema version {current}, but this release of Connector Warden supports "
                f"versions up to {latest_version()}. Upgrade Connector Warden on this host."
            )

        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            migration.apply(connection)
            connection.execute(
                schema_version.insert().values(
                    version=migration.version, name=migration.name, applied_at=datetime.now(UTC)
                )
            )
            applied.append(migration.version)
        connection.commit()

    for version in applied:
        logger.info("store.migrated version=%d url=%s", version, engine.url.render_as_string(hide_password=True))
    return applied
