"""Optical character recognition with tesseract, bounded by the budget's deadline."""

from __future__ import annotations

import math
import signal

import pytesseract
from PIL import Image

from warden.extraction.budget import ExtractionBudget, LimitExceeded

__all__ = ["fit_to_pixels", "ocr_image"]

MIN_OCR_SECONDS = 1.0


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

    Raises :class:`LimitExceeded` when the deadline leaves too little time, or
    when tesseract is killed for running past it.
    """
    settings = budget.settings
    budget.check()
    timeout_seconds = budget.remaining_seconds()
    if timeout_seconds < MIN_OCR_SECONDS:
        raise LimitExceeded(
            "timeout_seconds",
            f"Too little time was left for OCR (timeout_seconds={settings.timeout_seconds:g}). "
            "If the file is legitimate, raise timeout_seconds in the extraction settings.",
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
                "timeout_seconds",
                f"OCR ran past the deadline (timeout_seconds={settings.timeout_seconds:g}). "
                "If the file is legitimate, raise timeout_seconds in the extraction settings.",
            ) from exc
        raise
    return text.strip()
