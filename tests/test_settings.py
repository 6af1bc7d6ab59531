"""Process settings read from ``WARDEN_`` variables, and the errors for bad values."""

from __future__ import annotations

import pytest

from warden.errors import ConfigError
from warden.settings import get_settings


@pytest.fixture(autouse=True)
def fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_lease_below_prefect_minimum_names_variable(monkeypatch):
    monkeypatch.setenv("WARDEN_LEASE_SECONDS", "10")

    with pytest.raises(ConfigError, match=r"WARDEN_LEASE_SECONDS='10'.*greater than or equal to 60"):
        get_settings()


def test_lease_read_from_environment(monkeypatch):
    monkeypatch.setenv("WARDEN_LEASE_SECONDS", "90")

    assert get_settings().lease_seconds == 90


def test_lease_not_a_number(monkeypatch):
    monkeypatch.setenv("WARDEN_LEASE_SECONDS", "five minutes")

    with pytest.raises(ConfigError, match="WARDEN_LEASE_SECONDS='five minutes'.*valid number"):
        get_settings()
