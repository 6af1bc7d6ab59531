"""Background extraction: idle detection, deferred attachments in a real SQLite store, and the flow.

A sync stores attachments that need OCR as ``deferred``; the background batch
extracts them again with OCR while the machine is idle.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from warden.extraction import ExtractionSettings, OcrRunBudget, extract_bytes
from warden.extraction.background import (
    DEFERRED_STATUS,
    IdlePolicy,
    busy_reason,
    extract_deferred_batch,
    stored_status,
)
from warden.store.documents import AttachmentRecord, DocumentStore, MessageRecord

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = Path(os.environ.get("WARDEN_CORPUS_DIR", REPO_ROOT.parent / "shared" / "corpus"))
SCANNED_PDF = "pdf/scanned/tika/testOCR.pdf"
TEXT_PDF = "pdf/text/pypdf/crazyones.pdf"
NOON = datetime(2026, 3, 2, 12, 0)


def corpus_bytes(relpath: str) -> bytes:
    path = CORPUS_DIR / relpath
    if not path.is_file():
        pytest.skip(f"corpus file {path} not found; set WARDEN_CORPUS_DIR to the corpus directory")
    return path.read_bytes()


@pytest.fixture
def store(tmp_path: Path):
    documents = DocumentStore(f"sqlite:///{tmp_path / 'store.db'}")
    yield documents
    documents.close()


def save_attachments(store: DocumentStore, account: str, *relpaths: str) -> None:
    attachments = [
        AttachmentRecord(part_index=index, filename=Path(relpath).name, declared_type=None, data=corpus_bytes(relpath))
        for index, relpath in enumerate(relpaths)
    ]
    message = MessageRecord(
        mailbox="INBOX",
        uidvalidity=1,
        uid=1,
        raw=b"Subject: scans\r\n\r\nsee attachments",
        message_id="<scans@example.org>",
        subject="scans",
        sender="a@example.org",
        sent_at=None,
        body_text="see attachments",
        attachments=attachments,
    )
    store.save_message(account, message)


def sync_extract(store: DocumentStore, account: str) -> None:
    """Do what the sync's extract step does with defer_ocr: fast text now, OCR left for later."""
    settings = ExtractionSettings(defer_ocr=True)
    for item in store.pending_attachments(account):
        result = extract_bytes(item.data, filename=item.filename, declared_type=None, settings=settings)
        store.record_extraction(
            item.id,
            status=stored_status(result),
            mime_type=result.mime_type,
            text=result.text,
            error=result.error,
            details=result.model_dump(mode="json", exclude={"text"}),
        )


def in_process(data: bytes, **kwargs):
    return extract_bytes(data, **kwargs)


def rows_by_name(store: DocumentStore, account: str) -> dict[str, dict]:
    return {row["filename"]: row for row in store.attachments_for(account)}


# --- Idle detection -----------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "hour", "load", "own_load", "busy_because"),
    [
        (IdlePolicy(max_load_per_cpu=0.5), 12, 0.2, 0.0, None),
        (IdlePolicy(max_load_per_cpu=0.5), 12, 0.9, 0.0, "above max_load_per_cpu=0.5"),
        (IdlePolicy(max_load_per_cpu=0.5), 12, 0.9, 0.5, None),
        (IdlePolicy(idle_hours=(22, 7)), 23, 0.0, 0.0, None),
        (IdlePolicy(idle_hours=(22, 7)), 3, 0.0, 0.0, None),
        (IdlePolicy(idle_hours=(22, 7)), 12, 0.0, 0.0, "outside the idle hours 22-07"),
        (IdlePolicy(idle_hours=(9, 17)), 17, 0.0, 0.0, "outside the idle hours 09-17"),
    ],
)
def test_busy_reason(policy: IdlePolicy, hour: int, load: float, own_load: float, busy_because: str | None) -> None:
    reason = busy_reason(policy, now=NOON.replace(hour=hour), load=load, own_load=own_load)

    if busy_because is None:
        assert reason is None
    else:
        assert reason is not None
        assert busy_because in reason


# --- Deferral during the sync -------------------------------------------------


def test_defer_ocr_keeps_text_layers() -> None:
    settings = ExtractionSettings(defer_ocr=True)

    scanned = extract_bytes(corpus_bytes(SCANNED_PDF), filename="scan.pdf", declared_type=None, settings=settings)
    text = extract_bytes(corpus_bytes(TEXT_PDF), filename="text.pdf", declared_type=None, settings=settings)

    assert scanned.deferred is True
    assert [page.method for page in scanned.pages] == ["deferred"]
    assert scanned.usage.ocr_pages == 0
    assert stored_status(scanned) == DEFERRED_STATUS
    assert text.deferred is False
    assert stored_status(text) == "ok"


# --- Batches ------------------------------------------------------------------


