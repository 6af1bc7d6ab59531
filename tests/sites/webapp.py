"""A single-page web app on a free loopback port, for the browser and ``webapp`` connector tests.

Usage::

    with WebAppSite.running(users={"ada": "pw"}) as site:
        site.configure(auth="cookie", cookie_lifetime_seconds=2)
        print(site.url)

Pages and endpoints:

- ``GET /login``: a sign-in form (``#username``, ``#password``, ``#sign-in``)
  that posts JSON to ``/api/login`` with ``fetch`` and then opens ``/app``.
  A rejected password shows ``#login-error``.
- ``POST /api/login``: in ``auth="session_storage"`` mode it returns a bearer
  token (a JWT) that the page keeps ONLY in ``sessionStorage`` under
  ``access_token``, and sets no cookie. In ``auth="cookie"`` mode it sets an
  HttpOnly ``sid`` cookie instead: a sliding session that every authenticated
  request extends by ``cookie_lifetime_seconds`` and rotates to a new value.
- ``GET /app``: calls ``/api/me`` and shows ``#signed-in`` with the user name.
  With ``empty_indexeddb=True`` it first creates the IndexedDB database
  ``offline-cache`` with zero object stores.
- ``GET /api/me``: the cheapest authenticated endpoint, JSON ``{"user": ...}``.
  Without a valid login it responds as ``login_wall`` sets: ``"status"`` (401
  JSON), ``"redirect"`` (302 to ``/login``) or ``"page"`` (200 with the
  sign-in page).
- ``challenge=True`` replaces ``/login`` with a CAPTCHA page and ``/api/me``
  with a 403 CAPTCHA interstitial; both contain ``CHALLENGE_MARKER``.
- ``GET /burn-cpu?seconds=N``: a script that keeps the renderer busy for N s.
- ``GET /hog-memory?max_mb=N&step_mb=S&interval_ms=I``: a script that
  allocates and touches S MiB every I ms until it has N MiB.

The server is a ``ThreadingHTTPServer`` in a daemon thread; settings changed
with :meth:`WebAppSite.configure` apply to the next request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, urlsplit

__all__ = ["CHALLENGE_MARKER", "LOGIN_MARKER", "SiteSettings", "WebAppSite"]

LOOPBACK = "127.0.0.1"
TOKEN_STORAGE_KEY = "access_token"
SESSION_COOKIE = "sid"
INDEXEDDB_NAME = "offline-cache"
# Text that only the CAPTCHA pages contain, and text that only the sign-in page contains.
CHALLENGE_MARKER = 'id="captcha-challenge"'
LOGIN_MARKER = 'id="login-form"'

LOGIN_PAGE = """<!doctype html>
<html><head><title>Sign in</title></head>
<body>
<form id="login-form">
  <label>User <input id="username" name="username" autocomplete="username"></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <button id="sign-in" type="submit">Sign in</button>
  <p id="login-error" hidden>Wrong user name or password.</p>
</form>
<script>
document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch("/api/login", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({
      username: document.getElementById("username").value,
      password: document.getElementById("password").value,
    }),
  });
  if (!response.ok) {
    document.getElementById("login-error").hidden = false;
    return;
  }
  const body = await response.json();
  if (body.token) {
    sessionStorage.setItem("access_token", body.token);
  }
  location.assign("/app");
});
</script>
</body></html>
"""

APP_PAGE = """<!doctype html>
<html><head><title>App</title></head>
<body>
<main id="app">Loading</main>
<script>
const createEmptyDatabase = @CREATE_EMPTY_INDEXEDDB@;

function openEmptyDatabase() {
  // Opening without an onupgradeneeded handler creates version 1 with zero object stores.
  return new Promise((resolve, reject) => {
    const request = indexedDB.open("offline-cache", 1);
    request.onsuccess = () => { request.result.close(); resolve(); };
    request.onerror = () => reject(request.error);
  });
}

