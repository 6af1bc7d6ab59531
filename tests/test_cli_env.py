"""How the CLI reads the dev stack's env file, and a store URL left over from a PostgreSQL stack."""

from __future__ import annotations

import json
import os

import pytest

from warden.cli import load_stack_env

STACK_POSTGRES = {"host": "127.0.0.1", "port": 54321}
STALE_URL = "postgresql+psycopg://warden:secret@127.0.0.1:54321/warden"


def write_stack(directory, database: str) -> None:
    state = {"version": 1, "database": database, "components": {"postgres": STACK_POSTGRES}}
    (directory / "stack.json").write_text(json.dumps(state), encoding="utf-8")
    (directory / "env").write_text("export WARDEN_HOME=/tmp/warden-home\nunset WARDEN_STORE_URL\n", encoding="utf-8")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    monkeypatch.delenv("WARDEN_HOME", raising=False)
    monkeypatch.delenv("WARDEN_STORE_URL", raising=False)


def test_stale_store_url_dropped(tmp_path, monkeypatch, capsys):
    write_stack(tmp_path, "sqlite")
    monkeypatch.setenv("WARDEN_STORE_URL", STALE_URL)

    load_stack_env(tmp_path)

    assert "WARDEN_STORE_URL" not in os.environ
    assert "unset WARDEN_STORE_URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("database", "url"),
    [
        ("postgresql", STALE_URL),
        ("sqlite", "postgresql+psycopg://warden:secret@db.internal:5432/warden"),
    ],
)
def test_other_store_url_kept(tmp_path, monkeypatch, database, url):
    write_stack(tmp_path, database)
    monkeypatch.setenv("WARDEN_STORE_URL", url)

    load_stack_env(tmp_path)

    assert os.environ["WARDEN_STORE_URL"] == url
