"""Hostile inputs and resource limits, all through the sandboxed worker.

Traversal archives must not write outside their root; in fact nothing is
written at all. Decompression bombs must stop on the budget within seconds,
and hostile PDFs must not take the caller down. A worker that hits its
memory, time, CPU or output limit must come back as a failed result that
names the limit.
"""

from __future__ import annotations

import os
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from warden.extraction import ExtractionResult, ExtractionSettings, extract_in_sandbox
from warden.extraction.budget import READ_CHUNK_BYTES

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = Path(os.environ.get("WARDEN_CORPUS_DIR", REPO_ROOT.parent / "shared" / "corpus"))
MIB = 1024 * 1024


def corpus_bytes(relpath: str) -> bytes:
    path = CORPUS_DIR / relpath
    if not path.is_file():
        pytest.skip(f"corpus file {path} not found; set WARDEN_CORPUS_DIR to the corpus directory")
    return path.read_bytes()


def sandboxed(relpath: str, **settings: object) -> ExtractionResult:
    return extract_in_sandbox(
        corpus_bytes(relpath),
        filename=Path(relpath).name,
        declared_type=None,
        settings=ExtractionSettings(**settings),
    )


@pytest.fixture
def no_leftover_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if the sandbox leaves temporary files or writes /tmp/evil.txt.

    The sandbox's working directory is moved into ``tmp_path``, which must be
    empty again afterwards.
    """
    evil = Path("/tmp/evil.txt")
    evil_existed = evil.exists()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield
    assert list(tmp_path.iterdir()) == []
    assert evil.exists() == evil_existed


# --- Traversal --------------------------------------------------------------


@pytest.mark.parametrize(
    "relpath",
    [
        "archives/hostile/snyk-zip-slip/zip-slip.zip",
        "archives/hostile/snyk-zip-slip/zip-slip.tar",
        "archives/hostile/snyk-zip-slip/zip-slip-win.zip",
        "archives/hostile/snyk-zip-slip/zip-slip-win.tar",
    ],
)
def test_zip_slip_member_rejected(relpath: str, no_leftover_files: None) -> None:
    result = sandboxed(relpath)

    good, evil = result.members
    assert result.status == "partial"
    assert (good.path, good.status) == ("good.txt", "ok")
    assert evil.status == "malformed"
    assert evil.path.replace("\\", "/").endswith("/evil.txt")
    assert "path traversal rejected" in (evil.error or "")
    assert "evil" not in result.text


def test_rar_symlink_trick_rejected(no_leftover_files: None) -> None:
    result = sandboxed("archives/hostile/rarfile/rar5-evil-symlink-traversal.rar")

    link, through = result.members
    assert result.status == "malformed"
    assert (link.path, link.status) == ("up", "malformed")
    assert "link to '..' rejected" in (link.error or "")
    assert (through.path, through.status) == ("up/pwned.txt", "malformed")
    assert "runs through the rejected link 'up'" in (through.error or "")
    assert "ZIPSLIP-VIA-SYMLINK-OK" not in result.text


# --- Decompression bombs ----------------------------------------------------


def test_zbsm_overlap_bomb_stopped_by_ratio(no_leftover_files: None) -> None:
    result = sandboxed("archives/hostile/recursive-extractor/zbsm.zip", max_memory_bytes=512 * MIB)

    assert result.status == "too_large"
    assert "max_compression_ratio=100" in (result.error or "")
    assert result.usage.bytes_written <= 100 * 42_374 + READ_CHUNK_BYTES


def test_zbsm_overlap_bomb_stopped_by_total(no_leftover_files: None) -> None:
    result = sandboxed(
        "archives/hostile/recursive-extractor/zbsm.zip",
        max_compression_ratio=1e9,
        max_total_bytes=64 * MIB,
        max_memory_bytes=512 * MIB,
    )

    over_budget = [m for m in result.members if "left of max_total_bytes" in (m.error or "")]
    assert result.status == "too_large"
    assert len(result.members) == 250
    assert len(over_budget) >= 240
    assert result.usage.bytes_written <= 64 * MIB


def test_bz2_zip_bomb_stopped_by_ratio(no_leftover_files: None) -> None:
    result = sandboxed("archives/hostile/recursive-extractor/10GB.zip.bz2")

    assert result.status == "too_large"
    assert [(m.path, m.status) for m in result.members] == [("10GB.zip", "too_large")]
    assert "'10GB.zip.bz2' expanded from 428 bytes" in (result.error or "")
    assert result.usage.bytes_written <= 1 * MIB + READ_CHUNK_BYTES


def test_bz2_gzip_bomb_stopped_by_total(no_leftover_files: None) -> None:
    result = sandboxed(
        "archives/hostile/recursive-extractor/10GB.gz.bz2",
        max_compression_ratio=1e9,
        max_total_bytes=48 * MIB,
        max_memory_bytes=512 * MIB,
    )

    assert result.status == "too_large"
    assert f"max_total_bytes={48 * MIB}" in (result.error or "")
    assert result.usage.bytes_written <= 48 * MIB + READ_CHUNK_BYTES


# --- Hostile and malformed PDFs ---------------------------------------------

HOSTILE_PDFS = [
    "pdf/hostile/pdfminer/issue-1113-evil-xobjects.pdf",
    "pdf/hostile/pymupdf/circular-toc.pdf",
    "pdf/hostile/qpdf/issue-100.pdf",
    "pdf/hostile/qpdf/issue-117.pdf",
    "pdf/hostile/qpdf/issue-146.pdf",
    "pdf/hostile/qpdf/issue-147.pdf",
    "pdf/hostile/qpdf/issue-149.pdf",
    "pdf/hostile/qpdf/issue-150.pdf",
    "pdf/hostile/qpdf/issue-202.pdf",
    "pdf/hostile/qpdf/pages-loop.pdf",
    "pdf/hostile/tika/testPDF_jsActionOnPage.pdf",
]


@pytest.mark.parametrize("relpath", HOSTILE_PDFS)
def test_hostile_pdf_returns_result(relpath: str) -> None:
    result = sandboxed(relpath, ocr_enabled=False, timeout_seconds=30)

    assert isinstance(result, ExtractionResult)
    assert result.status != "timeout"
    assert "timed out" not in (result.error or "")


def test_hostile_pdf_xobject_loop_text() -> None:
    result = sandboxed("pdf/hostile/pdfminer/issue-1113-evil-xobjects.pdf")

    assert result.status == "ok"
    assert result.pages[0].method == "text"


def test_damaged_pdf_fails_cleanly() -> None:
    result = sandboxed("pdf/hostile/qpdf/issue-146.pdf")

    assert result.status == "malformed"
    assert result.error is not None
    assert result.error.startswith("Could not read 'issue-146.pdf' as a PDF: PdfiumError")


# --- Worker limits ----------------------------------------------------------


def gzip_of_zeros(size_bytes: int) -> bytes:
    """Return a gzip stream of ``size_bytes`` zero bytes, built without holding them."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    chunk = bytes(MIB)
    parts = [compressor.compress(chunk) for _ in range(size_bytes // MIB)]
    parts.append(compressor.flush())
    return b"".join(parts)


def test_worker_over_memory_limit(no_leftover_files: None) -> None:
    data = gzip_of_zeros(400 * MIB)

    result = extract_in_sandbox(
        data,
        filename="zeros.bin.gz",
        declared_type="application/gzip",
        settings=ExtractionSettings(
            max_memory_bytes=256 * MIB,
            max_total_bytes=1024 * MIB,
            max_compression_ratio=1e9,
        ),
    )

    assert result.status == "too_large"
    assert "memory" in (result.error or "")
    assert "max_memory_bytes" in (result.error or "")


def test_worker_timeout_kills_group(no_leftover_files: None) -> None:
    # A new interpreter needs longer than 0.05 s to start, so the hard limit strikes first.
    result = extract_in_sandbox(
        b"plain text",
        filename="note.txt",
        declared_type="text/plain",
        settings=ExtractionSettings(timeout_seconds=0.05, fork_server=False),
    )

    assert result.status == "timeout"
    assert "Extraction of 'note.txt' timed out after 0.05 s (timeout_seconds)" in (result.error or "")


def test_worker_cpu_limit_on_ocr() -> None:
    result = sandboxed("images/ocr/tesseract-test/8071_093.3B.tif", max_cpu_seconds=1)

    assert result.status == "timeout"
    assert "max_cpu_seconds=1" in (result.error or "")


def test_worker_output_cap(no_leftover_files: None) -> None:
    result = extract_in_sandbox(
        b"lorem ipsum " * 2000,
        filename="long.txt",
        declared_type="text/plain",
        settings=ExtractionSettings(max_output_bytes=4096),
    )

    assert result.status == "too_large"
    assert "more than 4096 bytes (max_output_bytes)" in (result.error or "")


def test_sandbox_matches_in_process_text() -> None:
    result = sandboxed("email/eml/tika/testGroupWiseEml.eml")

    assert result.status == "ok"
    assert result.filename == "testGroupWiseEml.eml"
    assert [m.path for m in result.walk_members()] == ["test.eml", "Neues Textdokument.txt"]


def live_tesseract_pids() -> set[int]:
    """Return the pids of running tesseract processes; killed ones may linger as zombies."""
    return {
        process.pid
        for process in psutil.process_iter(["name", "status"])
        if process.info["name"] == "tesseract" and process.info["status"] != psutil.STATUS_ZOMBIE
    }


def test_timeout_kills_tesseract_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the worker's own deadline pushed past the hard limit, the group kill must end OCR."""
    before = live_tesseract_pids()
    monkeypatch.setattr("warden.extraction.sandbox.worker_deadline_margin_seconds", lambda timeout_seconds: -60.0)

    result = sandboxed("images/ocr/tesseract-test/8071_093.3B.tif", timeout_seconds=1.5)
    time.sleep(0.2)

    assert result.status == "timeout"
    assert "timed out after 1.5 s" in (result.error or "")
    assert live_tesseract_pids() - before == set()