(async () => {
  if (createEmptyDatabase) {
    await openEmptyDatabase();
  }
  const token = sessionStorage.getItem("access_token");
  const headers = token ? {Authorization: "Bearer " + token} : {};
  const response = await fetch("/api/me", {headers});
  if (!response.ok || !(response.headers.get("content-type") || "").startsWith("application/json")) {
    location.assign("/login");
    return;
  }
  const me = await response.json();
  const signedIn = document.createElement("p");
  signedIn.id = "signed-in";
  signedIn.textContent = me.user;
  document.body.append(signedIn);
})();
</script>
</body></html>
"""

CHALLENGE_PAGE = f"""<!doctype html>
<html><head><title>One more step</title></head>
<body><div {CHALLENGE_MARKER}>Verify that you are human to continue.</div></body></html>
"""

BURN_CPU_PAGE = """<!doctype html>
<html><head><title>Busy</title></head>
<body><script>
const end = Date.now() + @SECONDS@ * 1000;
let spins = 0;
while (Date.now() < end) { spins += 1; }
</script><p id="done">done</p></body></html>
"""

HOG_MEMORY_PAGE = """<!doctype html>
<html><head><title>Hungry</title></head>
<body><script>
const maxMebibytes = @MAX_MB@;
const stepMebibytes = @STEP_MB@;
const chunks = [];
let heldMebibytes = 0;
const timer = setInterval(() => {
  if (heldMebibytes >= maxMebibytes) {
    clearInterval(timer);
    document.title = "full";
    return;
  }
  // fill() touches every page, so the memory counts as resident, not only reserved.
  chunks.push(new Uint8Array(stepMebibytes * 1024 * 1024).fill(1));
  heldMebibytes += stepMebibytes;
}, @INTERVAL_MS@);
</script></body></html>
"""


@dataclass(frozen=True)
class SiteSettings:
    """How the site behaves; see the module docstring."""

    auth: Literal["session_storage", "cookie"] = "session_storage"
    cookie_lifetime_seconds: float = 60.0
    token_lifetime_seconds: float = 600.0
    login_wall: Literal["status", "redirect", "page"] = "status"
    challenge: bool = False
    empty_indexeddb: bool = False


@dataclass
class _Login:
    user: str
    expires_at: float


@dataclass
class _SiteData:
    users: dict[str, str]
    settings: SiteSettings = field(default_factory=SiteSettings)
    tokens: dict[str, _Login] = field(default_factory=dict)
    sessions: dict[str, _Login] = field(default_factory=dict)
    signing_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[str] = field(default_factory=list)


class WebAppSite:
    """The test web app, served on ``127.0.0.1`` at a port the kernel picks."""

    def __init__(self, users: dict[str, str]) -> None:
        self._data = _SiteData(users=dict(users))
        self._server = ThreadingHTTPServer((LOOPBACK, 0), _make_handler(self._data))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webapp-site", daemon=True)

    @classmethod
    @contextmanager
    def running(cls, users: dict[str, str]) -> Iterator[WebAppSite]:
        """Start a site, yield it, and stop it afterwards."""
        site = cls(users)
        site.start()
        try:
            yield site
        finally:
            site.stop()

    @property
    def url(self) -> str:
        """The base URL, with a trailing slash."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def origin(self) -> str:
        return self.url.rstrip("/")

    @property
    def settings(self) -> SiteSettings:
        return self._data.settings

    @property
    def requests(self) -> list[str]:
        """Request lines (``METHOD path``) received so far."""
        with self._data.lock:
            return list(self._data.requests)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def configure(self, **changes: object) -> None:
        """Reset the settings to their defaults with ``changes`` applied, and forget every login."""
        with self._data.lock:
            self._data.settings = replace(SiteSettings(), **changes)
            self._data.tokens.clear()
            self._data.sessions.clear()
            self._data.requests.clear()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _issue_jwt(data: _SiteData, user: str, lifetime_seconds: float) -> str:
    expires_at = time.time() + lifetime_seconds
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"sub": user, "exp": int(expires_at), "jti": secrets.token_hex(8)}).encode())
    signature = _b64url(hmac.new(data.signing_key, f"{header}.{claims}".encode(), hashlib.sha256).digest())
    token = f"{header}.{claims}.{signature}"
    data.tokens[token] = _Login(user=user, expires_at=expires_at)
    return token


