"""Measure the PDF fast path against pdfplumber's plain ``extract_text`` on the corpus's text PDFs.

Usage::

    python -m bench.extract                  # a readable table
    python -m bench.extract --json           # one JSON object
    python -m bench.extract --limit 2 --json # the first two files only

The corpus is read from ``--corpus``, else WARDEN_CORPUS_DIR, else
``<repo>/../shared/corpus``; the files are the rows of its ``MANIFEST.tsv``
under ``pdf/text/``. For each file, in this process and one file at a time:

- ours: :func:`warden.extraction.extract_bytes` with the default settings,
  OCR enabled (PDFium text layers, pdfplumber only for pages that draw lines);
- pdfplumber: ``page.extract_text()`` for every page, as a plain baseline.

Both are timed in CPU seconds of this process plus the children it waited
for (tesseract), so other load on the machine changes the figures less. ``ratio`` is ours over
pdfplumber in pages per CPU second. ``text_agreement`` is the share of
pdfplumber's words, after NFKC normalization, that our text contains as
well (counted with multiplicity). ``ocr_seconds_on_text_pages`` adds up the
OCR time our path spent on pages where pdfplumber found more than
``ocr_min_text_chars`` visible characters (listed in ``ocr_text_pages``): the
target is 0.
``peak_rss_bytes`` is this process's peak resident memory after our path ran
and before pdfplumber's did.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import resource
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warden.extraction import ExtractionResult, ExtractionSettings, extract_bytes

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXT_PDF_PREFIX = "pdf/text/"


@dataclass
class FileRun:
    relpath: str
    pages: int
    ours_cpu_seconds: float
    ours_text: str
    ocr_seconds_on_text_pages: float
    ocr_pages: list[tuple[int, float]] = field(default_factory=list)
    pdfplumber_cpu_seconds: float = 0.0
    pdfplumber_page_texts: list[str] = field(default_factory=list)


def corpus_dir(argument: str | None) -> Path:
    if argument:
        return Path(argument)
    return Path(os.environ.get("WARDEN_CORPUS_DIR", REPO_ROOT.parent / "shared" / "corpus"))


def text_pdfs(corpus: Path) -> list[str]:
    """Return the manifest's text PDFs, in manifest order."""
    with open(corpus / "MANIFEST.tsv", newline="", encoding="utf-8") as manifest:
        rows = csv.DictReader(manifest, delimiter="\t")
        return [row["relpath"] for row in rows if row["relpath"].startswith(TEXT_PDF_PREFIX)]


def cpu_seconds() -> float:
    """Return the CPU time of this process and of the children it waited for (tesseract)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_ours(data: bytes, name: str) -> tuple[ExtractionResult, float]:
    started = cpu_seconds()
    result = extract_bytes(data, filename=name, declared_type="application/pdf", settings=ExtractionSettings())
    return result, cpu_seconds() - started


def run_pdfplumber(data: bytes) -> tuple[list[str], float]:
    import pdfplumber

    started = cpu_seconds()
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        texts = []
        for page in pdf.pages:
            texts.append(page.extract_text() or "")
            page.close()
    return texts, cpu_seconds() - started


def visible_chars(text: str) -> int:
    return sum(1 for char in text if not char.isspace())


def words(text: str) -> Counter[str]:
    return Counter(unicodedata.normalize("NFKC", text).split())


def text_agreement(ours: str, reference: str) -> float:
    """Return the share of the reference's words that ours contains too, counted with multiplicity."""
    expected = words(reference)
    total = sum(expected.values())
    if total == 0:
        return 1.0
    found = words(ours)
    return sum(min(count, found[word]) for word, count in expected.items()) / total


def measure(corpus: Path, limit: int | None) -> dict[str, Any]:
    relpaths = text_pdfs(corpus)[:limit]
    runs: list[FileRun] = []
    for relpath in relpaths:
        data = (corpus / relpath).read_bytes()
        result, cpu_seconds = run_ours(data, Path(relpath).name)
        runs.append(
            FileRun(
                relpath=relpath,
                pages=len(result.pages),
                ours_cpu_seconds=cpu_seconds,
                ours_text=result.text,
                ocr_seconds_on_text_pages=0.0,
                ocr_pages=[(page.number, page.ocr_seconds) for page in result.pages if page.method == "ocr"],
            )
        )
    peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    min_text_chars = ExtractionSettings().ocr_min_text_chars
    ocr_text_pages: list[str] = []
    for run in runs:
        run.pdfplumber_page_texts, run.pdfplumber_cpu_seconds = run_pdfplumber((corpus / run.relpath).read_bytes())
        for number, seconds in run.ocr_pages:
            if visible_chars(run.pdfplumber_page_texts[number - 1]) > min_text_chars:
                run.ocr_seconds_on_text_pages += seconds
                ocr_text_pages.append(f"{run.relpath}#{number}")

    pages = sum(run.pages for run in runs)
    ours_seconds = sum(run.ours_cpu_seconds for run in runs)
    pdfplumber_seconds = sum(run.pdfplumber_cpu_seconds for run in runs)
    ours_rate = pages / ours_seconds if ours_seconds else 0.0
    pdfplumber_rate = pages / pdfplumber_seconds if pdfplumber_seconds else 0.0
    agreements = {run.relpath: text_agreement(run.ours_text, "\n".join(run.pdfplumber_page_texts)) for run in runs}
    reference = "\n".join("\n".join(run.pdfplumber_page_texts) for run in runs)
    return {
        "files": len(runs),
        "pages": pages,
        "timer": "cpu_seconds, tesseract included",
        "ours_cpu_seconds": round(ours_seconds, 3),
        "pdfplumber_cpu_seconds": round(pdfplumber_seconds, 3),
        "ours_pages_per_second": round(ours_rate, 1),
        "pdfplumber_pages_per_second": round(pdfplumber_rate, 1),
        "ratio": round(ours_rate / pdfplumber_rate, 1) if pdfplumber_rate else None,
        "text_agreement": round(text_agreement("\n".join(run.ours_text for run in runs), reference), 4),
        "text_agreement_min": round(min(agreements.values()), 4) if agreements else None,
        "text_agreement_min_file": min(agreements, key=agreements.get) if agreements else None,
        "ocr_seconds_on_text_pages": round(sum(run.ocr_seconds_on_text_pages for run in runs), 3),
        "ocr_text_pages": ocr_text_pages,
        "ocr_pages": sum(len(run.ocr_pages) for run in runs),
        "peak_rss_bytes": peak_rss_bytes,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.extract", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    parser.add_argument("--corpus", help="Corpus directory with MANIFEST.tsv (default: WARDEN_CORPUS_DIR).")
    parser.add_argument("--limit", type=int, default=None, help="Measure only the first N text PDFs.")
    args = parser.parse_args(argv)

    corpus = corpus_dir(args.corpus)
    if not (corpus / "MANIFEST.tsv").is_file():
        print(f"No MANIFEST.tsv in {corpus}; pass --corpus or set WARDEN_CORPUS_DIR.", file=sys.stderr)
        return 2

    figures = measure(corpus, args.limit)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:32} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
