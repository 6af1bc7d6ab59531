"""Read a session exported elsewhere and normalise it into a :class:`SessionState`, or reject it.

Accepted shapes:

- Playwright's ``storage_state`` JSON: an object with ``cookies`` (a list) and
  ``origins``; ``cookies`` may be missing only when ``origins`` carry the login;
- a bare cookie array, as browser extensions such as Cookie-Editor export it
  (``expirationDate``, ``hostOnly``, ``session``, ``sameSite`` spelled
  ``no_restriction``/``lax``/``strict``/``unspecified``).

Normalisation keeps session cookies (``expires: -1``), turns any other negative
or zero expiry into a session cookie, drops cookies that expired already, and
maps ``sameSite`` to Playwright's ``Strict``/``Lax``/``None``. Every rejection
names the file, the cookie and the field, before any browser starts.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from warden.errors import InvalidSessionFile
from warden.sessions.state import SessionState

__all__ = ["ImportReport", "load_session_file", "normalize_session_data"]

logger = logging.getLogger("warden.sessions")

_SAME_SITE = {
    "strict": "Strict",
    "lax": "Lax",
    "none": "None",
    "no_restriction": "None",
    "unspecified": "Lax",
}


class ImportReport:
    """Changes normalisation made to an imported session, for the person importing."""

    def __init__(self) -> None:
        self.kept_session_cookies: list[str] = []
        self.converted_to_session: list[str] = []
        self.dropped_expired: list[str] = []
        self.source_shape = ""

    def lines(self) -> list[str]:
        lines = [f"shape: {self.source_shape}"]
        if self.converted_to_session:
            lines.append(f"negative or zero expiry, kept as session cookies: {', '.join(self.converted_to_session)}")
        if self.dropped_expired:
            lines.append(f"already expired, dropped: {', '.join(self.dropped_expired)}")
        return lines


def _cookie_label(cookie: dict[str, Any], index: int) -> str:
    name = cookie.get("name")
    return f"cookie {index} ({name!r})" if isinstance(name, str) else f"cookie {index}"


def _normalize_cookie(
    cookie: Any, index: int, *, source: str, now: float, report: ImportReport
) -> dict[str, Any] | None:
    if not isinstance(cookie, dict):
        raise InvalidSessionFile(f"{source}: {_cookie_label({}, index)} is a {type(cookie).__name__}, not an object.")
    label = _cookie_label(cookie, index)

    for field in ("name", "value", "domain"):
        if not isinstance(cookie.get(field), str):
            raise InvalidSessionFile(
                f"{source}: {label} has no '{field}' string. Export the session again with its cookies' "
                "names, values and domains."
            )
    if not cookie["name"]:
        raise InvalidSessionFile(f"{source}: {label} has an empty name.")

    # Browser extensions write expirationDate and a session flag; Playwright writes expires.
    if cookie.get("session") is True:
        expires: Any = -1
    elif "expires" in cookie:
        expires = cookie["expires"]
    else:
        expires = cookie.get("expirationDate", -1)
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        raise InvalidSessionFile(f"{source}: {label} has expires={expires!r}; expected a Unix time in seconds or -1.")

    if expires == -1:
        report.kept_session_cookies.append(cookie["name"])
    elif expires <= 0:
        report.converted_to_session.append(cookie["name"])
        expires = -1
    elif expires < now:
        report.dropped_expired.append(cookie["name"])
        return None

    same_site_raw = cookie.get("sameSite", "Lax")
    same_site = _SAME_SITE.get(str(same_site_raw).lower()) if same_site_raw is not None else "None"
    if same_site is None:
        raise InvalidSessionFile(f"{source}: {label} has sameSite={same_site_raw!r}; expected Strict, Lax or None.")

    domain = cookie["domain"]
    if cookie.get("hostOnly") is True:
        domain = domain.lstrip(".")

    return {
        "name": cookie["name"],
        "value": cookie["value"],
        "domain": domain,
        "path": cookie.get("path") or "/",
        "expires": float(expires),
        "httpOnly": bool(cookie.get("httpOnly", False)),
        "secure": bool(cookie.get("secure", False)),
        "sameSite": same_site,
    }


def normalize_session_data(data: Any, *, source: str, now: float | None = None) -> tuple[SessionState, ImportReport]:
    """Return the session in ``data`` in the project's shape and what was changed; raise on a bad shape."""
    now = time.time() if now is None else now
    report = ImportReport()

    if isinstance(data, list):
        report.source_shape = "bare cookie array (browser extension export)"
        raw_cookies: Any = data
        origins: Any = []
        session_storage: Any = {}
    elif isinstance(data, dict):
        report.source_shape = "Playwright storage state"
        raw_cookies = data.get("cookies")
        origins = data.get("origins", [])
        session_storage = data.get("session_storage", data.get("sessionStorage", {}))
        if raw_cookies is None:
            if not origins:
                raise InvalidSessionFile(
                    f"{source}: no 'cookies' and no 'origins': nothing that could carry a login. "
                    "Export the storage state again, e.g. with Playwright's context.storage_state()."
                )
            raw_cookies = []
        if isinstance(raw_cookies, dict):
            keys = ", ".join(sorted(map(str, raw_cookies))[:5])
            raise InvalidSessionFile(
                f"{source}: 'cookies' is an object (keys: {keys}), but must be a list of cookie objects with "
                "name, value and domain. Export the cookies as a list."
            )
        if not isinstance(raw_cookies, list):
            raise InvalidSessionFile(f"{source}: 'cookies' is a {type(raw_cookies).__name__}; expected a list.")
        if not isinstance(origins, list):
            raise InvalidSessionFile(f"{source}: 'origins' is a {type(origins).__name__}; expected a list.")
    else:
        raise InvalidSessionFile(
            f"{source}: the file contains a JSON {type(data).__name__}; "
            "expected a storage state object or a cookie array."
        )

    cookies = []
    for index, cookie in enumerate(raw_cookies):
        normalized = _normalize_cookie(cookie, index, source=source, now=now, report=report)
        if normalized is not None:
            cookies.append(normalized)

    try:
        state = SessionState.model_validate(
            {"cookies": cookies, "origins": origins, "session_storage": session_storage or {}}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise InvalidSessionFile(f"{source}: invalid value at '{location}': {first['msg']}.") from exc

    if not state.cookies and not state.origins:
        raise InvalidSessionFile(
            f"{source}: every cookie in the file has expired and it has no web storage. Export a fresh session."
        )
    return state, report


def load_session_file(path: Path) -> tuple[SessionState, ImportReport]:
    """Read and normalise a session file; raise :class:`InvalidSessionFile` naming the file and the fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSessionFile(f"Could not read the session file {path}: {exc}.") from exc

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSessionFile(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from exc

    state, report = normalize_session_data(data, source=str(path))
    state.register_secrets()
    logger.info("session.file_normalized path=%s cookies=%d shape=%s", path, len(state.cookies), report.source_shape)
    return state, report
