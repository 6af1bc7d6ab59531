"""Process-wide settings read from the environment (prefix ``WARDEN_``).

Per-account configuration lives in Prefect Blocks. These settings are the few
values a worker process needs before it can load a Block. The AppRole secret id
is read by the vault Block from the variable it names.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["WardenSettings", "get_settings"]


class WardenSettings(BaseSettings):
    """Settings of one worker process."""

    model_config = SettingsConfigDict(env_prefix="WARDEN_", extra="ignore")

    home: Path = Field(
        default=Path.home() / ".local" / "share" / "connector-warden",
        description="Directory for the document store and other local data.",
    )
    store_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the document store; default: SQLite file warden.db in WARDEN_HOME.",
    )
    chromium_path: Path = Field(default=Path("/usr/bin/chromium"), description="Chromium executable for logins.")

    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return f"sqlite:///{self.home / 'warden.db'}"


@lru_cache(maxsize=1)
def get_settings() -> WardenSettings:
    """Return the settings, read once per process."""
    return WardenSettings()
