"""An nginx reverse proxy that rate-limits chosen Roundcube actions, to test polite fetching for real.

:class:`ThrottlingProxy` listens on its own loopback port and passes every
request to an upstream (the mail server's nginx). Requests whose ``_action``
query parameter is one of ``actions`` go through nginx's ``limit_req``:

- ``reject=True``: requests over the rate get the status ``429`` with
  ``Retry-After: retry_after_seconds`` (``limit_req_status 429`` and
  ``add_header ... always``, without which nginx drops the header);
- ``reject=False``: up to ``burst`` requests over the rate wait in nginx's
  queue instead, so downloads trickle in at the configured rate; with no burst,
  nginx has no queue and refuses them as above.

Other requests (login, probe, list) pass untouched. The access log records
each request with its arrival time in seconds (``$msec``) and status, read
with :meth:`ThrottlingProxy.requests`::

    with ThrottlingProxy(run_dir, upstream_port=mail.http_port, rate_per_minute=60, burst=2) as proxy:
        ...  # point an account at proxy.url
        statuses = [entry["status"] for entry in proxy.requests()]
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx

from stack.ports import free_port
from stack.process import StartupError, find_process, wait_until

__all__ = ["ThrottlingProxy"]

LOOPBACK = "127.0.0.1"

_CONFIG = """\
# nginx of one stack.throttle.ThrottlingProxy, written on every start.
user www-data;
worker_processes 1;
daemon on;
pid {pid_file};
error_log {error_log} warn;

events {{
  worker_connections 128;
}}

http {{
  # The path and the two query parameters tests need; full URIs of the webmail's own pages carry its request token.
  log_format timed '$msec $status $request_method "$uri?_action=$arg__action&_uid=$arg__uid"';
  access_log {access_log} timed;

  client_body_temp_path {temp_dir}/client_body;
  proxy_temp_path {temp_dir}/proxy;
  fastcgi_temp_path {temp_dir}/fastcgi;
  scgi_temp_path {temp_dir}/scgi;
  uwsgi_temp_path {temp_dir}/uwsgi;

  # Only the listed actions get a key; requests with an empty key are not limited.
  map $arg__action $throttle_key {{
    default "";
{action_lines}
  }}
  limit_req_zone $throttle_key zone=actions:1m rate={rate}r/m;
  limit_req_status 429;

  server {{
    listen {host}:{port};

    location / {{
      limit_req zone=actions{burst}{nodelay};
      proxy_pass http://{host}:{upstream_port};
      proxy_set_header Host $http_host;
    }}

    error_page 429 = @throttled;
    location @throttled {{
      add_header Retry-After {retry_after} always;
      return 429 "rate limited\\n";
    }}
  }}
}}
"""


class ThrottlingProxy:
    """nginx on ``port`` in front of ``upstream_port``, limiting the given ``_action`` values."""

    def __init__(
        self,
        run_dir: Path,
        *,
        upstream_port: int,
        port: int | None = None,
        rate_per_minute: int = 60,
        burst: int = 0,
        reject: bool = True,
        retry_after_seconds: int = 120,
        actions: tuple[str, ...] = ("viewsource", "get", "show"),
    ) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.upstream_port = upstream_port
        self.port = port if port is not None else free_port()
        self.rate_per_minute = rate_per_minute
        self.burst = burst
        self.reject = reject
        self.retry_after_seconds = retry_after_seconds
        self.actions = actions

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "nginx.conf"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / "nginx.pid"

    @property
    def access_log_path(self) -> Path:
        return self.run_dir / "access.log"

    @property
    def error_log_path(self) -> Path:
        return self.run_dir / "error.log"

    def _render(self) -> str:
        action_lines = "\n".join(f"    {action} $binary_remote_addr;" for action in self.actions)
        return _CONFIG.format(
            pid_file=self.pid_path,
            error_log=self.error_log_path,
            access_log=self.access_log_path,
            temp_dir=self.run_dir / "temp",
            action_lines=action_lines,
            rate=self.rate_per_minute,
            # nginx refuses "burst=0"; no burst is written as no burst parameter.
            burst=f" burst={self.burst}" if self.burst else "",
            nodelay=" nodelay" if self.reject and self.burst else "",
            host=LOOPBACK,
            port=self.port,
            upstream_port=self.upstream_port,
            retry_after=self.retry_after_seconds,
        )

    def start(self, timeout_seconds: float = 10.0) -> None:
        """Write the config, start nginx, and wait until the proxy responds."""
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        (self.run_dir / "temp").mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o755)
        self.config_path.write_text(self._render(), encoding="utf-8")
        self.pid_path.unlink(missing_ok=True)

        result = subprocess.run(
            [nginx, "-c", str(self.config_path), "-p", str(self.run_dir)],
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
        )
        if result.returncode != 0:
            raise StartupError("throttling proxy", result.stderr.strip()[-500:], self.error_log_path)

        def answers() -> bool:
            try:
                httpx.get(self.url, timeout=1.0, trust_env=False)
            except httpx.HTTPError:
                return False
            return True

        if not wait_until(answers, timeout_seconds=timeout_seconds):
            self.stop()
            raise StartupError("throttling proxy", f"no response on {self.url}", self.error_log_path)

    def stop(self) -> None:
        """Stop nginx by its pid (SIGQUIT lets workers finish their requests)."""
        pid = find_process(self.pid_path, "nginx")
        if pid is not None:
            os.kill(pid, signal.SIGQUIT)

    def __enter__(self) -> ThrottlingProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def requests(self) -> list[dict[str, object]]:
        """Return each logged request: ``time`` (seconds since the epoch), ``status``, ``method`` and ``uri``."""
        try:
            lines = self.access_log_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            when, status, method, uri = line.split(" ", 3)
            entries.append({"time": float(when), "status": int(status), "method": method, "uri": uri.strip('"')})
        return entries
