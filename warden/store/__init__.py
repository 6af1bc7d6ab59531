"""Documents, attachments, cursors and sessions, in one database."""

from warden.store.documents import (
    AttachmentRecord,
    DocumentStore,
    MessageRecord,
    PendingAttachment,
    StoredSession,
)

__all__ = ["AttachmentRecord", "DocumentStore", "MessageRecord", "PendingAttachment", "StoredSession"]
