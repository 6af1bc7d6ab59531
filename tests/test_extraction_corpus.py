"""Extraction of real public documents, asserted against the facts their sources state.

The files are read from the shared corpus (WARDEN_CORPUS_DIR, by default
``<repo>/../shared/corpus``); each test names the fact it checks. These run
the pipeline in-process with :func:`extract_bytes`; the hostile files go
through the sandbox in ``test_extraction_hostile.py``.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from warden.extraction import ExtractionResult, ExtractionSettings, extract_bytes, extract_in_sandbox

pytestmark = pytest.mark.corpus

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = Path(os.environ.get("WARDEN_CORPUS_DIR", REPO_ROOT.parent / "shared" / "corpus"))

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def corpus_bytes(relpath: str) -> bytes:
    path = CORPUS_DIR / relpath
    if not path.is_file():
        pytest.skip(f"corpus file {path} not found; set WARDEN_CORPUS_DIR to the corpus directory")
    return path.read_bytes()


def extract(relpath: str, *passwords: str, **settings: object) -> ExtractionResult:
    return extract_bytes(
        corpus_bytes(relpath),
        filename=Path(relpath).name,
        declared_type=None,
        settings=ExtractionSettings(**settings),
        passwords=[SecretStr(p) for p in passwords],
    )


def member_paths(result: ExtractionResult) -> list[str]:
    return [member.path for member in result.walk_members()]


def squeeze(text: str) -> str:
    """Return the text with table separators dropped and whitespace runs collapsed."""
    return " ".join(text.replace(" | ", " ").split())


# --- PDF -------------------------------------------------------------------


def test_pdf_text_layer_crazyones() -> None:
    result = extract("pdf/text/pypdf/crazyones.pdf")

    assert result.status == "ok"
    assert result.mime_type == "application/pdf"
    assert result.text.startswith("The Crazy Ones\nOctober 14, 1998\nHeres to the crazy ones.")
    assert [(page.number, page.method) for page in result.pages] == [(1, "text")]


def test_pdf_title_layout_parser_two_pages() -> None:
    result = extract("pdf/text/unstructured/layout-parser-paper-fast.pdf")

    assert len(result.pages) == 2
    assert result.text.startswith("LayoutParser: A Unified Toolkit for Deep\nLearning Based")
    assert {page.method for page in result.pages} == {"text"}


def test_pdf_identity_cmap_polish_text() -> None:
    result = extract("pdf/text/pdfminer/issue-625-identity-cmap.pdf")

    assert "Termin płatności: 2021-05-03" in result.text


def test_pdf_rotated_page_text() -> None:
    result = extract("pdf/text/unstructured/rotated-page-90.pdf")

    assert "Hello World" in result.text
    assert result.pages[0].method == "text"


def test_pdf_portfolio_members_extracted() -> None:
    result = extract("pdf/text/tika/testPDFPackage.pdf")

    assert "Adobe recommends using Adobe Reader" in result.text
    assert member_paths(result) == ["PDF1.pdf", "PDF2.pdf"]
    assert "--- PDF1.pdf ---\nPDF1" in result.text
    assert "--- PDF2.pdf ---\nPDF2" in result.text


def test_pdf_table_rows_chocolate_invoice() -> None:
    result = extract("pdf/tables/pdfplumber/issue-140-example.pdf")

    assert "0085648100300 | CENTRAL KMA | LILYS 55% DARK CHOC BAR | 415 | $ 0.61" in result.text


def test_pdf_table_drawn_with_curves() -> None:
    result = extract("pdf/tables/pdfplumber/table-curves-example.pdf")

    table_lines = [line for line in result.text.splitlines() if line.count(" | ") >= 2]
    assert any(line.split(" | ")[-2] == "Uncommon" for line in table_lines)


def test_pdf_nics_report_header() -> None:
    result = extract("pdf/tables/pdfplumber/nics-background-checks-2015-11.pdf")

    assert "November - 2015" in result.text


def test_pdf_scanned_page_needs_ocr() -> None:
    result = extract("pdf/scanned/tika/testOCR.pdf")

    assert result.text == "Happy New Year 2003!"
    assert [(page.number, page.method) for page in result.pages] == [(1, "ocr")]


def test_pdf_hidden_ocr_layer_not_reocred() -> None:
    result = extract("pdf/scanned/unstructured/pdf-with-ocr-text.pdf")

    assert [page.method for page in result.pages] == ["text"]


def test_pdf_scanned_page_ocr_disabled() -> None:
    result = extract("pdf/scanned/tika/testOCR.pdf", ocr_enabled=False)

    assert result.status == "partial"
    assert result.pages[0].method == "skipped"
    assert "ocr_enabled=False" in (result.error or "")


def test_pdf_empty_user_password_opens() -> None:
    result = extract("pdf/encrypted/tika/testPDF_protected.pdf")

    assert result.status == "ok"
    assert "RETHINKING THE FINANCIAL NETWORK" in result.text
    assert "On 16 November 2002" in result.text


@pytest.mark.parametrize(
    ("relpath", "password", "expected_text"),
    [
        ("pdf/encrypted/pypdf/encrypted-file.pdf", "test", "Example"),
        ("pdf/encrypted/tika/testPassword4Spaces.pdf", "    ", "Just some text."),
        (
            "pdf/encrypted/pypdf/r6-both-passwords.pdf",
            "foo",
            "pdf encryption test\npassword: asdfzxcv",
        ),
        (
            "pdf/encrypted/tika/testUnicodePassword.pdf",
            '  ! < > " \\ \u20ac \u0153 \u00a4 1\u20444 1\u20442 \U0002070e \U00029d98 \U0001f600  ',
            "Just some text.",
        ),
    ],
)
def test_pdf_encrypted_opens_with_password(relpath: str, password: str, expected_text: str) -> None:
    result = extract(relpath, "wrong-first", password)

    assert result.status == "ok"
    assert result.text == expected_text


def test_pdf_encrypted_without_password() -> None:
    result = extract("pdf/encrypted/pypdf/encrypted-file.pdf")

    assert result.status == "encrypted"
    assert result.text == ""
    assert "no passwords" in (result.error or "")


def test_pdf_encrypted_wrong_password() -> None:
    result = extract("pdf/encrypted/pypdf/encrypted-file.pdf", "qwerty")

    assert result.status == "encrypted"
    assert "none of the 1 passwords" in (result.error or "")


def test_pdf_empty_file_fails() -> None:
    result = extract("pdf/malformed/pdfplumber/empty.pdf")

    assert result.status == "malformed"
    assert result.mime_type == "application/x-empty"


# --- Images -----------------------------------------------------------------


def test_image_tiff_hello_google() -> None:
    result = extract("images/ocr/tesseract-test/HelloGoogle.tif")

    assert result.status == "ok"
    assert result.text == "Hello Google"
    assert [page.method for page in result.pages] == ["ocr"]


def test_image_jpeg_ocr_testing() -> None:
    result = extract("images/ocr/tika/testOCR.jpg")

    assert result.mime_type == "image/jpeg"
    assert "OCR Testing" in result.text


def test_image_multipage_tiff_page_two() -> None:
    result = extract("images/ocr/tika/testTIFF_multipage.tif")

    assert [(page.number, page.method) for page in result.pages] == [(1, "ocr"), (2, "ocr")]
    assert result.text.split("\n\n")[1].endswith("Page 2")


def test_image_ocr_page_allowance() -> None:
    result = extract("images/ocr/tika/testTIFF_multipage.tif", ocr_max_pages=1)

    assert [page.method for page in result.pages] == ["ocr", "skipped"]
    assert result.status == "partial"
    assert "ocr_max_pages=1" in (result.error or "")


def test_image_heic_unsupported() -> None:
    result = extract("images/ocr/unstructured/DA-1p.heic")

    assert result.status == "unsupported"
    assert result.mime_type == "image/heic"


# --- DOCX and XLSX ----------------------------------------------------------


def test_docx_tables_in_document_order() -> None:
    result = extract("office/docx/unstructured/docx-tables.docx")

    lines = result.text.splitlines()
    assert lines[:3] == [
        "Simple uniform table",
        "Header Col 1 | Header Col 2",
        "Lorem ipsum | A link example",
    ]
    assert "a | >b< | c" in lines


def test_docx_merged_cells_repeat() -> None:
    result = extract("office/docx/python-docx/tbl-cell-access.docx")

    cells = squeeze(result.text).split()
    assert cells[0:9] == ["1", "2", "3", "4", "5", "6", "7", "8", "9"]
    assert cells[9:18] == ["1", "2", "3", "4", "4", "6", "7", "8", "9"]
    assert cells[18:27] == ["1", "2", "3", "4", "5", "6", "7", "5", "9"]
    assert cells[27:36] == ["1", "2", "3", "4", "4", "6", "4", "4", "9"]


def test_docx_section_header_and_footer() -> None:
    result = extract("office/docx/python-docx/hdr-header-footer.docx")

    lines = result.text.splitlines()
    assert lines[0] == "Header for section-1"
    assert lines[-1] == "Footer for section 1"
    assert "section with header" in lines


def test_docx_text_box_content() -> None:
    result = extract("office/docx/tika/testWORD_text_box.docx")

    assert "This text is directly in the body of the document." in result.text
    assert "This text is inside of a text box in the body of the document." in result.text


def test_xlsx_stanley_cups_rows() -> None:
    result = extract("office/xlsx/unstructured/stanley-cups.xlsx")

    assert result.mime_type == XLSX_TYPE
    assert "[sheet Stanley Cups]" in result.text
    assert "Team Location Stanley Cups Blues STL 1 Flyers PHI 2 Maple Leafs TOR 13" in squeeze(result.text)


def test_xlsx_error_cells_column_a() -> None:
    result = extract("office/xlsx/calamine/errors.xlsx")

    sheet = result.text.split("[sheet Feuil1]\n", 1)[1].split("\n[sheet", 1)[0]
    assert sheet.splitlines() == [
        "#DIV/0!",
        "#NAME?",
        "#VALUE!",
        "#NULL!",
        "#REF!",
        "#NUM!",
        "#N/A",
    ]


def test_xlsx_table_float_value() -> None:
    result = extract("office/xlsx/calamine/temperature-table.xlsx")

    assert "celsius | 22.2222" in result.text.splitlines()
    assert "something | 12.5" in result.text.splitlines()


def test_xlsx_strict_ooxml_shared_strings() -> None:
    result = extract("office/xlsx/tika/testEXCEL.strict.xlsx")

    assert result.status == "partial"
    assert "Test spreadsheet" in result.text
    assert "This one is red" in result.text


@pytest.mark.parametrize(
    "relpath",
    [
        "office/legacy/tika/testWORD.doc",
        "office/legacy/unstructured/fake.doc",
        "office/legacy/calamine/date.xls",
        "office/legacy/tika/testEXCEL_95.xls",
        "email/msg/unstructured/fake-email.msg",
    ],
)
def test_legacy_office_unsupported(relpath: str) -> None:
    result = extract(relpath)

    assert result.status == "unsupported"
    assert result.text == ""
    assert "cannot be extracted" in (result.error or "")


def test_encrypted_xlsx_opens_with_password() -> None:
    result = extract("office/encrypted/tika/testEXCEL_protected_passtika_2.xlsx", "wrong-first", "tika")

    assert result.status == "ok"
    assert result.mime_type == XLSX_TYPE
    assert "This is an Encrypted Excel spreadsheet with a ChunkedCipherInputStream." in result.text


def test_encrypted_xlsx_without_password() -> None:
    result = extract("office/encrypted/tika/testEXCEL_protected_passtika_2.xlsx")

    assert result.status == "encrypted"
    assert result.mime_type == "application/encrypted"


# --- E-mail -----------------------------------------------------------------


def test_eml_from_and_subject_headers() -> None:
    result = extract("email/eml/tika/testRFC822")

    lines = result.text.splitlines()
    assert result.mime_type == "message/rfc822"
    assert 'From: "Julien Nioche (JIRA)" <jira@apache.org>' in lines
    assert "Subject: [jira] Commented: (TIKA-461) RFC822 messages not parsed" in lines


def test_eml_rfc2047_headers_decoded() -> None:
    result = extract("email/eml/tika/testRFC822_i18nheaders")

    assert "From: Keld Jørn Simonsen <keld@dkuug.dk>" in result.text
    assert "Subject: If you can read this you understand the example." in result.text


def test_eml_base64_latin1_body() -> None:
    result = extract("email/eml/tika/testRFC822_base64")

    assert "Here is some text, with international characters, voilà!" in result.text


def test_eml_windows_1255_body() -> None:
    result = extract("email/eml/unstructured/email-no-utf8-2008-07-16.062410.eml")

    assert "אני חושב שזה לא יהיה מקצועי והוגן שאני אראה לך היכן" in result.text


def test_eml_plain_alternative_elements() -> None:
    result = extract("email/eml/unstructured/fake-email.eml")

    for element in (
        "This is a test email to use for unit tests.",
        "Important points:",
        "Roses are red",
        "Violets are blue",
    ):
        assert element in result.text
    assert result.text.count("Roses are red") == 1


def test_eml_text_attachments_as_members() -> None:
    result = extract("email/eml/tika/testRFC822_multipart_attachments.eml")

    assert member_paths(result) == ["Test TxtA.txt", "Test TxtB.txt"]
    assert "--- Test TxtA.txt ---\nThis is Test TXTA File for parser" in result.text


def test_eml_nested_message_and_attachment() -> None:
    result = extract("email/eml/tika/testGroupWiseEml.eml")

    assert member_paths(result) == ["test.eml", "Neues Textdokument.txt"]
    assert "Subject: test2\n\ntest2" in result.text
    assert "--- Neues Textdokument.txt ---\nssssss" in result.text


def test_eml_zip_attachment_recursive() -> None:
    result = extract("email/eml/tika/testRFC822_normal_zip")

    assert member_paths(result) == ["test.zip", "test.zip/text.txt"]
    assert "Includes a normal, unencrypted zip file" in result.text
    assert "This is text inside an unencrypted zip file." in result.text


def test_eml_pgp_encrypted_not_crashing() -> None:
    result = extract("email/eml/unstructured/fake-encrypted.eml")

    assert result.mime_type == "message/rfc822"
    assert [member.status for member in result.members] == ["encrypted"]


# --- Archives ---------------------------------------------------------------


def test_7z_encrypted_with_password() -> None:
    result = extract("archives/7z/tika/test7Z_protected_passTika.7z", "Tika")

    assert result.status == "ok"
    assert member_paths(result) == ["text.txt"]
    assert "TEST DATA FOR TIKA." in result.text
    assert "This is text inside an encrypted 7zip (7z) file." in result.text


def test_7z_encrypted_wrong_password() -> None:
    result = extract("archives/7z/tika/test7Z_protected_passTika.7z", "not-it")

    assert result.status == "encrypted"
    assert result.text == ""


def test_7z_encrypted_headers_with_password() -> None:
    result = extract("archives/7z/recursive-extractor/TestDataEncrypted.7z", "TestData")

    assert result.status == "ok"
    assert len(member_paths(result)) == 3


def test_7z_unicode_member_name() -> None:
    result = extract("archives/7z/py7zr/umlaut-solid.7z")

    assert member_paths(result) == ["täst.txt"]


def test_7z_multivolume_part_fails() -> None:
    result = extract("archives/7z/py7zr/archive.7z.001")

    assert result.status == "malformed"
    assert "next header size 36 exceeds the archive size" in (result.error or "")


def test_zip_crypto_with_password() -> None:
    result = extract("archives/zip/recursive-extractor/TestDataEncryptedZipCrypto.zip", "TestData")

    assert result.status == "ok"
    assert [m.status for m in result.members] == ["ok", "ok", "ok"]


def test_zip_crypto_without_password() -> None:
    result = extract("archives/zip/recursive-extractor/TestDataEncryptedZipCrypto.zip")

    assert result.status == "encrypted"
    assert [m.status for m in result.members] == ["encrypted", "encrypted", "encrypted"]


def test_zip_nested_direct_members() -> None:
    result = extract("archives/zip/recursive-extractor/TestDataArchivesNested.zip")

    assert len(result.members) == 14
    assert "TestDataArchives/TestData.7z/TestData/Foo/Bar/Lorem.txt" in member_paths(result)


def test_tar_xz_three_files() -> None:
    result = extract("archives/tar/recursive-extractor/TestData.tar.xz")

    assert member_paths(result) == [
        "TestData.tar",
        "TestData.tar/TestData/Foo/Bar/Dolor.txt",
        "TestData.tar/TestData/Foo/Ipsum.txt",
        "TestData.tar/TestData/Lorem.txt",
    ]


def test_rar5_solid_two_members() -> None:
    result = extract("archives/rar/rarfile/rar5-solid.rar")

    assert result.status == "ok"
    assert [(m.path, m.chars) for m in result.members] == [
        ("stest1.txt", 2048),
        ("stest2.txt", 2048),
    ]


def test_rar_encrypted_data_reported() -> None:
    result = extract("archives/rar/rarfile/rar5-psw.rar", "password")

    assert result.status == "encrypted"
    assert [m.path for m in result.members] == ["stest1.txt", "stest2.txt"]


def test_rar_self_extractor_stub() -> None:
    result = extract("misc/wrong_ext/rarfile/rar5-crc.sfx")

    assert result.mime_type == "application/x-rar"
    assert [(m.path, m.chars) for m in result.members] == [
        ("stest1.txt", 2048),
        ("stest2.txt", 2048),
    ]


# --- Misnamed files are sniffed by content ----------------------------------


@pytest.mark.parametrize(
    ("relpath", "mime_type"),
    [
        ("misc/wrong_ext/renamed/7z-named-as.zip", "application/x-7z-compressed"),
        ("misc/wrong_ext/renamed/docx-named-as.pdf", DOCX_TYPE),
        ("misc/wrong_ext/renamed/pdf-named-as.docx", "application/pdf"),
        ("misc/wrong_ext/renamed/pdf-no-extension", "application/pdf"),
        ("misc/wrong_ext/renamed/png-named-as.jpg", "image/png"),
        ("misc/wrong_ext/renamed/rar-named-as.7z", "application/x-rar"),
        ("misc/wrong_ext/renamed/xls-named-as.xlsx", "application/vnd.ms-excel"),
        ("misc/wrong_ext/renamed/xlsx-named-as.xls", XLSX_TYPE),
        ("misc/wrong_ext/renamed/zip-named-as.docx", "application/zip"),
        ("misc/wrong_ext/unstructured/fake-email.txt", "message/rfc822"),
    ],
)
def test_misnamed_file_sniffed_by_content(relpath: str, mime_type: str) -> None:
    result = extract(relpath, ocr_enabled=False)

    assert result.mime_type == mime_type


def test_renamed_docx_header_footer() -> None:
    result = extract("misc/wrong_ext/renamed/docx-named-as.pdf")

    lines = result.text.splitlines()
    assert lines[0] == "This is the header for our document"
    assert lines[1] == "Sample Word Document Title"
    assert lines[-1] == "This is the footer for our document"


def test_renamed_pdf_without_extension() -> None:
    result = extract("misc/wrong_ext/renamed/pdf-no-extension")

    assert result.text.startswith("The Crazy Ones")


def test_renamed_plain_zip_not_docx() -> None:
    result = extract("misc/wrong_ext/renamed/zip-named-as.docx")

    assert member_paths(result) == ["ideas-page.html", "stanley-cups.csv"]


def test_renamed_xls_stays_unsupported() -> None:
    result = extract("misc/wrong_ext/renamed/xls-named-as.xlsx")

    assert result.status == "unsupported"


# --- Every row of the manifest, through the sandbox --------------------------
#
# Each row of MANIFEST.tsv goes through extract_in_sandbox once (two at a time),
# under memory and time limits, with the passwords its source documents. OCR runs
# at 150 dpi and at most 2 pages per file to keep the run short. Every row must
# have an entry in EXPECTED; `gap` names a fact of the source that this
# extractor does not meet yet, and why.

MIB = 1024 * 1024
MANIFEST_SETTINGS = ExtractionSettings(
    ocr_dpi=150,
    ocr_max_pixels=3_000_000,
    ocr_max_pages=2,
    timeout_seconds=60,
    max_memory_bytes=768 * MIB,
)
DOCUMENTED_PASSWORDS = {
    "archives/7z/py7zr/encrypted_1.7z": "secret",
    "archives/7z/py7zr/encrypted_2.7z": "secret",
    "archives/7z/py7zr/encrypted_3.7z": "secret",
    "archives/7z/recursive-extractor/EncryptedWithPlainNames.7z": "TestData",
    "archives/7z/recursive-extractor/TestDataEncrypted.7z": "TestData",
    "archives/7z/tika/test7Z_protected_passTika.7z": "Tika",
    "archives/rar/rarfile/rar202-comment-psw.rar": "password",
    "archives/rar/rarfile/rar3-comment-hpsw.rar": "password",
    "archives/rar/rarfile/rar3-comment-psw.rar": "password",
    "archives/rar/rarfile/rar5-psw.rar": "password",
    "archives/rar/recursive-extractor/EncryptedWithPlainNames.rar4": "TestData",
    "archives/rar/tika/test-documents-enc.rar": "ApacheTika",
    "archives/zip/recursive-extractor/TestDataEncryptedZipCrypto.zip": "TestData",
    "email/eml/tika/testRFC822_encrypted_zip": "test",
    "office/encrypted/tika/testEXCEL_protected_passtika_2.xlsx": "tika",
    "office/encrypted/tika/testWORD_protected_passtika.doc": "tika",
    "pdf/encrypted/pdfminer/rc4-40.pdf": "foo",
    "pdf/encrypted/pdfplumber/password-example.pdf": "test",
    "pdf/encrypted/pypdf/encrypted-file.pdf": "test",
    "pdf/encrypted/pypdf/libreoffice-writer-password.pdf": "openpassword",
    "pdf/encrypted/pypdf/r6-both-passwords.pdf": "foo",
    "pdf/encrypted/pypdf/r6-user-password.pdf": "asdfzxcv",
    "pdf/encrypted/tika/testPDF_no_extract_no_accessibility_owner_user.pdf": "user",
    "pdf/encrypted/tika/testPassword4Spaces.pdf": "    ",
}
RAR_DATA_GAP = "bsdtar, the RAR reader here, cannot decrypt RAR data"
OCR_LANGUAGE_GAP = "only the English tesseract model is installed"
PLAIN_ALTERNATIVE_GAP = "of multipart/alternative only the plain-text version is read, and the HTML differs"


@dataclass(frozen=True)
class Expect:
    """What one manifest row must give: its status, text fragments, type and member paths."""

    status: str
    text: tuple[str, ...] = ()
    mime_type: str | None = None
    members: tuple[str, ...] | None = None
    gap: str | None = None


def expect(status: str, *text: str, mime_type: str | None = None, members=None, gap: str | None = None) -> Expect:
    return Expect(status, tuple(text), mime_type, None if members is None else tuple(members), gap)


PDF = "application/pdf"
OLE_UNSUPPORTED = "cannot be extracted to text"
EXPECTED: dict[str, Expect] = {
    # 7z
    "archives/7z/py7zr/archive.7z.001": expect("malformed", gap="multi-volume 7z sets are not joined"),
    "archives/7z/py7zr/archive.7z.002": expect("unsupported", gap="multi-volume 7z sets are not joined"),
    "archives/7z/py7zr/bzip2_2.7z": expect("ok", "Region,Country,Item Type", members=["10000SalesRecords.csv"]),
    "archives/7z/py7zr/copy.7z": expect("ok", members=["test/test2.txt", "test1.txt"]),
    "archives/7z/py7zr/crc_corrupted.7z": expect("malformed", "CrcError"),
    "archives/7z/py7zr/data_corrupted.7z": expect("malformed", "LZMAError"),
    "archives/7z/py7zr/empty.7z": expect("ok", members=[]),
    "archives/7z/py7zr/encrypted_1.7z": expect("ok", members=["test1.txt", "test/test2.txt"]),
    "archives/7z/py7zr/encrypted_2.7z": expect("ok"),
    "archives/7z/py7zr/encrypted_3.7z": expect("ok"),
    "archives/7z/py7zr/extra_payload_data.7z": expect("ok", "bra bra bra", members=["src/bra.txt"]),
    "archives/7z/py7zr/lzma2_1.7z": expect("ok", members=["scripts/py7zr", "setup.cfg", "setup.py"]),
    "archives/7z/py7zr/mblock_1.7z": expect("ok", "7z interface"),
    "archives/7z/py7zr/solid.7z": expect("ok", members=["test/test2.txt", "test1.txt"]),
    "archives/7z/py7zr/umlaut-solid.7z": expect("ok", members=["täst.txt"]),
    "archives/7z/py7zr/zstd.7z": expect("ok", members=["scripts/py7zr", "setup.cfg", "setup.py"]),
    "archives/7z/recursive-extractor/EncryptedWithPlainNames.7z": expect("ok", "Lorem ipsum"),
    "archives/7z/recursive-extractor/TestDataEncrypted.7z": expect("ok", "Lorem ipsum"),
    "archives/7z/tika/test-documents.7z": expect("ok", "Test Indexation Html"),
    "archives/7z/tika/test7Z_protected_passTika.7z": expect("ok", "TEST DATA FOR TIKA.", "TIKA-1521"),
    # Hostile archives
    "archives/hostile/rarfile/rar5-evil-symlink-traversal.rar": expect("malformed", members=["up", "up/pwned.txt"]),
    "archives/hostile/recursive-extractor/10GB.gz.bz2": expect("too_large", "max_compression_ratio"),
    "archives/hostile/recursive-extractor/10GB.rar.bz2": expect("too_large", "max_compression_ratio"),
    "archives/hostile/recursive-extractor/10GB.xz.bz2": expect("too_large", "max_compression_ratio"),
    "archives/hostile/recursive-extractor/10GB.zip.bz2": expect("too_large", "max_compression_ratio"),
    "archives/hostile/recursive-extractor/zbsm.zip": expect("too_large", "max_compression_ratio"),
    "archives/hostile/snyk-zip-slip/zip-slip-win.tar": expect("partial", "this is a good one"),
    "archives/hostile/snyk-zip-slip/zip-slip-win.zip": expect("partial", "this is a good one"),
    "archives/hostile/snyk-zip-slip/zip-slip.tar": expect("partial", "this is a good one"),
    "archives/hostile/snyk-zip-slip/zip-slip.zip": expect("partial", "this is a good one"),
    # RAR
    "archives/rar/rarfile/rar15-comment.rar": expect("malformed", gap="libarchive cannot decompress RAR 1.5 data"),
    "archives/rar/rarfile/rar202-comment-psw.rar": expect("encrypted", gap=RAR_DATA_GAP),
    "archives/rar/rarfile/rar3-comment-hpsw.rar": expect(
        "encrypted", members=["file1.txt", "file2.txt"], gap=RAR_DATA_GAP
    ),
    "archives/rar/rarfile/rar3-comment-psw.rar": expect(
        "encrypted", members=["file1.txt", "file2.txt"], gap=RAR_DATA_GAP
    ),
    "archives/rar/rarfile/rar3-solid.rar": expect("partial", "000\n001", gap="libarchive reads no solid RAR 4 data"),
    "archives/rar/rarfile/rar5-psw.rar": expect("encrypted", members=["stest1.txt", "stest2.txt"], gap=RAR_DATA_GAP),
    "archives/rar/rarfile/rar5-solid.rar": expect("ok", members=["stest1.txt", "stest2.txt"]),
    "archives/rar/rarfile/rar5-vols.part1.rar": expect("malformed", members=["vols/bigfile.txt"]),
    "archives/rar/rarfile/rar5-vols.part2.rar": expect("ok", members=[]),
    "archives/rar/rarfile/rar5-vols.part3.rar": expect("ok", members=["vols/smallfile.txt"]),
    "archives/rar/rarfile/unicode.rar": expect("partial", members=["уииоотивл.txt", "𝐀𝐁𝐁𝐂.txt"]),
    "archives/rar/recursive-extractor/EncryptedWithPlainNames.rar4": expect("encrypted", gap=RAR_DATA_GAP),
    "archives/rar/tika/test-documents-enc.rar": expect("encrypted", "test-documents/testTXT.txt", gap=RAR_DATA_GAP),
    # tar and zip
    "archives/tar/recursive-extractor/TestData.tar.gz": expect("ok", "Lorem ipsum"),
    "archives/tar/recursive-extractor/TestData.tar.xz": expect("ok", "Lorem ipsum"),
    "archives/zip/recursive-extractor/TestDataArchivesNested.zip": expect("ok", "Lorem ipsum"),
    "archives/zip/recursive-extractor/TestDataEncryptedZipCrypto.zip": expect("ok", "Lorem ipsum"),
    "archives/zip/tika/test-documents-spanned.z01": expect("malformed", gap="split zips are not joined"),
    "archives/zip/tika/test-documents-spanned.zip": expect("unsupported", gap="split zips are not joined"),
    "archives/zip/tika/test-zip-of-zip.zip": expect(
        "ok", "--- html-within-zip.zip/text.html ---", members=["html-within-zip.zip"]
    ),
    "archives/zip/tika/testZipEntryNameCharsetShiftSJIS.zip": expect(
        "ok", gap="Shift_JIS names and text are decoded as cp437/cp1252"
    ),
    "archives/zip/tika/testZip_with_DataDescriptor.zip": expect(
        "malformed", members=["en0", "en1", "en2", "en3", "en4"], gap="zipfile rejects these local headers"
    ),
    "archives/zip/unstructured/simple.zip": expect("ok", members=["ideas-page.html", "stanley-cups.csv"]),
    # E-mail
    "email/eml/tika/testEML_embedded_xhtml_and_img.eml": expect(
        "ok", "Subject: This is the subject", mime_type="message/rfc822"
    ),
    "email/eml/tika/testGroupWiseEml.eml": expect(
        "ok", "Subject: test2\n\ntest2", "ssssss", members=["test.eml", "Neues Textdokument.txt"]
    ),
    "email/eml/tika/testRFC822": expect("ok", 'From: "Julien Nioche (JIRA)" <jira@apache.org>'),
    "email/eml/tika/testRFC822-mixed-simple": expect(
        "ok", "body 1", members=["Mary with cooler.jpeg", "mary-coffee.jpg"], gap=PLAIN_ALTERNATIVE_GAP
    ),
    "email/eml/tika/testRFC822-mixed-with-pdf-inline": expect(
        "ok", "From: John Smith", members=["tzora-titan-4-hummer-xl-manual.pdf"], gap=PLAIN_ALTERNATIVE_GAP
    ),
    "email/eml/tika/testRFC822-multipart": expect(
        "ok", "From: DigitalPebble <julien@digitalpebble.com>", members=["logo.gif"]
    ),
    "email/eml/tika/testRFC822_base64": expect("ok", "Here is some text, with international characters, voilà!"),
    "email/eml/tika/testRFC822_encrypted_zip": expect(
        "ok", "Includes encrypted zip file", 'password is "test".', "--- test.zip/text.txt ---", members=["test.zip"]
    ),
    "email/eml/tika/testRFC822_i18nheaders": expect("ok", "From: Keld Jørn Simonsen <keld@dkuug.dk>"),
    "email/eml/tika/testRFC822_multipart_attachments.eml": expect("ok", "This is Test TXTA File for parser"),
    "email/eml/tika/testRFC822_normal_zip": expect("ok", "Includes a normal, unencrypted zip file"),
    "email/eml/tika/testRFC822_oddfrom": expect(
        "ok", 'From: "Saved by Windows Internet Explorer 7"', "Air Permit Programs"
    ),
    "email/eml/tika/testRFC822_quoted": expect("ok", "From: Another Person <another.person@another-example.com>"),
    "email/eml/unstructured/email-inline-content-disposition.eml": expect("ok", "This is a test of inline"),
    "email/eml/unstructured/email-no-utf8-2008-07-16.062410.eml": expect("ok", "אני חושב שזה לא יהיה מקצועי והוגן"),
    "email/eml/unstructured/email-no-utf8-2014-03-17.111517.eml": expect(
        "ok", "Hi Slava,", "The password for your Google"
    ),
    "email/eml/unstructured/fake-email-b64.eml": expect(
        "ok", "This is a test email to use for unit tests.", "Roses are red"
    ),
    "email/eml/unstructured/fake-email-malformed-encoding.eml": expect(
        "ok", "This is a test email to use for unit tests."
    ),
    "email/eml/unstructured/fake-email.eml": expect("ok", "Important points:", "Violets are blue"),
    "email/eml/unstructured/fake-encrypted.eml": expect("partial", members=["encrypted.asc"]),
    "email/eml/unstructured/mime-attach-mp3.eml": expect(
        "ok", "This is an email with an MP3 attachment.", members=["sample-3s.mp3"]
    ),
    "email/eml/unstructured/mime-html-only.eml": expect(
        "ok", "This is a text/html part.", "Gmail was launched by Google in 2004"
    ),
    "email/eml/unstructured/mime-multipart-digest.eml": expect("ok", mime_type="message/rfc822"),
    "email/eml/unstructured/mime-no-body.eml": expect("partial", members=["image.jpg"]),
    "email/eml/unstructured/mime-word-encoded-subject.eml": expect(
        "ok", "Subject: Simple email with ☸☿ Unicode subject"
    ),
    "email/eml/unstructured/simple-rfc-822.eml": expect("ok", "This is an RFC 822 email message."),
    "email/msg/unstructured/fake-email-attachment.msg": expect("unsupported", OLE_UNSUPPORTED),
    "email/msg/unstructured/fake-email.msg": expect("unsupported", OLE_UNSUPPORTED),
    # Images
    "images/ocr/tesseract-test/8071_093.3B.tif": expect("ok", "wandered around the house", "injured"),
    "images/ocr/tesseract-test/8071_093.3B.txt": expect("ok", "SHE MOPED. She sighed. She", mime_type="text/plain"),
    "images/ocr/tesseract-test/HelloGoogle.tif": expect("ok", "Hello Google"),
    "images/ocr/tesseract-test/eurotext.tif": expect("ok", "The (quick) [brown] {fox} jumps!"),
    "images/ocr/tesseract-test/eurotext.txt": expect("ok", "The (quick) [brown] {fox} jumps!", mime_type="text/plain"),
    "images/ocr/tesseract-test/phototest-rotated-180.png": expect("ok", gap="pages are not turned upright before OCR"),
    "images/ocr/tesseract-test/raaj.tif": expect("ok", gap=OCR_LANGUAGE_GAP),
    "images/ocr/tesseract-test/viet.tif": expect("ok", gap=OCR_LANGUAGE_GAP),
    "images/ocr/tika/testOCR.jpg": expect("ok", "OCR Testing", mime_type="image/jpeg"),
    "images/ocr/tika/testOCR.png": expect("ok", "file contains"),
    "images/ocr/tika/testRotated+10.png": expect("ok", gap="skewed scans are not deskewed before OCR"),
    "images/ocr/tika/testRotated-10.png": expect("ok", gap="skewed scans are not deskewed before OCR"),
    "images/ocr/tika/testTIFF_multipage.tif": expect("ok", "Page 2"),
    "images/ocr/unstructured/DA-1p.heic": expect("unsupported", mime_type="image/heic"),
    "images/ocr/unstructured/chi_sim_image.jpeg": expect("ok", gap=OCR_LANGUAGE_GAP),
    "images/ocr/unstructured/english-and-korean.png": expect("ok", "RULES AND INSTRUCTIONS", gap=OCR_LANGUAGE_GAP),
    "images/ocr/unstructured/jpn-vert.jpeg": expect("ok", gap=OCR_LANGUAGE_GAP),
    "images/ocr/unstructured/layout-parser-paper-fast.jpg": expect("ok", "LayoutParser"),
    "images/ocr/unstructured/layout-parser-paper-fast.tiff": expect("ok", "LayoutParser", mime_type="image/tiff"),
    # Misnamed files
    "misc/wrong_ext/rarfile/rar3-seektest.sfx": expect("ok", members=["stest1.txt", "stest2.txt"]),
    "misc/wrong_ext/rarfile/rar5-crc.sfx": expect("ok", members=["stest1.txt", "stest2.txt"]),
    "misc/wrong_ext/renamed/7z-named-as.zip": expect("ok", mime_type="application/x-7z-compressed"),
    "misc/wrong_ext/renamed/docx-named-as.pdf": expect(
        "ok", "This is the header for our document", mime_type=DOCX_TYPE
    ),
    "misc/wrong_ext/renamed/pdf-named-as.docx": expect("ok", "Hello World", mime_type=PDF),
    "misc/wrong_ext/renamed/pdf-no-extension": expect("ok", "The Crazy Ones", mime_type=PDF),
    "misc/wrong_ext/renamed/png-named-as.jpg": expect("ok", "This is a lot of 12 point text", mime_type="image/png"),
    "misc/wrong_ext/renamed/rar-named-as.7z": expect("ok", mime_type="application/x-rar"),
    "misc/wrong_ext/renamed/xls-named-as.xlsx": expect("unsupported", mime_type="application/vnd.ms-excel"),
    "misc/wrong_ext/renamed/xlsx-named-as.xls": expect("ok", "2021-01-01", mime_type=XLSX_TYPE),
    "misc/wrong_ext/renamed/zip-named-as.docx": expect("ok", members=["ideas-page.html", "stanley-cups.csv"]),
    "misc/wrong_ext/unstructured/fake-email.txt": expect("ok", "Roses are red", mime_type="message/rfc822"),
    "misc/wrong_ext/unstructured/file_we_dont_want_imported": expect("ok", "wombat", mime_type="text/plain"),
    # DOCX
    "office/docx/python-docx/blk-containing-table.docx": expect("ok", mime_type=DOCX_TYPE),
    "office/docx/python-docx/comments-rich-para.docx": expect("ok", "Document text"),
    "office/docx/python-docx/doc-no-coreprops.docx": expect("ok", mime_type=DOCX_TYPE),
    "office/docx/python-docx/hdr-header-footer.docx": expect("ok", "Header for section-1", "Footer for section 1"),
    "office/docx/python-docx/sty-having-no-styles-part.docx": expect("ok", mime_type=DOCX_TYPE),
    "office/docx/python-docx/tbl-cell-access.docx": expect("ok", "1 | 2 | 3\n4 | 4 | 6"),
    "office/docx/tika/footnotes.docx": expect(
        "ok", "Eto ochen prostoy text so snoskoy", gap="footnotes and endnotes are not read"
    ),
    "office/docx/tika/headerPic.docx": expect("ok", mime_type=DOCX_TYPE),
    "office/docx/tika/testWORD_text_box.docx": expect(
        "ok", "This text is inside of a text box in the body of the document."
    ),
    "office/docx/tika/test_recursive_embedded.docx": expect(
        "ok", "embed_0", gap="embedded OLE objects are not extracted"
    ),
    "office/docx/unstructured/docx-shapes.docx": expect("ok", "Paragraph with floating shape attached."),
    "office/docx/unstructured/docx-tables.docx": expect(
        "ok", "Header Col 1 | Header Col 2", "Lorem ipsum | A link example"
    ),
    "office/docx/unstructured/example-list-items-multiple.docx": expect(
        "ok", "This is simply dummy text of the printing and typesetting industry."
    ),
    "office/docx/unstructured/page-breaks.docx": expect("ok", "First page"),
    "office/docx/unstructured/tables-with-incomplete-rows.docx": expect("ok", "Example of DOCX table"),
    "office/docx/unstructured/teams_chat.docx": expect(
        "ok", "0:0:0.0 --> 0:0:1.510\nSome Body\nOK. Yeah.", "saved-by | Dennis Forsythe"
    ),
    # Encrypted and legacy Office
    "office/encrypted/calamine/pass_protected.xlsx": expect("encrypted", mime_type="application/encrypted"),
    "office/encrypted/tika/testEXCEL_protected_passtika_2.xlsx": expect(
        "ok", "This is an Encrypted Excel spreadsheet with a ChunkedCipherInputStream.", mime_type=XLSX_TYPE
    ),
    "office/encrypted/tika/testWORD_protected_passtika.doc": expect("unsupported", OLE_UNSUPPORTED),
    "office/encrypted/unstructured/password_protected.xlsx": expect("encrypted", mime_type="application/encrypted"),
    "office/legacy/calamine/OOM_alloc3.xls": expect("unsupported", OLE_UNSUPPORTED),
    "office/legacy/calamine/any_sheets.ods": expect("unsupported", "OpenDocument files"),
    "office/legacy/calamine/any_sheets.xlsb": expect("unsupported", "binary Excel workbooks"),
    "office/legacy/calamine/date.xls": expect("unsupported", OLE_UNSUPPORTED),
    "office/legacy/calamine/too_small.xls": expect("ok", "Attachment", mime_type="text/plain"),
    "office/legacy/tika/testEXCEL_95.xls": expect("unsupported", OLE_UNSUPPORTED),
    "office/legacy/tika/testWORD.doc": expect("unsupported", OLE_UNSUPPORTED),
    "office/legacy/tika/testWORD6.doc": expect("unsupported", OLE_UNSUPPORTED),
    "office/legacy/unstructured/fake-power-point.pptx": expect("unsupported", "PowerPoint presentations"),
    "office/legacy/unstructured/fake.doc": expect("unsupported", OLE_UNSUPPORTED),
    # XLSX
    "office/xlsx/calamine/any_sheets.xlsx": expect("ok", "[sheet Visible]", "[sheet Hidden]", "[sheet VeryHidden]"),
    "office/xlsx/calamine/date_1904.xlsx": expect("ok", "2021-01-01"),
    "office/xlsx/calamine/empty_sheet.xlsx": expect("ok", "[sheet Sheet1]"),
    "office/xlsx/calamine/errors.xlsx": expect("ok", "#DIV/0!\n#NAME?\n#VALUE!\n#NULL!\n#REF!\n#NUM!\n#N/A"),
    "office/xlsx/calamine/issues.xlsx": expect("ok", "[sheet datatypes]", "[sheet spc_chrs]"),
    "office/xlsx/calamine/merged_range.xlsx": expect("ok", "[sheet Sheet1]", "[sheet Sheet2]"),
    "office/xlsx/calamine/picture.xlsx": expect("ok", "[sheet Sheet1]", "[sheet Sheet2]"),
    "office/xlsx/calamine/pivots.xlsx": expect("ok", "[sheet PivotSheet1]"),
    "office/xlsx/calamine/strict_iso_paths.xlsx": expect(
        "partial", "Thickness", gap="openpyxl reads no Strict OOXML sheets"
    ),
    "office/xlsx/calamine/temperature-table.xlsx": expect("ok", "celsius | 22.2222", "something"),
    "office/xlsx/calamine/vba.xlsm": expect("ok", mime_type=XLSX_TYPE, gap="VBA modules are not read"),
    "office/xlsx/tika/testEXCEL.strict.xlsx": expect("partial", "Test spreadsheet", "This one is red"),
    "office/xlsx/tika/testEXCEL_headers_footers.xlsx": expect("ok", "John Smith1"),
    "office/xlsx/unstructured/2023-half-year-analyses-by-segment.xlsx": expect("ok", "3. Analyses by segment"),
    "office/xlsx/unstructured/stanley-cups.xlsx": expect("ok", "[sheet Stanley Cups]", "[sheet Stanley Cups Since 67]"),
    "office/xlsx/unstructured/xlsx-subtable-cases.xlsx": expect("ok", "[sheet Sheet1]"),
    # Encrypted PDFs, opened with their documented passwords
    "pdf/encrypted/pdfminer/rc4-40.pdf": expect("ok", "Secret!"),
    "pdf/encrypted/pdfplumber/password-example.pdf": expect("ok", "Backup4all"),
    "pdf/encrypted/pypdf/encrypted-file.pdf": expect("ok", "Example"),
    "pdf/encrypted/pypdf/libreoffice-writer-password.pdf": expect("ok", "Lorem ipsum dolor sit amet"),
    "pdf/encrypted/pypdf/r6-both-passwords.pdf": expect("ok", "password: asdfzxcv"),
    "pdf/encrypted/pypdf/r6-user-password.pdf": expect("ok", "password: asdfzxcv"),
    "pdf/encrypted/tika/testPDF_no_extract_no_accessibility_owner_user.pdf": expect("ok", "Hello World"),
    "pdf/encrypted/tika/testPDF_protected.pdf": expect("ok", "RETHINKING THE FINANCIAL NETWORK", "On 16 November 2002"),
    "pdf/encrypted/tika/testPassword4Spaces.pdf": expect("ok", "Just some text."),
    "pdf/encrypted/tika/testUnicodePassword.pdf": expect(
        "encrypted", gap="its password is tested with extract_bytes above"
    ),
    "pdf/encrypted/unstructured/copy-protected.pdf": expect("ok", "LayoutParser: A Unified Toolkit for Deep"),
    # Hostile PDFs: a result, never a hang
    "pdf/hostile/pdfminer/issue-1113-evil-xobjects.pdf": expect("ok", "Hello world"),
    "pdf/hostile/pymupdf/circular-toc.pdf": expect("ok", "Page1"),
    "pdf/hostile/qpdf/issue-100.pdf": expect("malformed"),
    "pdf/hostile/qpdf/issue-117.pdf": expect("ok", mime_type=PDF),
    "pdf/hostile/qpdf/issue-146.pdf": expect("malformed"),
    "pdf/hostile/qpdf/issue-147.pdf": expect("ok", mime_type="text/plain"),
    "pdf/hostile/qpdf/issue-149.pdf": expect("ok", "bar"),
    "pdf/hostile/qpdf/issue-150.pdf": expect("ok", mime_type="text/plain"),
    "pdf/hostile/qpdf/issue-202.pdf": expect("ok", "Sample PDF Document"),
    "pdf/hostile/qpdf/pages-loop.pdf": expect("ok", "Potato"),
    "pdf/hostile/tika/testPDF_jsActionOnPage.pdf": expect("ok", mime_type=PDF),
    # Malformed PDFs
    "pdf/malformed/pdfplumber/empty.pdf": expect("malformed", mime_type="application/x-empty"),
    "pdf/malformed/qpdf/append-xref-loop.pdf": expect("ok", "Potato 0 new"),
    "pdf/malformed/qpdf/bad1.pdf": expect("ok", "oops", mime_type="text/plain"),
    "pdf/malformed/qpdf/bad2.pdf": expect("ok", "Potato"),
    "pdf/malformed/qpdf/bad40.pdf": expect("ok", "Potato"),
    "pdf/malformed/qpdf/bad7.pdf": expect("malformed", mime_type=PDF),
    "pdf/malformed/qpdf/damaged-stream.pdf": expect("ok", "Potato"),
    "pdf/malformed/unstructured/failure-after-repair.pdf": expect("ok", "A guide for people with cancer"),
    # Scanned PDFs
    "pdf/scanned/pdfminer/pdf-with-jbig2.pdf": expect("ok", mime_type=PDF),
    "pdf/scanned/pypdf/Seige_of_Vicksburg_Sample_OCR.pdf": expect("ok", "THE SIEGE OF VICKSBURG."),
    "pdf/scanned/pypdf/imagemagick-CCITTFaxDecode.pdf": expect("ok", mime_type=PDF),
    "pdf/scanned/tika/testOCR.pdf": expect("ok", "Happy New Year 2003!"),
    "pdf/scanned/tika/testPDF_JBIG2.pdf": expect("ok", "This is a sample file to test images compressed using JBIG2."),
    "pdf/scanned/unstructured/loremipsum-flat.pdf": expect("ok", "Lorem ipsum dolor sit amet"),
    "pdf/scanned/unstructured/pdf-with-ocr-text.pdf": expect("ok", mime_type=PDF),
    # PDF tables
    "pdf/tables/pdfplumber/issue-140-example.pdf": expect(
        "ok", "0085648100300 | CENTRAL KMA | LILYS 55% DARK CHOC BAR"
    ),
    "pdf/tables/pdfplumber/nics-background-checks-2015-11-rotated.pdf": expect("ok", "November - 2015"),
    "pdf/tables/pdfplumber/nics-background-checks-2015-11.pdf": expect("ok", "November - 2015"),
    "pdf/tables/pdfplumber/senate-expenditures.pdf": expect("ok", "DHAW20190070", "CITIBANK - TRAVEL CBA CARD"),
    "pdf/tables/pdfplumber/table-curves-example.pdf": expect("ok", "Uncommon"),
    "pdf/tables/pymupdf/small-table.pdf": expect("ok", "Boiling Points"),
    # Text PDFs
    "pdf/text/pdfminer/issue-625-identity-cmap.pdf": expect("ok", "Termin płatności: 2021-05-03"),
    "pdf/text/pdfminer/issue-791-non-unicode-cmap.pdf": expect(
        "ok", "prost", gap="English OCR of a page without Unicode map"
    ),
    "pdf/text/pdfminer/issue_566_test_1.pdf": expect("ok", "ISSUE Date", gap="PDFium maps two CJK glyphs differently"),
    "pdf/text/pdfminer/simple1.pdf": expect("ok", "Hello World"),
    "pdf/text/pdfminer/simple3.pdf": expect("ok", "Hello", gap="PDFium drops the Japanese glyphs"),
    "pdf/text/pdfplumber/2023-06-20-PV.pdf": expect("ok", "PROCÈS-VERBAL"),
    "pdf/text/pdfplumber/annotations.pdf": expect("ok", "Dummy PDF file"),
    "pdf/text/pdfplumber/issue-71-duplicate-chars.pdf": expect("ok", "计算机科学与技术"),
    "pdf/text/pdfplumber/scotus-transcript-p1.pdf": expect("ok", "Official"),
    "pdf/text/pymupdf/chinese-tables.pdf": expect("ok", "盐城高新区投资集团有限公司"),
    "pdf/text/pypdf/attachment.pdf": expect(
        "ok", "The Crazy Ones", gap="files attached by annotation are not extracted"
    ),
    "pdf/text/pypdf/crazyones.pdf": expect("ok", "The Crazy Ones\nOctober 14, 1998"),
    "pdf/text/pypdf/form.pdf": expect("ok", "foo"),
    "pdf/text/tika/testPDFPackage.pdf": expect(
        "ok", "Adobe recommends using Adobe Reader", members=["PDF1.pdf", "PDF2.pdf"]
    ),
    "pdf/text/unstructured/DA-619p.pdf": expect("ok", "Table of Contents"),
    "pdf/text/unstructured/layout-parser-paper-fast.pdf": expect("ok", "LayoutParser: A Unified Toolkit for Deep"),
    "pdf/text/unstructured/rotated-page-90.pdf": expect("ok", "Hello World"),
}


def manifest_relpaths() -> list[str]:
    manifest = CORPUS_DIR / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with open(manifest, newline="", encoding="utf-8") as handle:
        return [row["relpath"] for row in csv.DictReader(handle, delimiter="\t")]


def sandboxed_row(relpath: str) -> ExtractionResult:
    password = DOCUMENTED_PASSWORDS.get(relpath)
    return extract_in_sandbox(
        (CORPUS_DIR / relpath).read_bytes(),
        filename=Path(relpath).name,
        declared_type=None,
        settings=MANIFEST_SETTINGS,
        passwords=[SecretStr(password)] if password is not None else [],
    )


@pytest.fixture(scope="module")
def manifest_results() -> dict[str, ExtractionResult]:
    relpaths = manifest_relpaths()
    if not relpaths:
        pytest.skip(f"{CORPUS_DIR / 'MANIFEST.tsv'} not found; set WARDEN_CORPUS_DIR to the corpus directory")
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(relpaths, pool.map(sandboxed_row, relpaths), strict=True))


def test_manifest_rows_all_expected() -> None:
    relpaths = manifest_relpaths()
    if not relpaths:
        pytest.skip(f"{CORPUS_DIR / 'MANIFEST.tsv'} not found")

    assert sorted(set(relpaths) - set(EXPECTED)) == []
    assert sorted(set(EXPECTED) - set(relpaths)) == []


@pytest.mark.parametrize("relpath", sorted(EXPECTED))
def test_manifest_row(relpath: str, manifest_results: dict[str, ExtractionResult]) -> None:
    expected = EXPECTED[relpath]
    result = manifest_results[relpath]
    shown = result.text + "\n" + (result.error or "")

    assert result.status == expected.status, result.error
    assert result.worker_peak_rss_bytes is not None
    assert result.worker_peak_rss_bytes <= MANIFEST_SETTINGS.max_memory_bytes
    for fragment in expected.text:
        assert fragment in shown
    if expected.mime_type is not None:
        assert result.mime_type == expected.mime_type
    if expected.members is not None:
        assert tuple(member.path for member in result.members) == expected.members


def test_manifest_pdf_text_pages_skip_ocr(manifest_results: dict[str, ExtractionResult]) -> None:
    """No page with a usable text layer went to OCR anywhere in the corpus."""
    min_chars = MANIFEST_SETTINGS.ocr_min_text_chars
    ocr_on_text = [
        (relpath, page.number)
        for relpath, result in manifest_results.items()
        for page in result.pages
        if page.method == "ocr" and page.text_layer_chars > min_chars and "non-unicode-cmap" not in relpath
    ]

    assert ocr_on_text == []
