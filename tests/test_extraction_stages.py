"""Single stages and budget limits, on small inputs built in the test.

These cover cases that no public corpus file shows on its own. They build a
spreadsheet that lies about its size, links and nesting made to order, and
inputs for each budget limit. They also check that passwords never come back
in a result or a log line.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import tarfile
import zipfile
from pathlib import Path

import openpyxl
import pytest
from pydantic import SecretStr

from warden.extraction import ExtractionSettings, extract_bytes, extract_in_sandbox
from warden.extraction.archives import check_member_path
from warden.extraction.sniff import XLSX_MIME, DocumentKind, sniff

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = Path(os.environ.get("WARDEN_CORPUS_DIR", REPO_ROOT.parent / "shared" / "corpus"))


def corpus_bytes(relative_path: str) -> bytes:
    """Return a corpus file's bytes, or skip the test when the corpus is not there."""
    path = CORPUS_DIR / relative_path
    if not path.is_file():
        pytest.skip(f"corpus file {path} not found; set WARDEN_CORPUS_DIR to the corpus directory")
    return path.read_bytes()


def extract(data: bytes, filename: str, **settings: object):
    return extract_bytes(data, filename=filename, declared_type=None, settings=ExtractionSettings(**settings))


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# --- Member paths -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected_path", "rejected_because"),
    [
        ("docs/report.txt", "docs/report.txt", None),
        ("./docs//report.txt", "docs/report.txt", None),
        ("docs\\report.txt", "docs/report.txt", None),
        ("../report.txt", None, "path traversal"),
        ("docs/../../report.txt", None, "path traversal"),
        ("..\\..\\Temp\\evil.txt", None, "path traversal"),
        ("/etc/passwd", None, "absolute member path"),
        ("C:\\Windows\\evil.dll", None, "absolute member path"),
        ("a\x00b", None, "NUL byte"),
    ],
)
def test_member_path_check(name: str, expected_path: str | None, rejected_because: str | None) -> None:
    path, reason = check_member_path(name)

    if rejected_because is None:
        assert reason is None
        assert path == expected_path
    else:
        assert reason is not None
        assert rejected_because in reason


def test_zip_symlink_member_rejected() -> None:
    link = zipfile.ZipInfo("up")
    link.external_attr = 0o120777 << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(link, "..")
        archive.writestr("up/pwned.txt", "should not be read")
        archive.writestr("ok.txt", "safe text")

    result = extract(buffer.getvalue(), "links.zip")

    statuses = {member.path: member.status for member in result.members}
    assert statuses == {"up": "malformed", "up/pwned.txt": "malformed", "ok.txt": "ok"}
    assert "should not be read" not in result.text
    assert "safe text" in result.text


