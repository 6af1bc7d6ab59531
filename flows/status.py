"""Rows of ``warden status``: each registered account's session, last run and pending work."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from blocks.account import account_block_documents
from warden.store import StoredSession, default_document_store

__all__ = ["collect_status"]


def _session_label(session: StoredSession | None, now: datetime) -> str:
    """Return a short label: none, refused, expired or valid (by forecast), or saved (no forecast)."""
    if session is None:
        return "none"
    if session.rejected_at is not None:
        return "refused"
    if session.expires_at is None:
        return "saved"
    return "expired" if session.expires_at <= now else "valid"


async def collect_status() -> list[dict[str, Any]]:
    """Return one row per registered account, sorted by name."""
    documents = await account_block_documents()

    store = default_document_store()
    last_runs = store.last_runs()
    pending = store.pending_counts()
    deferred = store.pending_counts(status="deferred")
    now = datetime.now(UTC)

    rows = []
    for document in documents:
        name = document.name
        session = store.latest_session(name)
        run = last_runs.get(name) or {}
        finished = run.get("finished_at")
        rows.append(
            {
                "account": name,
                "connector": document.data.get("connector", "?"),
                "access_paths": document.data.get("access_paths") or ["browser-session"],
                "last_access_path": (run.get("summary") or {}).get("access_path"),
                "session": _session_label(session, now),
                "expires_at": session.expires_at.isoformat(timespec="seconds")
                if session and session.expires_at
                else None,
                "last_run_state": run.get("state"),
                "last_run_finished_at": finished.isoformat(timespec="seconds") if finished else None,
                "messages": store.message_count(name),
                "pending_extractions": pending.get(name, 0),
                "deferred_extractions": deferred.get(name, 0),
            }
        )
    return rows
