"""Splitting raw messages into stored records."""

from email.message import EmailMessage

from warden.connectors.base import ItemRef
from warden.connectors.mime import message_record_from_raw


def build_message_with_nested_mail() -> bytes:
    inner = EmailMessage()
    inner["From"] = "inner@example.org"
    inner["Subject"] = "Inner"
    inner.set_content("inner body")
    inner.add_attachment(b"inner attachment", maintype="application", subtype="octet-stream", filename="in.bin")

    outer = EmailMessage()
    outer["From"] = "Alice <alice@example.org>"
    outer["To"] = "bob@example.org"
    outer["Subject"] = "Forwarded"
    outer["Message-ID"] = "<outer@example.org>"
    outer.set_content("See attached.")
    outer.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="report.pdf")
    outer.add_attachment(inner)
    return outer.as_bytes()


def test_attachments_and_body_split():
    record = message_record_from_raw(ItemRef(mailbox="INBOX", uid=7), build_message_with_nested_mail())
    assert record.uid == 7
    assert record.subject == "Forwarded"
    assert record.message_id == "<outer@example.org>"
    assert record.body_text.strip() == "See attached."
    assert [a.filename for a in record.attachments] == ["report.pdf", None]
    assert [a.declared_type for a in record.attachments] == ["application/pdf", "message/rfc822"]
    assert record.attachments[0].data == b"%PDF-1.4 fake"


def test_nested_message_kept_whole():
    record = message_record_from_raw(ItemRef(mailbox="INBOX", uid=1), build_message_with_nested_mail())
    nested = record.attachments[1].data
    assert b"Subject: Inner" in nested
    assert b"in.bin" in nested


def test_malformed_message_still_recorded():
    raw = b"Subject: =?broken?=\r\nFrom: <<<\r\n\r\nbody"
    record = message_record_from_raw(ItemRef(mailbox="INBOX", uid=2), raw)
    assert record.raw == raw
    assert record.attachments == []


def test_broken_base64_marked_failed():
    raw = (
        b"From: a@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\n'
        b'Content-Type: application/pdf; name="a.pdf"\r\nContent-Disposition: attachment; filename="a.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!!not base64 at all@@@@\r\n--B--\r\n"
    )
    record = message_record_from_raw(ItemRef(mailbox="INBOX", uid=3), raw)
    assert len(record.attachments) == 1
    assert "base64 transfer encoding is invalid" in record.attachments[0].error
    assert "InvalidBase64" in record.attachments[0].error
