"""Optical character recognition with tesseract, bounded by the budget's deadline and OCR seconds.

Importing this module needs the ``ocr`` extra (pytesseract and Pillow); the
stages import it only when a page or image needs OCR.
"""

from __future__ import annotations

import math
import signal

import pytesseract
from PIL import Image

from warden.extraction.budget import ExtractionBudget, LimitExceeded

__all__ = ["OCR_ERRORS", "fit_to_pixels", "ocr_image"]

MIN_OCR_SECONDS = 1.0
# Failures of tesseract itself that leave the rest of a document readable.
OCR_ERRORS = (pytesseract.TesseractError, pytesseract.TesseractNotFoundError, OSError)


def fit_to_pixels(image: Image.Image, max_pixels: int) -> Image.Image:
    """Return ``image`` scaled down, keeping its aspect ratio, to at most ``max_pixels``."""
    pixels = image.width * image.height
    if pixels <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / pixels)
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def prepare_for_ocr(image: Image.Image, max_pixels: int) -> Image.Image:
    """Flatten transparency onto white and convert to RGB or greyscale for tesseract.

    Transparent pixels of an RGBA scan are black underneath; left as they are,
    tesseract reads black text on a black page.
    """
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        image = background
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return fit_to_pixels(image, max_pixels)


def ocr_image(image: Image.Image, budget: ExtractionBudget) -> str:
    """Return the text tesseract reads in ``image``.

    Raises :class:`LimitExceeded` when the deadline or ``ocr_max_seconds``
    leaves too little time, or when tesseract is killed for running past it.
    The caller charges the seconds spent to ``budget.ocr_seconds``.
    """
    settings = budget.settings
    budget.check()
    ocr_seconds_left = budget.ocr_seconds_left()
    timeout_seconds = min(budget.remaining_seconds(), ocr_seconds_left)
    limit = "ocr_max_seconds" if ocr_seconds_left < budget.remaining_seconds() else "timeout_seconds"
    limit_value = settings.ocr_max_seconds if limit == "ocr_max_seconds" else settings.timeout_seconds
    if timeout_seconds < MIN_OCR_SECONDS:
        raise LimitExceeded(
            limit,
            f"Too little time was left for OCR ({limit}={limit_value:g}). "
            f"If the file is legitimate, raise {limit} in the extraction settings.",
        )

    prepared = prepare_for_ocr(image, settings.ocr_max_pixels)
    try:
        text = pytesseract.image_to_string(prepared, lang=settings.ocr_language, timeout=timeout_seconds)
    except pytesseract.TesseractError as exc:
        if exc.status in (-signal.SIGXCPU, -signal.SIGKILL):
            raise LimitExceeded(
                "max_cpu_seconds",
                f"tesseract used up its CPU time (max_cpu_seconds={settings.max_cpu_seconds}) "
                "and was stopped. If the file is legitimate, raise max_cpu_seconds in the "
                "extraction settings.",
            ) from exc
        raise
    except RuntimeError as exc:
        # pytesseract raises a bare RuntimeError when it kills tesseract at the timeout.
        if "timeout" in str(exc).lower():
            raise LimitExceeded(
                limit,
                f"OCR ran past its time ({limit}={limit_value:g}). "
                f"If the file is legitimate, raise {limit} in the extraction settings.",
            ) from exc
        raise
    return text.strip()
