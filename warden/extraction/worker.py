"""The sandboxed extraction worker: ``python -m warden.extraction.worker``.

Protocol, all over pipes (the attachment never touches the disk here):

* stdin: one line of JSON (``filename``, ``declared_type``, ``settings``,
  ``passwords`` in clear text, ``deadline_monotonic``, ``size``), then exactly
  ``size`` bytes of the attachment;
* stdout: one :class:`ExtractionResult` as JSON;
* stderr: log lines, which the parent keeps at DEBUG level.

The parent sets the resource limits on this process before it sends the
data; the worker sets them again itself, which can only lower them.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from typing import Any, BinaryIO

from warden.extraction.pipeline import run_pipeline
from warden.extraction.results import ExtractionResult
from warden.extraction.settings import ExtractionSettings

MAX_HEADER_BYTES = 1024 * 1024
CPU_HARD_LIMIT_EXTRA_SECONDS = 2


def apply_resource_limits(pid: int, settings: ExtractionSettings) -> None:
    """Set the address-space and CPU-time limits on process ``pid`` (0 for this process).

    The CPU soft limit sends SIGXCPU; the hard limit, a little later, SIGKILL.
    """
    memory = (settings.max_memory_bytes, settings.max_memory_bytes)
    cpu = (settings.max_cpu_seconds, settings.max_cpu_seconds + CPU_HARD_LIMIT_EXTRA_SECONDS)
    resource.prlimit(pid, resource.RLIMIT_AS, memory)
    resource.prlimit(pid, resource.RLIMIT_CPU, cpu)


def read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"expected {size} bytes of attachment data on stdin, got {len(data)}")
    return data


def out_of_memory_result(request: dict[str, Any], settings: ExtractionSettings) -> ExtractionResult:
    name = request.get("filename") or "the attachment"
    return ExtractionResult(
        status="too_large",
        mime_type=None,
        declared_type=request.get("declared_type"),
        filename=request.get("filename"),
        error=(
            f"Ran out of memory while extracting '{name}' (max_memory_bytes="
            f"{settings.max_memory_bytes}). If the file is legitimate, raise max_memory_bytes "
            "in the extraction settings."
        ),
    )


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    stdin = sys.stdin.buffer

    request = json.loads(stdin.readline(MAX_HEADER_BYTES))
    settings = ExtractionSettings.model_validate(request["settings"])
    apply_resource_limits(0, settings)

    try:
        data = read_exactly(stdin, int(request["size"]))
        result = run_pipeline(
            data,
            filename=request.get("filename"),
            declared_type=request.get("declared_type"),
            settings=settings,
            passwords=tuple(request.get("passwords") or ()),
            deadline_seconds=float(request["deadline_monotonic"]) - time.monotonic(),
        )
    except MemoryError:
        data = b""  # release the attachment before building the result
        result = out_of_memory_result(request, settings)

    sys.stdout.buffer.write(result.model_dump_json().encode("utf-8"))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
