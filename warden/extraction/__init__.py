"""Turn attachments into text: a pipeline of named stages with one settings object.

``sniff`` decides the type from the content. Then one stage per kind turns
the bytes into text: PDF, image OCR, DOCX, XLSX, e-mail, zip, 7z, tar, RAR,
gzip/bzip2/xz, text and HTML. Archives and e-mails hand their members back to
the pipeline one level deeper, under one shared budget of bytes, entries,
depth, text and time.

Use :func:`extract_in_sandbox` for anything fetched from outside: it runs
the pipeline in a worker process with memory, CPU and wall-clock limits and
returns a result for every file. :func:`extract_bytes` runs it in-process.
The readers of each format are optional extras (``pdf``, ``office``,
``archives``, ``ocr``, ``magic``); see :mod:`warden.extraction.extras`.
"""

from warden.extraction.pipeline import EXTRACTOR_VERSION, extract_bytes
from warden.extraction.results import (
    FAILURE_STATUSES,
    BudgetUsage,
    ExtractionResult,
    ExtractionStatus,
    MemberResult,
    PageMethod,
    PageResult,
    TableResult,
)
from warden.extraction.run_budget import OcrRunBudget
from warden.extraction.sandbox import extract_in_sandbox
from warden.extraction.settings import ExtractionSettings

__all__ = [
    "EXTRACTOR_VERSION",
    "FAILURE_STATUSES",
    "BudgetUsage",
    "ExtractionResult",
    "ExtractionSettings",
    "ExtractionStatus",
    "MemberResult",
    "OcrRunBudget",
    "PageMethod",
    "PageResult",
    "TableResult",
    "extract_bytes",
    "extract_in_sandbox",
]
