"""Stage for e-mails (RFC 5322 / MIME): headers, body text, and every attachment as a member.

The text starts with the From, To, Cc, Date and Subject headers, decoded from
RFC 2047. Of a ``multipart/alternative``, only the plain-text version goes
into the body, or the HTML one when there is no plain text. Attachments inside
the other versions are still extracted. Attached messages (``message/rfc822``)
are extracted as members, so their own attachments nest under them.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.header
import email.policy
import mimetypes
import quopri
from email.message import EmailMessage, Message
from typing import TYPE_CHECKING

from warden.extraction.budget import LimitExceeded
from warden.extraction.nesting import ContainerOutput
from warden.extraction.results import Extracted
from warden.extraction.text import decode_text, html_to_text

if TYPE_CHECKING:
    from warden.extraction.nesting import ExtractionContext

__all__ = ["email_to_text"]

SHOWN_HEADERS = ("From", "To", "Cc", "Date", "Subject")
# Errors the email package raises on damaged headers and bodies; the parser
# itself only records defects, but decoding on access can still fail.
DECODE_ERRORS = (LookupError, UnicodeError, ValueError, TypeError, IndexError, AttributeError)


def email_to_text(data: bytes, mime_type: str, ctx: ExtractionContext) -> Extracted:
    """Return the headers and body text of a message, with its attachments as members."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    walker = MessageWalker(ContainerOutput(ctx, mime_type), ctx)

    header_lines = [f"{name}: {value}" for name, value in shown_headers(message)]
    try:
        walker.walk(message, text_wanted=True)
    except LimitExceeded as exc:
        walker.out.stop(exc)

    body = "\n\n".join(part for part in walker.body_parts if part)
    own_text = "\n".join(header_lines)
    if body:
        own_text = f"{own_text}\n\n{body}" if own_text else body
    # When the text is cut, the budget is exhausted and finish() reports the limit.
    own_text, _ = ctx.budget.fit_text(own_text)
    return walker.out.finish(own_text=own_text)


def shown_headers(message: Message) -> list[tuple[str, str]]:
    """Return the decoded From, To, Cc, Date and Subject headers that the message has."""
    shown = []
    for name in SHOWN_HEADERS:
        try:
            value = message.get(name)
            text = str(value) if value is not None else ""
        except DECODE_ERRORS:
            text = decode_raw_header(message, name)
        text = " ".join(text.split())
        if text:
            shown.append((name, text))
    return shown


def decode_raw_header(message: Message, name: str) -> str:
    for key, raw in message.raw_items():
        if key.lower() == name.lower():
            try:
                return str(email.header.make_header(email.header.decode_header(str(raw))))
            except DECODE_ERRORS:
                return str(raw)
    return ""


class MessageWalker:
    """Walker of a MIME tree that collects body text and hands attachments to the container."""

    def __init__(self, out: ContainerOutput, ctx: ExtractionContext) -> None:
        self.out = out
        self.ctx = ctx
        self.body_parts: list[str] = []
        self.part_count = 0

    def walk(self, part: Message, *, text_wanted: bool) -> None:
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            self.ctx.budget.check()
            self.add_attached_message(part)
            return
        if part.is_multipart():
            if content_type == "multipart/encrypted":
                self.ctx.budget.check()
                self.out.reject(
                    self.part_name(part, "encrypted.asc"),
                    "PGP/MIME-encrypted content; this extractor cannot decrypt it",
                    status="encrypted",
                    mime_type=content_type,
                )
            elif content_type == "multipart/alternative":
                self.walk_alternative(part, text_wanted=text_wanted)
            else:
                for child in part.iter_parts() if isinstance(part, EmailMessage) else part.get_payload():
                    self.walk(child, text_wanted=text_wanted)
            return

        self.ctx.budget.check()
        if is_attachment(part) or not content_type.startswith("text/"):
            payload = part.get_payload(decode=True) or b""
            self.out.add(payload, self.part_name(part), declared_type=content_type)
        elif text_wanted:
            self.ctx.budget.charge_entry()
            self.body_parts.append(part_text(part).strip())

    def walk_alternative(self, part: Message, *, text_wanted: bool) -> None:
        """Take the body from the plain-text version, else the last one; walk all for files."""
        children = list(part.iter_parts()) if isinstance(part, EmailMessage) else part.get_payload()
        preferred = None
        for child in children:
            is_plain = child.get_content_type() == "text/plain" and not is_attachment(child)
            if is_plain and part_text(child).strip():
                preferred = child
                break
        if preferred is None and children:
            preferred = children[-1]

        for child in children:
            self.walk(child, text_wanted=text_wanted and child is preferred)

    def add_attached_message(self, part: Message) -> None:
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        name = self.part_name(part, "attached-message.eml")
        if isinstance(inner, Message):
            raw = attached_message_bytes(part, inner)
        else:
            raw = part.get_payload(decode=True) or b""
        self.out.add(raw, name, declared_type="message/rfc822")

    def part_name(self, part: Message, default: str | None = None) -> str:
        self.part_count += 1
        try:
            filename = part.get_filename()
        except DECODE_ERRORS:
            filename = None
        if filename:
            return filename.replace("/", "_")
        if default is not None:
            return default
        extension = mimetypes.guess_extension(part.get_content_type()) or ".bin"
        return f"part-{self.part_count}{extension}"


def is_attachment(part: Message) -> bool:
    """Return True for parts sent as files: disposition ``attachment``, or any with a file name."""
    try:
        return part.get_content_disposition() == "attachment" or bool(part.get_filename())
    except DECODE_ERRORS:
        return part.get_content_disposition() == "attachment"


def part_text(part: Message) -> str:
    """Decode a text part using its charset, and strip the markup of HTML parts."""
    try:
        content = part.get_content() if isinstance(part, EmailMessage) else None
    except DECODE_ERRORS:
        content = None
    if not isinstance(content, str):
        payload = part.get_payload(decode=True) or b""
        content = decode_text(payload, part.get_content_charset())
    if part.get_content_type() == "text/html":
        return html_to_text(content)
    return content


def attached_message_bytes(part: Message, inner: Message) -> bytes:
    """Return the bytes of an attached message, for extraction one level deeper.

    RFC 2046 forbids a transfer encoding on ``message/rfc822`` other than
    7bit, 8bit or binary, but some clients base64-encode it anyway. The email
    package then parses the encoded text as a message with no headers, so that
    text is decoded here.
    """
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    try:
        if encoding == "base64":
            return base64.b64decode("".join(inner.as_string().split()))
        if encoding == "quoted-printable":
            return quopri.decodestring(inner.as_string().lstrip("\n").encode("ascii", "replace"))
        return inner.as_bytes()
    except (binascii.Error, *DECODE_ERRORS):
        return inner.as_string().encode("utf-8", errors="surrogateescape")
