"""Documents, attachments, cursors and sessions, in one database."""

from functools import lru_cache

from warden.settings import get_settings
from warden.store.documents import (
    AttachmentRecord,
    DocumentStore,
    MessageRecord,
    PendingAttachment,
    StoredSession,
)

__all__ = [
    "AttachmentRecord",
    "DocumentStore",
    "MessageRecord",
    "PendingAttachment",
    "StoredSession",
    "default_document_store",
]


@lru_cache(maxsize=4)
def _store_for(url: str) -> DocumentStore:
    return DocumentStore(url)


def default_document_store(url: str | None = None) -> DocumentStore:
    """Return this process's store for ``url``, or for WARDEN_STORE_URL / WARDEN_HOME when none is given."""
    if not url:
        settings = get_settings()
        if settings.store_url is None:
            # The default store lives in WARDEN_HOME, which is created on first use.
            settings.home.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_store_url()
    return _store_for(url)
