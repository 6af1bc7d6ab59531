"""Optional packages: which extra of connector-warden installs each one.

Every reader of a format is optional, so that a machine can install only what
it extracts, e.g. ``pip install 'connector-warden[pdf,ocr]'``. A stage whose
package is missing returns ``unsupported`` with the install command, instead
of letting an ImportError escape. The ``extraction`` extra installs all five
(``pdf``, ``office``, ``archives``, ``ocr``, ``magic``). OCR also needs the
tesseract program, and ``magic`` the libmagic library, from the system.
"""

from __future__ import annotations

__all__ = ["EXTRA_BY_MODULE", "MissingExtra", "missing_extra"]

# Top-level module name -> extra that installs it.
EXTRA_BY_MODULE = {
    "pypdfium2": "pdf",
    "pdfplumber": "pdf",
    "pdfminer": "pdf",
    "docx": "office",
    "openpyxl": "office",
    "msoffcrypto": "office",
    "py7zr": "archives",
    "rarfile": "archives",
    "pytesseract": "ocr",
    "PIL": "ocr",
    "magic": "magic",
}


class MissingExtra(Exception):
    """An optional package needed for one file is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"the Python module '{module}' is not installed: install connector-warden[{extra}], "
            f"e.g. `pip install 'connector-warden[{extra}]'`"
        )
        self.module = module
        self.extra = extra


def missing_extra(exc: ImportError) -> MissingExtra | None:
    """Return the extra behind an ImportError of an optional package, or None for any other ImportError."""
    top_level = (exc.name or "").split(".", 1)[0]
    extra = EXTRA_BY_MODULE.get(top_level)
    return None if extra is None else MissingExtra(top_level, extra)
