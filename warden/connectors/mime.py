"""Split a raw RFC 822 message into the record the document store keeps.

A part is an attachment when its header marks it (``Content-Disposition: attachment``),
carries a file name, or is an attached message (``message/rfc822``, kept
whole: extraction reads the nested message and its own attachments). The body
text is the first ``text/plain`` part that is not an attachment, else the
first ``text/html`` one with its tags removed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from email import errors, policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

from warden.connectors.base import ItemRef
from warden.store import AttachmentRecord, MessageRecord

__all__ = ["message_record_from_raw"]

_TAG = re.compile(r"<[^>]+>")
_DECODING_DEFECTS = (
    errors.InvalidBase64CharactersDefect,
    errors.InvalidBase64PaddingDefect,
    errors.InvalidBase64LengthDefect,
)


def _leaf_parts(part: Message) -> Iterator[Message]:
    if part.get_content_type() == "message/rfc822":
        yield part
        return
    if part.is_multipart():
        for sub in part.get_payload():
            yield from _leaf_parts(sub)
        return
    yield part


def _is_attachment(part: Message) -> bool:
    if part.get_content_type() == "message/rfc822":
        return True
    disposition = (part.get_content_disposition() or "").lower()
    return disposition == "attachment" or part.get_filename() is not None


def _part_bytes(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822":
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        return inner.as_bytes(policy=policy.SMTP) if inner is not None else b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _decoding_error(part: Message) -> str | None:
    """Describe a transfer-encoding defect found while decoding ``part``, or return None."""
    # The email package decodes broken base64 as best it can and only records defects, so the bytes
    # stored for such a part are not the file that was sent.
    defects = [defect for defect in part.defects if isinstance(defect, _DECODING_DEFECTS)]
    if not defects:
        return None
    names = ", ".join(sorted({type(defect).__name__ for defect in defects}))
    encoding = part.get("Content-Transfer-Encoding", "unknown")
    return (
        f"The attachment's {encoding} transfer encoding is invalid ({names}); the decoded bytes are not the "
        "file that was sent, so it was not extracted."
    )


def _part_text(part: Message) -> str:
    data = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def message_record_from_raw(ref: ItemRef, raw: bytes) -> MessageRecord:
    """Parse ``raw`` into a :class:`MessageRecord`; a malformed message still yields a record with its raw bytes."""
    message: EmailMessage = BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[assignment]

    attachments: list[AttachmentRecord] = []
    plain: str | None = None
    html_text: str | None = None

    for part in _leaf_parts(message):
        if _is_attachment(part):
            data = _part_bytes(part)
            attachments.append(
                AttachmentRecord(
                    part_index=len(attachments),
                    filename=part.get_filename(),
                    declared_type=part.get_content_type(),
                    data=data,
                    error=_decoding_error(part),
                )
            )
        elif part.get_content_type() == "text/plain" and plain is None:
            plain = _part_text(part)
        elif part.get_content_type() == "text/html" and html_text is None:
            html_text = html.unescape(_TAG.sub(" ", _part_text(part)))

    return MessageRecord(
        mailbox=ref.mailbox,
        uidvalidity=ref.uidvalidity,
        uid=ref.uid,
        raw=raw,
        message_id=_header(message, "Message-ID"),
        subject=_header(message, "Subject"),
        sender=_header(message, "From"),
        sent_at=_header(message, "Date"),
        body_text=plain if plain is not None else html_text,
        attachments=attachments,
    )


def _header(message: Message, name: str) -> str | None:
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError):
        # The default policy raises on some malformed headers; fall back to the undecoded value.
        value = next((raw for key, raw in message.raw_items() if key.lower() == name.lower()), None)
    return None if value is None else str(value)
