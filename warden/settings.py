"""Process-wide settings read from the environment (prefix ``WARDEN_``).

Per-account configuration lives in Prefect Blocks. These settings are the few
values a worker process needs before it can load a Block. The AppRole secret id
is read by the vault Block from the variable it names.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from warden.errors import ConfigError

__all__ = ["WardenSettings", "get_settings"]

# Prefect's server accepts leases of 60 s to one day.
MIN_LEASE_SECONDS = 60
MAX_LEASE_SECONDS = 86_400


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
    lease_seconds: float = Field(
        default=300,
        ge=MIN_LEASE_SECONDS,
        le=MAX_LEASE_SECONDS,
        description=(
            "Lease of every global concurrency slot a worker takes. A live worker renews it; the slots of a "
            "killed worker free when it ends."
        ),
    )

    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return f"sqlite:///{self.home / 'warden.db'}"


@lru_cache(maxsize=1)
def get_settings() -> WardenSettings:
    """Return the settings, read once per process.

    Raises:
        ConfigError: the value of a ``WARDEN_`` variable is out of range or of the wrong type.
    """
    try:
        return WardenSettings()
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ConfigError(f"Invalid Connector Warden setting: {problems}. Fix or unset the variable.") from exc


def _describe(error: Any) -> str:
    field = "_".join(str(part) for part in error["loc"])
    # The store URL may carry a database password, so its value is never repeated.
    value = "" if field == "store_url" else f"={error.get('input')!r}"
    return f"WARDEN_{field.upper()}{value}: {error['msg']}"