def test_tar_hard_link_rejected() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = b"regular file"
        info = tarfile.TarInfo("file.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        hard = tarfile.TarInfo("hard")
        hard.type = tarfile.LNKTYPE
        hard.linkname = "/etc/shadow"
        archive.addfile(hard)

    result = extract(buffer.getvalue(), "links.tar")

    assert [(m.path, m.status) for m in result.members] == [("file.txt", "ok"), ("hard", "malformed")]
    assert "hard link to '/etc/shadow' rejected" in (result.members[1].error or "")


# --- Budget limits ----------------------------------------------------------


def nested_zip(depth: int) -> bytes:
    data = zip_of({"deepest.txt": b"bottom of the nest"})
    for level in range(depth - 1, 0, -1):
        data = zip_of({f"level{level}.zip": data})
    return data


def test_depth_limit_stops_nesting() -> None:
    result = extract(nested_zip(4), "nest.zip", max_depth=2)

    members = list(result.walk_members())
    assert [m.path for m in members] == [
        "level1.zip",
        "level1.zip/level2.zip",
        "level1.zip/level2.zip/level3.zip",
    ]
    assert members[-1].status == "too_large"
    assert "max_depth=2" in (members[-1].error or "")
    assert "bottom of the nest" not in result.text


def test_depth_within_limit_reads_all() -> None:
    result = extract(nested_zip(4), "nest.zip", max_depth=4)

    assert result.status == "ok"
    assert "bottom of the nest" in result.text


def test_entry_limit_stops_archive() -> None:
    archive = zip_of({f"file{number:02d}.txt": b"x" for number in range(20)})

    result = extract(archive, "many.zip", max_entries=5)

    assert result.status == "partial"
    assert len([m for m in result.members if m.status == "ok"]) == 5
    assert "max_entries=5" in (result.error or "")


def test_text_limit_cuts_text() -> None:
    result = extract(b"word " * 1000, "long.txt", max_text_chars=100)

    assert result.status == "partial"
    assert len(result.text) == 100
    assert "max_text_chars=100" in (result.error or "")


def test_ratio_limit_on_small_bomb() -> None:
    archive = zip_of({"zeros.bin": bytes(8 * 1024 * 1024)})

    result = extract(archive, "zeros.zip", compression_ratio_floor_bytes=0)

    assert result.status == "too_large"
    assert [m.status for m in result.members] == ["too_large"]
    assert "max_compression_ratio=100" in (result.error or "")


def test_declared_size_over_budget() -> None:
    archive = zip_of({"big.txt": b"a" * 4096, "small.txt": b"fits"})

    result = extract(archive, "sizes.zip", max_total_bytes=1000)

    assert [(m.path, m.status) for m in result.members] == [
        ("big.txt", "too_large"),
        ("small.txt", "ok"),
    ]
    assert "declares 4096 bytes" in (result.members[0].error or "")


# --- XLSX dimension lie -----------------------------------------------------


def xlsx_claiming_full_sheet() -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Claims"
    for row in (("north", 1), ("south", 2), ("east", 3), ("west", 4)):
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)

    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    patched = io.BytesIO()
    with source, zipfile.ZipFile(patched, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                assert b'<dimension ref="A1:B4"/>' in data
                data = data.replace(b'<dimension ref="A1:B4"/>', b'<dimension ref="A1:XFD1048576"/>')
            target.writestr(info.filename, data)
    return patched.getvalue()


class RowSpy:
    """Wrapper of openpyxl's read-only ``iter_rows`` that counts the rows and cells it yields.

    It raises once a sheet yields more than ``max_rows`` rows or a row wider
    than ``max_cells``, so that a regression fails at once instead of
    streaming a million padded rows.
    """

    def __init__(self, iter_rows, max_rows: int, max_cells: int) -> None:
        self.iter_rows = iter_rows
        self.max_rows = max_rows
        self.max_cells = max_cells
        self.rows = 0
        self.cells = 0

    def __call__(self, sheet, *args, **kwargs):
        for row in self.iter_rows(sheet, *args, **kwargs):
            self.rows += 1
            self.cells += len(row)
            if self.rows > self.max_rows or len(row) > self.max_cells:
                raise AssertionError(f"openpyxl yielded row {self.rows} with {len(row)} cells")
            yield row


def test_xlsx_lying_dimension_costs_four_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    from openpyxl.worksheet._read_only import ReadOnlyWorksheet

    spy = RowSpy(ReadOnlyWorksheet.iter_rows, max_rows=100, max_cells=100)
    monkeypatch.setattr(ReadOnlyWorksheet, "iter_rows", lambda sheet, *args, **kwargs: spy(sheet, *args, **kwargs))

    result = extract(xlsx_claiming_full_sheet(), "claims.xlsx")

    assert result.status == "ok"
    assert result.text.splitlines() == [
        "[sheet Claims]",
        "north | 1",
        "south | 2",
        "east | 3",
        "west | 4",
    ]
    assert (spy.rows, spy.cells) == (4, 8)
    assert result.tables[0].sheet == "Claims"
    assert result.tables[0].rows == [["north", "1"], ["south", "2"], ["east", "3"], ["west", "4"]]


# --- Sniffing ---------------------------------------------------------------


def test_sniff_email_without_known_first_header() -> None:
    message = b"X-Custom: 1\r\nSubject: hello\r\nFrom: a@example.org\r\n\r\nbody\r\n"

    sniffed = sniff(message, filename="note.txt", declared_type=None)

    assert sniffed.kind is DocumentKind.EMAIL
    assert sniffed.mime_type == "message/rfc822"


def test_sniff_plain_text_with_colon() -> None:
    sniffed = sniff(b"Note: call back tomorrow.\nThanks\n", filename="note.txt", declared_type=None)

    assert sniffed.kind is DocumentKind.TEXT


def test_sniff_ignores_misleading_declared_type() -> None:
    sniffed = sniff(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", filename="photo.jpg", declared_type="image/jpeg")

    assert sniffed.kind is DocumentKind.PDF


# --- Secrets ----------------------------------------------------------------


def test_passwords_absent_from_result_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    password = "hunter2-never-logged"
    archive = zip_of({"plain.txt": b"nothing secret here"})
    settings = ExtractionSettings()

    with caplog.at_level(logging.DEBUG, logger="warden"):
        result = extract_in_sandbox(
            archive, filename="a.zip", declared_type=None, settings=settings, passwords=[SecretStr(password)]
        )

    assert result.status == "ok"
    assert password not in result.model_dump_json()
    assert password not in settings.model_dump_json()
    assert all(password not in record.getMessage() for record in caplog.records)


# --- Optional extras ----------------------------------------------------------


def hide_module(monkeypatch: pytest.MonkeyPatch, module: str, *stages: str) -> None:
    """Make ``import module`` fail as if its extra were not installed, and forget the stages that import it."""
    monkeypatch.setitem(sys.modules, module, None)
    for stage in stages:
        monkeypatch.delitem(sys.modules, stage, raising=False)


def test_missing_pdf_extra_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_module(monkeypatch, "pypdfium2", "warden.extraction.pdf")

    result = extract(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "scan.pdf")

    assert result.status == "unsupported"
    assert "install connector-warden[pdf]" in (result.error or "")


def test_missing_office_extra_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_module(monkeypatch, "openpyxl", "warden.extraction.office")

    result = extract(xlsx_claiming_full_sheet(), "claims.xlsx")

    assert result.status == "unsupported"
    assert "install connector-warden[office]" in (result.error or "")


def test_missing_ocr_extra_keeps_pdf_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from warden.extraction.pdf import pdf_to_text  # noqa: F401  (loaded before OCR is hidden)

    hide_module(monkeypatch, "pytesseract", "warden.extraction.ocr")
    scan = corpus_bytes("pdf/scanned/tika/testOCR.pdf")

    result = extract(scan, "scan.pdf")

    assert result.status == "partial"
    assert [page.method for page in result.pages] == ["skipped"]
    assert "install connector-warden[ocr]" in (result.error or "")


def test_missing_archives_extra_in_zip(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_module(monkeypatch, "py7zr", "warden.extraction.sevenzip")
    inner = corpus_bytes("archives/7z/py7zr/copy.7z")

    result = extract(zip_of({"inner.7z": inner, "note.txt": b"readable"}), "outer.zip")

    assert result.status == "ok"
    assert [(m.path, m.status) for m in result.members] == [("inner.7z", "unsupported"), ("note.txt", "ok")]
    assert "install connector-warden[archives]" in (result.members[0].error or "")


@pytest.mark.parametrize(
    ("relpath", "mime_type"),
    [
        ("pdf/text/pypdf/crazyones.pdf", "application/pdf"),
        ("archives/7z/py7zr/copy.7z", "application/x-7z-compressed"),
        ("archives/rar/rarfile/rar5-solid.rar", "application/x-rar"),
        ("images/ocr/tika/testOCR.png", "image/png"),
        ("images/ocr/tesseract-test/HelloGoogle.tif", "image/tiff"),
        ("office/xlsx/unstructured/stanley-cups.xlsx", XLSX_MIME),
        ("office/legacy/tika/testWORD.doc", "application/msword"),
        ("office/encrypted/tika/testEXCEL_protected_passtika_2.xlsx", "application/encrypted"),
        ("email/eml/tika/testRFC822_base64", "message/rfc822"),
        ("archives/tar/recursive-extractor/TestData.tar.xz", "application/x-xz"),
    ],
)
def test_sniff_without_libmagic(relpath: str, mime_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("warden.extraction.sniff.magic", None)
    data = corpus_bytes(relpath)

    sniffed = sniff(data, filename=None, declared_type=None)

    assert sniffed.mime_type == mime_type


# --- Benchmark ----------------------------------------------------------------


def test_bench_extract_json_keys(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.extract import main

    if not (CORPUS_DIR / "MANIFEST.tsv").is_file():
        pytest.skip(f"{CORPUS_DIR / 'MANIFEST.tsv'} not found; set WARDEN_CORPUS_DIR to the corpus directory")
    exit_code = main(["--json", "--limit", "2", "--corpus", str(CORPUS_DIR)])

    figures = json.loads(capsys.readouterr().out)
    assert exit_code == 0
    assert figures["files"] == 2
    for key in (
        "ours_pages_per_second",
        "pdfplumber_pages_per_second",
        "ratio",
        "text_agreement",
        "ocr_seconds_on_text_pages",
        "peak_rss_bytes",
    ):
        assert key in figures
    assert figures["pages"] >= 2
