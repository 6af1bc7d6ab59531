"""The generated demo documents and messages: stable bytes, and text that extraction finds."""

from __future__ import annotations

import email
import email.policy
import time

import pytest

from warden.demo.documents import DemoDocument, build_demo_documents, build_demo_messages
from warden.extraction import ExtractionResult, ExtractionSettings, extract_in_sandbox

DOCUMENTS = build_demo_documents()
OCR_DOCUMENTS = {"scanned-receipt.png", "scanned-delivery-note.pdf"}


@pytest.fixture(scope="module")
def extracted() -> dict[str, ExtractionResult]:
    settings = ExtractionSettings()
    return {
        document.filename: extract_in_sandbox(
            document.data,
            filename=document.filename,
            declared_type=document.content_type,
            settings=settings,
        )
        for document in DOCUMENTS
    }


def test_demo_documents_cover_eight_kinds() -> None:
    assert [document.content_type for document in DOCUMENTS] == [
        "application/pdf",
        "application/pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "image/png",
        "application/pdf",
        "application/zip",
        "message/rfc822",
    ]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda document: document.filename)
def test_demo_document_expected_words(document: DemoDocument, extracted: dict[str, ExtractionResult]) -> None:
    result = extracted[document.filename]

    assert result.status == "ok", result.error
    for word in document.expected_words:
        assert word in result.text


@pytest.mark.parametrize("filename", sorted(OCR_DOCUMENTS))
def test_demo_scan_read_by_ocr(filename: str, extracted: dict[str, ExtractionResult]) -> None:
    result = extracted[filename]

    assert [page.method for page in result.pages] == ["ocr"]


def test_demo_text_pdf_skips_ocr(extracted: dict[str, ExtractionResult]) -> None:
    result = extracted["quarterly-report.pdf"]

    assert [page.method for page in result.pages] == ["text"]


def test_demo_table_pdf_rows_rendered(extracted: dict[str, ExtractionResult]) -> None:
    result = extracted["invoice-table.pdf"]

    assert "Gearbox | 2 | 725.00 | 1450.00" in result.text.splitlines()


def test_demo_zip_contains_docx(extracted: dict[str, ExtractionResult]) -> None:
    result = extracted["document-bundle.zip"]

    assert [(m.path, m.status) for m in result.members] == [
        ("bundle/MANIFEST.txt", "ok"),
        ("bundle/project-plan.docx", "ok"),
    ]


def test_demo_eml_carries_pdf(extracted: dict[str, ExtractionResult]) -> None:
    result = extracted["forwarded-invoice.eml"]

    assert [(m.path, m.mime_type) for m in result.members] == [("invoice-table.pdf", "application/pdf")]


def test_demo_documents_deterministic() -> None:
    from warden.demo import documents

    time.sleep(1.1)  # a timestamp taken from the clock would now differ by a second
    documents._demo_documents.cache_clear()
    rebuilt = build_demo_documents()

    assert [document.data for document in rebuilt] == [document.data for document in DOCUMENTS]


def test_demo_messages_stable_and_unique() -> None:
    first = build_demo_messages("inbox@example.org", "sender@example.org")
    second = build_demo_messages("inbox@example.org", "sender@example.org")

    message_ids = [message["Message-ID"] for message in first]
    assert len(first) >= 10
    assert len(set(message_ids)) == len(first)
    assert [message.as_bytes() for message in first] == [message.as_bytes() for message in second]


def test_demo_messages_attachment_mix() -> None:
    messages = build_demo_messages("inbox@example.org", "sender@example.org")

    attachment_counts = [len(list(message.iter_attachments())) for message in messages]
    assert attachment_counts.count(0) >= 2
    assert max(attachment_counts) >= 3
    assert sum(1 for count in attachment_counts if count) >= 8


def test_demo_message_eml_as_rfc822() -> None:
    messages = build_demo_messages("inbox@example.org", "sender@example.org")

    attached = [
        part
        for message in messages
        for part in message.iter_attachments()
        if part.get_content_type() == "message/rfc822"
    ]
    assert len(attached) == 1
    assert attached[0].get_filename() == "forwarded-invoice.eml"


def test_demo_message_roundtrip_extraction() -> None:
    messages = build_demo_messages("inbox@example.org", "sender@example.org")
    forwarded = next(m for m in messages if "HERON-9154" in m["Subject"])
    parsed = email.message_from_bytes(forwarded.as_bytes(), policy=email.policy.default)

    result = extract_in_sandbox(
        parsed.as_bytes(),
        filename="forwarded.eml",
        declared_type="message/rfc822",
        settings=ExtractionSettings(),
    )

    assert result.status == "ok"
    assert [m.path for m in result.walk_members()] == [
        "forwarded-invoice.eml",
        "forwarded-invoice.eml/invoice-table.pdf",
    ]
    assert "BLUEFIN-2208" in result.text
