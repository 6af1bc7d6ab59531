"""Extraction of real public documents, asserted against the facts their sources state.

The files are read from the shared corpus (WARDEN_CORPUS_DIR, by default
``<repo>/../shared/corpus``); each test names the fact it checks. These run
the pipeline in-process with :func:`extract_bytes`; the hostile files go
through the sandbox in ``test_extraction_hostile.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from warden.extraction import ExtractionResult, ExtractionSettings, extract_bytes

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
        settings=ExtractionSettings(passwords=[SecretStr(p) for p in passwords], **settings),
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

    assert result.status == "failed"
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


def test_encrypted_xlsx_reported_encrypted() -> None:
    result = extract("office/encrypted/tika/testEXCEL_protected_passtika_2.xlsx", "tika")

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

    assert result.status == "failed"
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