def test_batch_ocrs_deferred_scan(store: DocumentStore) -> None:
    save_attachments(store, "alice", SCANNED_PDF, TEXT_PDF)
    sync_extract(store, "alice")
    assert store.pending_counts(status=DEFERRED_STATUS) == {"alice": 1}

    report = extract_deferred_batch(
        store,
        ExtractionSettings(),
        policy=IdlePolicy(max_load_per_cpu=0.5),
        batch_size=10,
        run_budget=OcrRunBudget(max_pages=10, max_seconds=120),
        measure_load=lambda: 0.0,
        clock=lambda: NOON,
        extract=in_process,
    )

    rows = rows_by_name(store, "alice")
    assert (report.extracted, report.left_deferred, report.stopped_reason) == (1, 0, None)
    assert report.ocr_pages == 1
    assert rows["testOCR.pdf"]["status"] == "ok"
    assert rows["testOCR.pdf"]["text"] == "Happy New Year 2003!"
    assert rows["testOCR.pdf"]["details"]["pages"][0]["method"] == "ocr"
    assert rows["crazyones.pdf"]["status"] == "ok"
    assert store.pending_counts(status=DEFERRED_STATUS) == {}


def test_batch_waits_while_busy(store: DocumentStore) -> None:
    save_attachments(store, "alice", SCANNED_PDF)
    sync_extract(store, "alice")

    report = extract_deferred_batch(
        store,
        ExtractionSettings(),
        policy=IdlePolicy(max_load_per_cpu=0.5),
        batch_size=10,
        run_budget=OcrRunBudget(max_pages=10, max_seconds=120),
        measure_load=lambda: 1.5,
        clock=lambda: NOON,
        extract=in_process,
    )

    assert report.extracted == 0
    assert "above max_load_per_cpu=0.5" in (report.stopped_reason or "")
    assert store.pending_counts(status=DEFERRED_STATUS) == {"alice": 1}


def test_batch_stops_at_ocr_allowance(store: DocumentStore) -> None:
    save_attachments(store, "alice", SCANNED_PDF, SCANNED_PDF)
    sync_extract(store, "alice")

    report = extract_deferred_batch(
        store,
        ExtractionSettings(),
        policy=IdlePolicy(max_load_per_cpu=0.5),
        batch_size=10,
        run_budget=OcrRunBudget(max_pages=1, max_seconds=120),
        measure_load=lambda: 0.0,
        clock=lambda: NOON,
        extract=in_process,
    )

    assert report.extracted == 1
    assert "OCR allowance (1 pages" in (report.stopped_reason or "")
    assert store.pending_counts(status=DEFERRED_STATUS) == {"alice": 1}


def test_run_budget_defers_when_used_up() -> None:
    run_budget = OcrRunBudget(max_pages=1, max_seconds=60)
    settings = ExtractionSettings()

    first = extract_bytes(
        corpus_bytes(SCANNED_PDF), filename="a.pdf", declared_type=None, settings=run_budget.settings_for(settings)
    )
    run_budget.charge(first)
    second = extract_bytes(
        corpus_bytes(SCANNED_PDF), filename="b.pdf", declared_type=None, settings=run_budget.settings_for(settings)
    )

    assert first.usage.ocr_pages == 1
    assert run_budget.exhausted is True
    assert second.deferred is True
    assert second.usage.ocr_pages == 0


def test_background_worker_runs_niced() -> None:
    from warden.extraction import extract_in_sandbox

    result = extract_in_sandbox(
        b"plain text", filename="a.txt", declared_type=None, settings=ExtractionSettings(background_priority=True)
    )

    assert result.status == "ok"
    assert result.worker_peak_rss_bytes is not None


# --- The flow -----------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.asyncio(loop_scope="session")
async def test_flow_extracts_deferred(prefect_server, store: DocumentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import background

    save_attachments(store, "alice", SCANNED_PDF)
    sync_extract(store, "alice")
    monkeypatch.setattr(background, "default_document_store", lambda: store)

    report = await background.background_extraction(batch_size=5, max_load_per_cpu=1000.0)

    assert report["extracted"] == 1
    assert report["ocr_pages"] == 1
    assert rows_by_name(store, "alice")["testOCR.pdf"]["status"] == "ok"


@pytest.mark.stack
@pytest.mark.asyncio(loop_scope="session")
async def test_flow_skips_outside_idle_hours(
    prefect_server, store: DocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import background

    save_attachments(store, "alice", SCANNED_PDF)
    sync_extract(store, "alice")
    monkeypatch.setattr(background, "default_document_store", lambda: store)
    hour = datetime.now().hour
    closed_window = ((hour + 1) % 24, (hour + 2) % 24)

    report = await background.background_extraction(max_load_per_cpu=1000.0, idle_hours=closed_window)

    assert report["extracted"] == 0
    assert "outside the idle hours" in report["stopped_reason"]
    assert store.pending_counts(status=DEFERRED_STATUS) == {"alice": 1}
