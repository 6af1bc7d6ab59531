"""A generic web app with a login form, kept alive by probing one authenticated endpoint.

The account's ``connector_options`` describe the site (see :class:`WebAppOptions`)::

    {
        "login_path": "/login",
        "username_selector": "#username",
        "password_selector": "#password",
        "submit_selector": "button[type=submit]",
        "success_selector": "#signed-in",
        "probe_path": "/api/me",
        "bearer_storage": "sessionStorage",
        "bearer_key": "access_token",
        "challenge_marker": "g-recaptcha"
    }

Pages and endpoints, relative to the account's ``base_url``:

- login: ``login_path`` in Chromium. The form is filled and submitted, then the
  connector waits until the success check passes, an error element appears
  (:class:`LoginFailed`), or the page shows ``challenge_marker``
  (:class:`LoginRequired`).
- probe: ``GET probe_path`` over plain HTTP with the saved cookies and, when
  ``bearer_storage`` is set, ``Authorization: Bearer`` with the token the login
  left in web storage. Redirects are not followed.

Single-page apps often keep their login in ``sessionStorage``, which
Playwright's ``storage_state()`` does not save. The capture step saves it
beside the cookies, so the probe can read the token from there.

This connector only keeps a session alive: it has no items to list or fetch.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from warden.connectors.base import ItemSession, LoginCredentials, ProbeResult, ProbeState
from warden.connectors.http import HttpSettings, build_client, send_with_backoff
from warden.errors import (
    ConfigError,
    LoginFailed,
    LoginRequired,
    SiteUnreachable,
    UnexpectedResponse,
    WardenError,
)
from warden.sessions.state import SessionState

if TYPE_CHECKING:
    from playwright.async_api import Page

__all__ = ["WebAppConnector", "WebAppOptions", "parse_webapp_options"]

logger = logging.getLogger("warden.connectors.webapp")

# The probe reads at most this much of a body when it looks for a marker.
MAX_MARKER_SCAN_BYTES = 256 * 1024

# Runs in the page until the form or a challenge shows. Arguments: [username selector, challenge marker].
_FORM_OR_CHALLENGE = """([usernameSelector, challengeMarker]) => {
  if (document.querySelector(usernameSelector)) return "form";
  if (challengeMarker && document.documentElement.outerHTML.includes(challengeMarker)) return "challenge";
  return null;
}"""

# Runs in the page after submitting, until one outcome shows. Every configured success check must pass.
# Arguments: [success selector, success URL pattern, error selector, challenge marker].
_LOGIN_OUTCOME = """([successSelector, successUrlPattern, errorSelector, challengeMarker]) => {
  const selectorPasses = !successSelector || document.querySelector(successSelector) !== null;
  const urlPasses = !successUrlPattern || new RegExp(successUrlPattern).test(location.href);
  if (selectorPasses && urlPasses) return "success";
  if (errorSelector && document.querySelector(errorSelector)) return "error";
  if (challengeMarker && document.documentElement.outerHTML.includes(challengeMarker)) return "challenge";
  return null;
}"""


class WebAppOptions(BaseModel):
    """The ``connector_options`` of a ``webapp`` account."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    login_path: str = Field(default="/login", description="Path of the login page, relative to base_url.")
    username_selector: str = Field(description="CSS selector of the user name field.")
    password_selector: str = Field(description="CSS selector of the password field.")
    submit_selector: str = Field(description="CSS selector of the element that submits the form.")
    success_selector: str | None = Field(
        default=None, description="CSS selector of an element that only a logged-in page shows."
    )
    success_url_pattern: str | None = Field(
        default=None,
        description="Regular expression searched in the page URL after login. It runs in the browser, "
        "so use syntax that JavaScript and Python share.",
    )
    error_selector: str | None = Field(
        default=None, description="CSS selector of the element the site shows after a wrong password."
    )
    form_timeout_seconds: float = Field(default=15.0, gt=0, description="Wait for the login form, in seconds.")
    outcome_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Wait for the success check, an error or a challenge after submitting."
    )

    probe_path: str = Field(description="Path of the cheapest authenticated GET endpoint, relative to base_url.")
    valid_status_codes: frozenset[int] = Field(
        default=frozenset({200}), description="Statuses of the probe that mean the session is valid."
    )
    expired_status_codes: frozenset[int] = Field(
        default=frozenset({401, 403}), description="Statuses of the probe that mean the session has ended."
    )
    login_marker: str | None = Field(
        default=None,
        description="Text that only the login page contains. In a probe response it means the session has expired.",
    )
    challenge_marker: str | None = Field(
        default=None,
        description="Text that only a CAPTCHA, second-factor or consent page contains; it means challenge.",
    )

    bearer_storage: Literal["localStorage", "sessionStorage"] | None = Field(
        default=None, description="Web storage the login leaves its bearer token in, if the API needs one."
    )
    bearer_key: str | None = Field(default=None, description="Key of the bearer token in bearer_storage.")
    auth_cookie_names: frozenset[str] = Field(
        default=frozenset(), description="Cookies that carry the login. Their expiry drives the forecast."
    )

    @field_validator("login_path", "probe_path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        if "://" in value or value.startswith("//"):
            raise ValueError("must be a path on the account's site, not a URL")
        return value

    @field_validator("success_url_pattern")
    @classmethod
    def _valid_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WebAppOptions:
        if self.success_selector is None and self.success_url_pattern is None:
            raise ValueError("set success_selector or success_url_pattern, so a login can be recognised")
        if (self.bearer_storage is None) != (self.bearer_key is None):
            raise ValueError("set both bearer_storage and bearer_key, or neither")
        if self.valid_status_codes & self.expired_status_codes:
            raise ValueError("valid_status_codes and expired_status_codes overlap")
        return self


def parse_webapp_options(options: dict[str, Any], *, account: str) -> WebAppOptions:
    """Validate an account's ``connector_options``, raising :class:`ConfigError` that names each bad option."""
    try:
        return WebAppOptions.model_validate(options)
    except ValidationError as exc:
        problems = [_describe_problem(error) for error in exc.errors()]
        raise ConfigError(
            f"Account '{account}' has invalid connector_options for the webapp connector: "
            f"{'; '.join(problems)}. Fix them in the account's Block."
        ) from None


def _describe_problem(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"option '{location}' is missing"
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(WebAppOptions.model_fields))
        return f"option '{location}' is unknown (known options: {known})"
    if not location:
        return message
    # The input value is left out, because a mistyped option could contain a secret.
    return f"option '{location}' {message[0].lower()}{message[1:]}" if message else f"option '{location}' is invalid"


class WebAppConnector:
    """A web app reached through its login form and one authenticated endpoint."""

    kind = "webapp"
    supports_fetch = False

    def __init__(self, base_url: str, *, account: str, http: HttpSettings, options: WebAppOptions) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.account = account
        self.http = http
        self.options = options
        self.auth_cookie_names = options.auth_cookie_names

    def _url(self, path: str) -> str:
        # Paths are relative to base_url, so a leading slash does not drop base_url's own path.
        return urljoin(self.base_url, path.lstrip("/"))

    @property
    def origin(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def open(self, state: SessionState) -> AbstractAsyncContextManager[ItemSession]:
        """Raise :class:`ConfigError`: this connector keeps a session alive and has no items to fetch."""
        raise ConfigError(
            f"Account '{self.account}' uses the webapp connector, which keeps a session alive but cannot "
            "list or fetch items. Callers check supports_fetch first; use a connector with items to fetch."
        )

    async def read_page_extras(self, page: Page) -> dict[str, str]:
        """Return no extras: the session lives in cookies and web storage, which capture saves anyway."""
        return {}

    # -- login ----------------------------------------------------------------

    async def login(self, page: Page, credentials: LoginCredentials) -> dict[str, str]:
        """Fill and submit the form at ``login_path``, then wait for the success check. Return no extras.

        Raises :class:`LoginFailed` when the site shows ``error_selector``,
        :class:`LoginRequired` when it shows ``challenge_marker`` (before or after
        the form), :class:`SiteUnreachable` when the page cannot be loaded, and
        :class:`UnexpectedResponse` when neither the form nor any outcome shows in time.
        """
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import TimeoutError as PlaywrightTimeoutError

        options = self.options
        login_url = self._url(options.login_path)
        try:
            await page.goto(login_url, wait_until="domcontentloaded")
        except PlaywrightTimeoutError:
            raise
        except PlaywrightError as exc:
            # Only network failures mean the site is unreachable. The pool reports a closed page or a dead browser.
            if "net::ERR_" not in exc.message:
                raise
            raise SiteUnreachable(
                f"Could not open the login page {login_url} for account '{self.account}': "
                f"{exc.message.splitlines()[0][:200]}. Check that the site is up and base_url is right."
            ) from exc

        form_or_challenge = await self._wait_for(
            page,
            _FORM_OR_CHALLENGE,
            [options.username_selector, options.challenge_marker],
            timeout_seconds=options.form_timeout_seconds,
        )
        if form_or_challenge == "challenge":
            raise self._challenge_error("instead of its login form")
        if form_or_challenge is None:
            raise UnexpectedResponse(
                f"The login page {login_url} of account '{self.account}' showed no element matching "
                f"username_selector {options.username_selector!r} within {options.form_timeout_seconds:.0f} s. "
                "Check login_path and the selectors in the account's connector_options."
            )

        await page.locator(options.username_selector).first.fill(credentials.username)
        await page.locator(options.password_selector).first.fill(credentials.password.get_secret_value())
        await page.locator(options.submit_selector).first.click()

        outcome = await self._wait_for(
            page,
            _LOGIN_OUTCOME,
            [options.success_selector, options.success_url_pattern, options.error_selector, options.challenge_marker],
            timeout_seconds=options.outcome_timeout_seconds,
        )
        if outcome == "success":
            logger.info("webapp.logged_in account=%s url=%s", self.account, _without_query(page.url))
            return {}
        if outcome == "error":
            raise LoginFailed(
                f"The site at {self.base_url} rejected the login of user '{credentials.username}' for account "
                f"'{self.account}' (it showed {options.error_selector!r}). Check the password stored in the vault."
            )
        if outcome == "challenge":
            raise self._challenge_error("after the password was submitted")
        raise UnexpectedResponse(
            f"After the login form of account '{self.account}' was submitted, the success check did not pass "
            f"within {options.outcome_timeout_seconds:.0f} s (success_selector {options.success_selector!r}, "
            f"success_url_pattern {options.success_url_pattern!r}; the page is at {_without_query(page.url)}). "
            "Check the password and the success check in the account's connector_options."
        )

    async def _wait_for(self, page: Page, script: str, arguments: list[str | None], *, timeout_seconds: float) -> Any:
        """Return what ``script`` returns once it is truthy, or None after ``timeout_seconds``."""
        from playwright.async_api import TimeoutError as PlaywrightTimeoutError

        try:
            # Playwright runs the function again in each new document when the page navigates.
            handle = await page.wait_for_function(script, arg=arguments, polling=100, timeout=timeout_seconds * 1000)
        except PlaywrightTimeoutError:
            return None
        return await handle.json_value()

    def _challenge_error(self, where: str) -> LoginRequired:
        return LoginRequired(
            f"The site at {self.base_url} showed a challenge (CAPTCHA, second factor or consent) {where} "
            f"for account '{self.account}'. A person must log in once in a browser to clear it; then sync again."
        )

    # -- probe ----------------------------------------------------------------

    async def probe(self, state: SessionState) -> tuple[ProbeResult, SessionState]:
        """Replay ``state`` with ``GET probe_path``. Return the result and the state with rotated cookies.

        Never raises for the expected outcomes: expired, challenge, unreachable, unknown.
        """
        started = time.perf_counter()
        options = self.options

        def result(probe_state: ProbeState, reason: str) -> ProbeResult:
            return ProbeResult(state=probe_state, reason=reason, elapsed_seconds=time.perf_counter() - started)

        headers: dict[str, str] = {}
        token_note = ""
        if options.bearer_storage is not None and options.bearer_key is not None:
            token = self._bearer_token(state)
            if token is None:
                token_note = f"; the state has no {options.bearer_key!r} in {options.bearer_storage}"
            else:
                headers["Authorization"] = f"Bearer {token}"

        what = f"probe the session of account '{self.account}'"
        client = build_client(self.base_url, settings=self.http, cookies=state.cookie_jar(), headers=headers)
        try:
            response = await send_with_backoff(
                client, "GET", self._url(options.probe_path), settings=self.http, what=what
            )
            rotated = state.with_cookies_from(client.cookies)
        except SiteUnreachable as exc:
            return result(ProbeState.UNREACHABLE, str(exc)), state
        except LoginRequired as exc:
            # The site policy's challenge check raises this before _classify reads the page.
            return result(ProbeState.CHALLENGE, str(exc)), state
        except WardenError as exc:
            return result(ProbeState.UNKNOWN, str(exc)), state
        finally:
            await client.aclose()

        probe_state, reason = self._classify(response)
        return result(probe_state, reason + (token_note if probe_state != ProbeState.VALID else "")), rotated

    def _bearer_token(self, state: SessionState) -> str | None:
        """Return the bearer token the login left in web storage: the site's own origin first, then any."""
        key = self.options.bearer_key
        if self.options.bearer_storage == "sessionStorage":
            by_origin = state.session_storage
        else:
            by_origin = {
                origin.origin: {item.name: item.value for item in origin.local_storage} for origin in state.origins
            }

        own = by_origin.get(self.origin, {})
        if key in own:
            return own[key]
        for items in by_origin.values():
            if key in items:
                return items[key]
        return None

    def _classify(self, response: httpx.Response) -> tuple[ProbeState, str]:
        options = self.options
        status = response.status_code
        body = response.content[:MAX_MARKER_SCAN_BYTES].decode("utf-8", errors="replace")

        # A challenge comes first: CAPTCHA interstitials often use 403, which would otherwise read as expired.
        if options.challenge_marker and options.challenge_marker in body:
            return ProbeState.CHALLENGE, f"the probe endpoint returned a challenge page (HTTP {status})"
        if status in options.expired_status_codes:
            return ProbeState.EXPIRED, f"the probe endpoint returned HTTP {status}: the session has ended"
        if response.is_redirect:
            location = response.headers.get("Location", "")
            target = urlsplit(urljoin(str(response.url), location)).path
            if target == urlsplit(self._url(options.login_path)).path:
                return ProbeState.EXPIRED, f"the probe endpoint redirected to the login page (HTTP {status})"
            return ProbeState.UNKNOWN, f"the probe endpoint redirected to {target} (HTTP {status})"
        if options.login_marker and options.login_marker in body:
            return ProbeState.EXPIRED, f"the probe endpoint returned the login page (HTTP {status})"
        if status in options.valid_status_codes:
            return ProbeState.VALID, f"the probe endpoint accepted the session (HTTP {status})"
        return ProbeState.UNKNOWN, f"the probe endpoint returned HTTP {status}, which the options do not classify"


def _without_query(url: str) -> str:
    # Query strings can carry one-time codes, so only the path is logged and reported.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
