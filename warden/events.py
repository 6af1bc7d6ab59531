"""Event names and payloads, one schema for every event the project emits.

Every event is named ``warden.<noun>.<verb>``, concerns one account (its
related resource ``warden.account.<name>``), and carries a flat payload of
non-secret facts. The library emits through an :class:`EventSink` it is
given; the flows pass one that forwards to Prefect's ``emit_event``, tests
pass a :class:`RecordingSink`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = ["EventName", "EventSink", "LoggingSink", "RecordingSink", "WardenEvent"]

logger = logging.getLogger("warden.events")


class EventName(StrEnum):
    SESSION_PROBED = "warden.session.probed"
    SESSION_REFRESHED = "warden.session.refreshed"
    LOGIN_REQUIRED = "warden.login.required"
    OAUTH_REFRESHED = "warden.oauth.refreshed"
    OAUTH_REFRESH_STUCK = "warden.oauth.refresh_stuck"
    ACCESS_PATH_UNAVAILABLE = "warden.access_path.unavailable"
    TOKEN_ISSUED = "warden.token.issued"
    TOKEN_REVOKED = "warden.token.revoked"
    RUN_ABANDONED = "warden.run.abandoned"
    REVOCATION_UNPROVEN = "warden.revocation.unproven"
    BROWSER_CRASHED = "warden.browser.crashed"
    BROWSER_BUDGET_EXCEEDED = "warden.browser.budget_exceeded"
    FETCH_THROTTLED = "warden.fetch.throttled"
    FETCH_RESCHEDULED = "warden.fetch.rescheduled"
    EXTRACTION_FAILED = "warden.extraction.failed"


@dataclass(frozen=True)
class WardenEvent:
    """One event: its name, the account it concerns, and a flat payload of non-secret facts."""

    name: EventName
    account: str
    payload: dict[str, Any] = field(default_factory=dict)


class EventSink(Protocol):
    def emit(self, event: WardenEvent) -> None: ...


class LoggingSink:
    """Write each event as one structured log line; the default outside a flow."""

    def emit(self, event: WardenEvent) -> None:
        fields = " ".join(f"{key}={value}" for key, value in sorted(event.payload.items()))
        logger.info("%s account=%s %s", event.name.value, event.account, fields)


class RecordingSink:
    """Keep every event in memory, for tests."""

    def __init__(self) -> None:
        self.events: list[WardenEvent] = []

    def emit(self, event: WardenEvent) -> None:
        self.events.append(event)

    def names(self) -> list[str]:
        return [event.name.value for event in self.events]