def _make_handler(data: _SiteData) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        # -- dispatch ---------------------------------------------------------

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            self._record()
            query = {name: values[0] for name, values in parse_qs(parts.query).items()}
            settings = data.settings

            if parts.path == "/login":
                self._send_html(200, CHALLENGE_PAGE if settings.challenge else LOGIN_PAGE)
            elif parts.path == "/app":
                script_flag = "true" if settings.empty_indexeddb else "false"
                self._send_html(200, APP_PAGE.replace("@CREATE_EMPTY_INDEXEDDB@", script_flag))
            elif parts.path == "/api/me":
                self._me(settings)
            elif parts.path == "/burn-cpu":
                seconds = float(query.get("seconds", "20"))
                self._send_html(200, BURN_CPU_PAGE.replace("@SECONDS@", str(seconds)))
            elif parts.path == "/hog-memory":
                page = (
                    HOG_MEMORY_PAGE.replace("@MAX_MB@", str(int(query.get("max_mb", "2048"))))
                    .replace("@STEP_MB@", str(int(query.get("step_mb", "64"))))
                    .replace("@INTERVAL_MS@", str(int(query.get("interval_ms", "50"))))
                )
                self._send_html(200, page)
            else:
                self._send_json(404, {"error": "not found"})

        def do_POST(self) -> None:
            self._record()
            if urlsplit(self.path).path != "/api/login":
                self._send_json(404, {"error": "not found"})
                return

            length = int(self.headers.get("Content-Length", "0"))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._send_json(400, {"error": "invalid JSON"})
                return

            user, password = str(body.get("username", "")), str(body.get("password", ""))
            expected = data.users.get(user)
            if expected is None or not hmac.compare_digest(expected, password):
                self._send_json(401, {"error": "wrong user name or password"})
                return

            settings = data.settings
            if settings.auth == "session_storage":
                with data.lock:
                    token = _issue_jwt(data, user, settings.token_lifetime_seconds)
                self._send_json(200, {"token": token})
                return

            with data.lock:
                session_id = self._start_session(user, settings)
            self._send_json(200, {"user": user}, cookie=self._session_cookie(session_id, settings))

        # -- endpoints --------------------------------------------------------

        def _me(self, settings: SiteSettings) -> None:
            if settings.challenge:
                self._send_html(403, CHALLENGE_PAGE)
                return

            user, cookie = self._authenticated_user(settings)
            if user is not None:
                self._send_json(200, {"user": user}, cookie=cookie)
            elif settings.login_wall == "redirect":
                self._send(302, b"", "text/plain", extra_headers={"Location": "/login?next=/api/me"})
            elif settings.login_wall == "page":
                self._send_html(200, LOGIN_PAGE)
            else:
                self._send_json(401, {"error": "login required"})

        def _authenticated_user(self, settings: SiteSettings) -> tuple[str | None, str | None]:
            """Return the logged-in user, if any, and the Set-Cookie value that slides a cookie session."""
            now = time.time()
            with data.lock:
                if settings.auth == "session_storage":
                    login = self._bearer_login(now)
                    return (login.user if login else None), None

                found = self._cookie_login(now)
                if found is None:
                    return None, None
                # Sliding session: a valid request extends it and rotates the cookie's value.
                session_id, login = found
                del data.sessions[session_id]
                new_session_id = self._start_session(login.user, settings)
                return login.user, self._session_cookie(new_session_id, settings)

        def _bearer_login(self, now: float) -> _Login | None:
            authorization = self.headers.get("Authorization", "")
            if not authorization.startswith("Bearer "):
                return None
            login = data.tokens.get(authorization.removeprefix("Bearer ").strip())
            if login is None or login.expires_at <= now:
                return None
            return login

        def _cookie_login(self, now: float) -> tuple[str, _Login] | None:
            cookies = SimpleCookie(self.headers.get("Cookie", ""))
            morsel = cookies.get(SESSION_COOKIE)
            if morsel is None:
                return None
            login = data.sessions.get(morsel.value)
            if login is None or login.expires_at <= now:
                return None
            return morsel.value, login

        def _start_session(self, user: str, settings: SiteSettings) -> str:
            session_id = secrets.token_urlsafe(24)
            data.sessions[session_id] = _Login(user=user, expires_at=time.time() + settings.cookie_lifetime_seconds)
            return session_id

        @staticmethod
        def _session_cookie(session_id: str, settings: SiteSettings) -> str:
            max_age = math.ceil(settings.cookie_lifetime_seconds)
            return f"{SESSION_COOKIE}={session_id}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax"

        # -- responses --------------------------------------------------------

        def _record(self) -> None:
            with data.lock:
                data.requests.append(f"{self.command} {urlsplit(self.path).path}")

        def _send_html(self, status: int, page: str) -> None:
            self._send(status, page.encode("utf-8"), "text/html; charset=utf-8")

        def _send_json(self, status: int, body: dict[str, object], *, cookie: str | None = None) -> None:
            extra = {"Set-Cookie": cookie} if cookie else {}
            self._send(status, json.dumps(body).encode("utf-8"), "application/json", extra_headers=extra)

        def _send(
            self, status: int, body: bytes, content_type: str, *, extra_headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
