"""Dovecot IMAP and Roundcube webmail on loopback, the stack's "live session" site.

One :class:`MailServer` runs three daemons from its own run directory, so several
instances can run at once beside each other:

- Dovecot serves IMAP on ``127.0.0.1:imap_port`` (no TLS), with users from
  passwd-files and Maildir storage owned by the system user ``mail``.
- php-fpm runs Roundcube (Debian's ``roundcube-core``) as ``www-data`` behind a
  Unix socket, with a configuration directory and a SQLite database of its own.
- nginx serves Roundcube on ``http://127.0.0.1:http_port/``.

Usage::

    server = MailServer(Path("/tmp/mail-run"))
    server.start()
    server.add_user("alice", "alice-password")
    server.append_message("alice", "alice-password", b"Subject: hi\\r\\n\\r\\nHello\\r\\n")
    print(server.roundcube_url)
    server.stop()

The daemons drop privileges to ``mail``, ``dovecot``, ``dovenull`` and
``www-data``, so :meth:`MailServer.start` needs root. Every parent directory of
``run_dir`` must be searchable by other users: ``/tmp`` is, but pytest's
``tmp_path`` is not, because ``/tmp/pytest-of-root`` has mode 0700.

Roundcube keeps its default ``mail_read_time``: opening a message in the web
interface marks it as read, as on a default install.

With ``oauth2_introspection_url`` and ``oauth2_client`` (for example from
:class:`stack.oidc.OidcProvider`), Dovecot also accepts IMAP ``AUTHENTICATE
XOAUTH2`` and ``OAUTHBEARER``. Each such login sends the bearer token to the
introspection endpoint. The token must be active and carry the scope
``mail.read``, and its ``sub`` must equal the user name in the SASL message.
PLAIN and LOGIN keep using the passwd-files, so Roundcube logs in as before::

    provider = OidcProvider(Path("/tmp/oidc-run"))
    provider.start()
    dovecot_client = provider.clients()["dovecot"]
    server = MailServer(
        Path("/tmp/mail-run"),
        oauth2_introspection_url=provider.introspection_endpoint,
        oauth2_client=(dovecot_client.client_id, dovecot_client.client_secret),
    )

The authentication cache is off, so a revoked token fails at the next login.

NOTE: ``mail.read`` is only checked at login. Dovecot does not make the session
read-only, so a client holding such a token can still change flags or delete
messages over IMAP.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import imaplib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import stat
import string
import time
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr

from stack.ports import LOOPBACK, free_port, is_port_free
from stack.process import (
    StartupError,
    find_process,
    http_status,
    run_command,
    stop_process_tree,
    wait_until,
)

__all__ = ["MailServer"]

ROUNDCUBE_ROOT = Path("/usr/share/roundcube")
ROUNDCUBE_SQLITE_SCHEMA = ROUNDCUBE_ROOT / "SQL" / "sqlite.initial.sql"
# Roundcube loads defaults.inc.php and mimetypes.php from its configuration
# directory too; the instance's directory links them to the Debian package's files.
ROUNDCUBE_PACKAGE_CONFIG_DIR = Path("/etc/roundcube")
ROUNDCUBE_LINKED_CONFIG_FILES = ("defaults.inc.php", "mimetypes.php")

# A Unix socket path is at most 107 bytes long on Linux. Dovecot puts sockets with
# names of up to 23 bytes ("token-login/tokenlogin") below its base_dir.
MAX_SOCKET_PATH_BYTES = 107
DOVECOT_SOCKET_NAME_BYTES = 24

USER_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]{0,63}")
READY_TIMEOUT_SECONDS = 15.0

# Scope that a bearer token must carry for an IMAP login (see stack.oidc).
OAUTH2_REQUIRED_SCOPE = "mail.read"
OAUTH2_TIMEOUT_MILLISECONDS = 5000


class _ConfigTemplate(string.Template):
    # "$" and "%" belong to nginx, PHP and Dovecot, so placeholders are "@{name}".
    delimiter = "@"


def _render_template(name: str, **values: object) -> str:
    text = resources.files("stack").joinpath("templates").joinpath(name).read_text(encoding="utf-8")
    return _ConfigTemplate(text).substitute({key: str(value) for key, value in values.items()})


def _php_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _find_program(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise StartupError("mail server", f"`{name}` was not found; run stack/install.sh")
    return found


def _ssha512(password: str) -> str:
    """Hash ``password`` in Dovecot's SSHA512 scheme: base64(SHA-512(password + salt) + salt)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.sha512(password.encode("utf-8") + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode("ascii")


def _ssha512_matches(stored_hash: str, password: str) -> bool:
    prefix = "{SSHA512}"
    if not stored_hash.startswith(prefix):
        return False
    try:
        decoded = base64.b64decode(stored_hash[len(prefix) :], validate=True)
    except ValueError:
        return False
    digest, salt = decoded[:64], decoded[64:]
    expected = hashlib.sha512(password.encode("utf-8") + salt).digest()
    return secrets.compare_digest(digest, expected)


def _chown(path: Path, user: str, group: str) -> None:
    shutil.chown(path, user=user, group=group)


def _make_dir(path: Path, mode: int, user: str = "root", group: str = "root") -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    _chown(path, user, group)


def _write_file(path: Path, text: str, mode: int, group: str = "root", owner: str = "root") -> None:
    # The file gets its mode, owner and group before it has content, because some
    # files contain secrets (Roundcube's des_key, password hashes, a client secret).
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(fd, mode)
        os.fchown(fd, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid)
        file.write(text)
    temporary.replace(path)


def _url_with_credentials(url: str, user: str, password: SecretStr) -> str:
    """Return ``url`` with ``user`` and ``password`` as its user info, percent-encoded."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None:
        raise ValueError(f"the introspection URL must be an http(s) URL without user info, got {url!r}")
    credentials = f"{quote(user, safe='')}:{quote(password.get_secret_value(), safe='')}"
    return urlunsplit(parts._replace(netloc=f"{credentials}@{parts.netloc}"))


class MailServer:
    """Dovecot, php-fpm and nginx serving IMAP and Roundcube for one set of test users.

    Args:
        run_dir: directory for configs, logs, pid files, sockets, mailboxes and
            Roundcube's database.
        imap_port: Dovecot's IMAP port on 127.0.0.1; a free port when None.
        http_port: nginx's HTTP port on 127.0.0.1; a free port when None.
        session_lifetime_minutes: Roundcube's ``session_lifetime``. Roundcube
            1.6 raises values under 2 minutes to 120 seconds (``rcube_session``).
        oauth2_introspection_url: token introspection endpoint (RFC 7662) that
            validates XOAUTH2 and OAUTHBEARER logins; without it Dovecot offers
            only PLAIN and LOGIN.
        oauth2_client: client id and secret with which Dovecot authenticates
            at the introspection endpoint (HTTP Basic); required with
            ``oauth2_introspection_url``.
    """

    def __init__(
        self,
        run_dir: Path,
        imap_port: int | None = None,
        http_port: int | None = None,
        session_lifetime_minutes: int = 10,
        oauth2_introspection_url: str | None = None,
        oauth2_client: tuple[str, SecretStr] | None = None,
    ) -> None:
        if session_lifetime_minutes < 1:
            raise ValueError(f"session_lifetime_minutes must be at least 1, got {session_lifetime_minutes}")
        if (oauth2_introspection_url is None) != (oauth2_client is None):
            raise ValueError("oauth2_introspection_url and oauth2_client must be given together")
        if oauth2_introspection_url is not None and oauth2_client is not None:
            # Checked here, so that a wrong URL fails before any daemon starts.
            _url_with_credentials(oauth2_introspection_url, *oauth2_client)
        self.run_dir = Path(run_dir).absolute()
        self.imap_port = imap_port if imap_port is not None else free_port()
        self.http_port = http_port if http_port is not None else free_port()
        if self.imap_port == self.http_port:
            raise ValueError(f"imap_port and http_port must differ, both are {self.imap_port}")
        self.session_lifetime_minutes = session_lifetime_minutes
        self.oauth2_introspection_url = oauth2_introspection_url
        self.oauth2_client = oauth2_client

    @property
    def oauth2_enabled(self) -> bool:
        """Whether Dovecot accepts XOAUTH2 and OAUTHBEARER logins."""
        return self.oauth2_introspection_url is not None

    # Addresses

    @property
    def imap_host(self) -> str:
        """IMAP server address (``127.0.0.1``; Dovecot listens on IPv4 only)."""
        return LOOPBACK

    @property
    def roundcube_url(self) -> str:
        """Roundcube's base URL, ending in ``/``."""
        return f"http://{LOOPBACK}:{self.http_port}/"

    # Layout of the run directory

    @property
    def dovecot_dir(self) -> Path:
        return self.run_dir / "dovecot"

    @property
    def dovecot_config_path(self) -> Path:
        return self.dovecot_dir / "dovecot.conf"

    @property
    def dovecot_base_dir(self) -> Path:
        return self.dovecot_dir / "run"

    @property
    def dovecot_log_path(self) -> Path:
        return self.dovecot_dir / "dovecot.log"

    @property
    def dovecot_oauth2_config_path(self) -> Path:
        """Settings of the oauth2 passdb, with the client secret (mode 0600, owner dovecot)."""
        return self.dovecot_dir / "dovecot-oauth2.conf.ext"

    @property
    def passwd_dir(self) -> Path:
        """Dovecot's passwd-files, one per user, named after it: ``name:{SSHA512}hash``."""
        return self.dovecot_dir / "passwd.d"

    @property
    def mail_root(self) -> Path:
        """Parent of the users' home directories, each of which contains a ``Maildir``."""
        return self.run_dir / "mail"

    @property
    def php_fpm_dir(self) -> Path:
        return self.run_dir / "php-fpm"

    @property
    def php_fpm_config_path(self) -> Path:
        return self.php_fpm_dir / "php-fpm.conf"

    @property
    def php_fpm_log_path(self) -> Path:
        return self.php_fpm_dir / "php-fpm.log"

    @property
    def php_socket_path(self) -> Path:
        return self.php_fpm_dir / "php-fpm.sock"

    @property
    def nginx_dir(self) -> Path:
        return self.run_dir / "nginx"

    @property
    def nginx_config_path(self) -> Path:
        return self.nginx_dir / "nginx.conf"

    @property
    def nginx_error_log_path(self) -> Path:
        return self.nginx_dir / "error.log"

    @property
    def roundcube_dir(self) -> Path:
        return self.run_dir / "roundcube"

    @property
    def roundcube_config_dir(self) -> Path:
        """Directory passed to Roundcube as ``ROUNDCUBE_CONFIG_DIR``."""
        return self.roundcube_dir / "config"

    @property
    def roundcube_log_dir(self) -> Path:
        """Roundcube's ``log_dir`` (``errors.log``, ``userlogins.log``, ...)."""
        return self.roundcube_dir / "logs"

    @property
    def roundcube_database_path(self) -> Path:
        return self.roundcube_dir / "db" / "roundcube.db"

    def _pid_paths(self) -> dict[str, tuple[Path, str]]:
        # Component name -> (pid file, name that the process name or command line contains).
        return {
            "Dovecot": (self.dovecot_base_dir / "master.pid", "dovecot"),
            "php-fpm": (self.php_fpm_dir / "php-fpm.pid", "php-fpm"),
            "nginx": (self.nginx_dir / "nginx.pid", "nginx"),
        }

    # State

    @property
    def pids(self) -> list[int]:
        """Pids of the running master processes of Dovecot, php-fpm and nginx."""
        found = (find_process(path, name) for path, name in self._pid_paths().values())
        return [pid for pid in found if pid is not None]

    def is_running(self) -> bool:
        """Return whether all three daemons are alive, IMAP greets and Roundcube returns 200."""
        if len(self.pids) != len(self._pid_paths()):
            return False
        return self._imap_greets() and http_status(self.roundcube_url) == 200

    def _imap_greets(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.imap_port), timeout=2.0) as connection:
                greeting = connection.recv(256)
                connection.sendall(b"probe LOGOUT\r\n")
                connection.recv(256)
        except OSError:
            return False
        return greeting.startswith(b"* OK")

    # Lifecycle

    def start(self) -> None:
        """Write the configs, then start Dovecot, php-fpm and nginx and wait until each is ready.

        Keeps existing users, mailboxes and Roundcube's database. When starting
        fails, for any reason, the daemons already started are stopped again.

        Raises:
            StartupError: not root, a port is in use, ``run_dir`` is not usable by
                the daemons' users, or a daemon did not start.
        """
        if os.geteuid() != 0:
            raise StartupError("mail server", "Dovecot, php-fpm and nginx must be started as root; use sudo")
        running = self.pids
        if running:
            raise StartupError("mail server", f"it is already running from {self.run_dir} with pids {running}")
        for port in (self.imap_port, self.http_port):
            if not is_port_free(port):
                raise StartupError("mail server", f"port {port} on {LOOPBACK} is already in use")

        self._prepare_run_dir()
        self._write_configs()
        # Pid files of killed daemons are stale. Dovecot refuses to start while the
        # pid in its master.pid exists, which includes a killed master that is still
        # a zombie waiting for init to reap it.
        for pid_path, _ in self._pid_paths().values():
            pid_path.unlink(missing_ok=True)
        try:
            self._start_dovecot()
            self._start_php_fpm()
            self._start_nginx()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Stop nginx, php-fpm and Dovecot, in this order, and wait until their processes exited.

        Raises:
            StopError: a process survived SIGKILL.
        """
        pid_paths = self._pid_paths()

        nginx_pid = find_process(*pid_paths["nginx"])
        if nginx_pid is not None:
            stop_process_tree(
                "nginx",
                nginx_pid,
                stop_command=[
                    _find_program("nginx"),
                    "-c",
                    str(self.nginx_config_path),
                    "-e",
                    str(self.nginx_error_log_path),
                    "-s",
                    "quit",
                ],
                stop_signal=signal.SIGQUIT,
                timeout_seconds=timeout_seconds,
                log_path=self.nginx_error_log_path,
            )

        php_fpm_pid = find_process(*pid_paths["php-fpm"])
        if php_fpm_pid is not None:
            stop_process_tree(
                "php-fpm",
                php_fpm_pid,
                stop_signal=signal.SIGQUIT,
                timeout_seconds=timeout_seconds,
                log_path=self.php_fpm_log_path,
            )

        dovecot_pid = find_process(*pid_paths["Dovecot"])
        if dovecot_pid is not None:
            # `doveadm stop` sends the same SIGTERM but then polls kill(pid, 0), which
            # also succeeds for a zombie. Where init reaps orphans late (a Debian 12
            # VM whose pid 1 is not an init system), it returned 1.5 s after Dovecot exited.
            stop_process_tree(
                "Dovecot",
                dovecot_pid,
                stop_signal=signal.SIGTERM,
                timeout_seconds=timeout_seconds,
                log_path=self.dovecot_log_path,
            )

        for pid_path, _ in pid_paths.values():
            pid_path.unlink(missing_ok=True)

    def __enter__(self) -> MailServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Users and messages

    def add_user(self, name: str, password: str) -> None:
        """Add an IMAP and Roundcube user, or set the password of an existing one.

        Creates the user's Maildir and works while the server runs. A new user
        can log in at once. Dovecot checks a passwd-file for changes at most once
        per second, so after changing a password of a running server this call
        sleeps until the next second begins, when the new password works.

        Raises:
            ValueError: the name is not 1 to 64 of the characters ``A-Za-z0-9._+@-``
                starting with a letter or digit, or the password contains a line break.
        """
        if not USER_NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"invalid mail user name {name!r}: use 1 to 64 of A-Za-z0-9._+@-, starting with a letter or digit"
            )
        if "\n" in password or "\r" in password:
            raise ValueError(f"the password of mail user {name!r} must not contain line breaks")

        self._prepare_run_dir()
        home = self.mail_root / name
        _make_dir(home, 0o700, "mail", "mail")
        for part in ("", "cur", "new", "tmp"):
            _make_dir(home / "Maildir" / part, 0o700, "mail", "mail")

        passwd_file = self.passwd_dir / name
        previous_mtime: float | None = None
        if passwd_file.exists():
            _, _, stored_hash = passwd_file.read_text(encoding="utf-8").strip().partition(":")
            if _ssha512_matches(stored_hash, password):
                return
            previous_mtime = passwd_file.stat().st_mtime
        _write_file(passwd_file, f"{name}:{_ssha512(password)}\n", 0o640, group="dovecot")
        if previous_mtime is None:
            return

        # Dovecot rereads a passwd-file only when its mtime (in whole seconds) or its
        # size changed. A new hash has the same size, so the mtime must move.
        changed_at = time.time()
        new_mtime = max(int(changed_at), int(previous_mtime) + 1)
        os.utime(passwd_file, (new_mtime, new_mtime))
        if self.pids:
            # A lookup in the second of the change may have been served from memory.
            time.sleep(int(changed_at) + 1 - changed_at + 0.05)

    @property
    def users(self) -> list[str]:
        """Names of the users added with :meth:`add_user`, sorted."""
        if not self.passwd_dir.is_dir():
            return []
        return sorted(path.name for path in self.passwd_dir.iterdir() if path.is_file())

    def append_message(
        self,
        user: str,
        password: str,
        raw: bytes,
        mailbox: str = "INBOX",
        flags: Iterable[str] = (),
    ) -> int | None:
        """Store ``raw`` (an RFC 5322 message) in ``mailbox`` with IMAP APPEND, as ``user``.

        ``flags`` are IMAP flags such as ``"\\\\Seen"`` or ``"\\\\Flagged"``; without
        them the message is new and unread. Returns the message's UID from the
        server's APPENDUID response, or None if the response has none.

        Raises:
            imaplib.IMAP4.error: the login or the APPEND was rejected.
        """
        flag_list = " ".join(flags)
        with imaplib.IMAP4(LOOPBACK, self.imap_port, timeout=10) as client:
            client.login(user, password)
            status, data = client.append(mailbox, f"({flag_list})" if flag_list else None, None, raw)
            client.logout()
        if status != "OK":
            raise imaplib.IMAP4.error(f"APPEND to {mailbox!r} for {user!r} returned {status}")
        match = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
        return int(match.group(1)) if match else None

    # Configuration

    def _prepare_run_dir(self) -> None:
        self._check_run_dir_reachable()
        _make_dir(self.run_dir, 0o755)
        _make_dir(self.dovecot_dir, 0o755)
        _make_dir(self.dovecot_dir / "state", 0o750)
        _make_dir(self.passwd_dir, 0o750, "root", "dovecot")
        _make_dir(self.mail_root, 0o750, "mail", "mail")
        _make_dir(self.php_fpm_dir, 0o755)
        _make_dir(self.nginx_dir, 0o755)
        _make_dir(self.nginx_dir / "temp", 0o755)
        _make_dir(self.roundcube_dir, 0o755)
        _make_dir(self.roundcube_config_dir, 0o750, "root", "www-data")
        for directory in ("db", "logs", "temp"):
            _make_dir(self.roundcube_dir / directory, 0o750, "www-data", "www-data")

    def _check_run_dir_reachable(self) -> None:
        for parent in self.run_dir.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                raise StartupError(
                    "mail server",
                    f"{parent} has mode {stat.S_IMODE(mode):04o}, so the users www-data, mail "
                    f"and dovecot cannot reach {self.run_dir}; choose a run directory whose "
                    "parents are all searchable by others (for example below /tmp)",
                )
        socket_paths = {
            self.php_socket_path: len(bytes(self.php_socket_path)),
            self.dovecot_base_dir: len(bytes(self.dovecot_base_dir)) + DOVECOT_SOCKET_NAME_BYTES,
        }
        for path, length in socket_paths.items():
            if length > MAX_SOCKET_PATH_BYTES:
                raise StartupError(
                    "mail server",
                    f"socket paths below {path} would exceed the {MAX_SOCKET_PATH_BYTES}-byte "
                    "limit of Unix sockets; choose a shorter run directory",
                )

    def _write_configs(self) -> None:
        self._write_dovecot_config()

        _write_file(
            self.php_fpm_config_path,
            _render_template(
                "php-fpm.conf",
                pid_file=self.php_fpm_dir / "php-fpm.pid",
                log_path=self.php_fpm_log_path,
                socket_path=self.php_socket_path,
                roundcube_config_dir=self.roundcube_config_dir,
                php_error_log=self.roundcube_log_dir / "php-errors.log",
                roundcube_temp_dir=self.roundcube_dir / "temp",
            ),
            0o644,
        )
        _write_file(
            self.nginx_config_path,
            _render_template(
                "nginx.conf",
                pid_file=self.nginx_dir / "nginx.pid",
                error_log=self.nginx_error_log_path,
                access_log=self.nginx_dir / "access.log",
                temp_dir=self.nginx_dir / "temp",
                host=LOOPBACK,
                http_port=self.http_port,
                php_socket=self.php_socket_path,
            ),
            0o644,
        )
        self._write_roundcube_config()

    def _write_dovecot_config(self) -> None:
        auth_mechanisms = "plain login"
        oauth2_passdb = ""
        if self.oauth2_introspection_url is not None and self.oauth2_client is not None:
            auth_mechanisms += " xoauth2 oauthbearer"
            oauth2_passdb = (
                "passdb {\n"
                "  driver = oauth2\n"
                "  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {self.dovecot_oauth2_config_path}\n"
                "}\n"
            )
            # Dovecot's auth process runs as the user dovecot and reads this file.
            _write_file(
                self.dovecot_oauth2_config_path,
                _render_template(
                    "dovecot-oauth2.conf.ext",
                    introspection_url=_url_with_credentials(self.oauth2_introspection_url, *self.oauth2_client),
                    timeout_milliseconds=OAUTH2_TIMEOUT_MILLISECONDS,
                    scope=OAUTH2_REQUIRED_SCOPE,
                ),
                0o600,
                group="dovecot",
                owner="dovecot",
            )
        else:
            self.dovecot_oauth2_config_path.unlink(missing_ok=True)

        _write_file(
            self.dovecot_config_path,
            _render_template(
                "dovecot.conf",
                base_dir=self.dovecot_base_dir,
                state_dir=self.dovecot_dir / "state",
                instance_name=f"warden-mail-{self.imap_port}",
                log_path=self.dovecot_log_path,
                host=LOOPBACK,
                imap_port=self.imap_port,
                mail_uid=pwd.getpwnam("mail").pw_uid,
                mail_gid=grp.getgrnam("mail").gr_gid,
                auth_mechanisms=auth_mechanisms,
                passwd_dir=self.passwd_dir,
                oauth2_passdb=oauth2_passdb,
                mail_root=self.mail_root,
            ),
            0o644,
        )

    def _write_roundcube_config(self) -> None:
        database = self.roundcube_database_path
        if not database.exists():
            connection = sqlite3.connect(database)
            try:
                connection.executescript(ROUNDCUBE_SQLITE_SCHEMA.read_text(encoding="utf-8"))
            finally:
                connection.close()
            database.chmod(0o640)
            _chown(database, "www-data", "www-data")

        for name in ROUNDCUBE_LINKED_CONFIG_FILES:
            link = self.roundcube_config_dir / name
            if not link.is_symlink():
                link.unlink(missing_ok=True)
                link.symlink_to(ROUNDCUBE_PACKAGE_CONFIG_DIR / name)

        # des_key encrypts the IMAP password stored in each Roundcube session; a new
        # key on every start invalidates the sessions of the previous run.
        text = _render_template(
            "roundcube-config.inc.php",
            db_dsnw=_php_string(f"sqlite:///{database}?mode=0640"),
            imap_host=_php_string(f"{LOOPBACK}:{self.imap_port}"),
            des_key=_php_string(secrets.token_urlsafe(18)),
            session_lifetime_minutes=self.session_lifetime_minutes,
            log_dir=_php_string(f"{self.roundcube_log_dir}/"),
            temp_dir=_php_string(f"{self.roundcube_dir / 'temp'}/"),
        )
        _write_file(self.roundcube_config_dir / "config.inc.php", text, 0o640, group="www-data")

    # Daemons

    def _start_dovecot(self) -> None:
        run_command(
            "Dovecot",
            [_find_program("dovecot"), "-c", str(self.dovecot_config_path)],
            self.dovecot_log_path,
        )
        self._wait_ready("Dovecot", self._imap_greets, self.dovecot_log_path)

    def _start_php_fpm(self) -> None:
        # A socket left by a killed php-fpm would pass the readiness check below.
        if self.php_socket_path.is_socket():
            self.php_socket_path.unlink()
        run_command(
            "php-fpm",
            [_find_program("php-fpm8.2"), "-y", str(self.php_fpm_config_path)],
            self.php_fpm_log_path,
        )
        self._wait_ready("php-fpm", self.php_socket_path.is_socket, self.php_fpm_log_path)

    def _start_nginx(self) -> None:
        run_command(
            "nginx",
            [
                _find_program("nginx"),
                "-c",
                str(self.nginx_config_path),
                "-e",
                str(self.nginx_error_log_path),
                "-p",
                f"{self.nginx_dir}/",
            ],
            self.nginx_error_log_path,
        )

        def roundcube_answers() -> bool:
            return http_status(self.roundcube_url) == 200

        self._wait_ready("nginx", roundcube_answers, self.nginx_error_log_path)

    def _wait_ready(self, component: str, check: Callable[[], bool], log_path: Path) -> None:
        pid_path, name = self._pid_paths()[component]

        def ready() -> bool:
            return find_process(pid_path, name) is not None and check()

        if not wait_until(ready, READY_TIMEOUT_SECONDS):
            raise StartupError(component, f"not ready after {READY_TIMEOUT_SECONDS:g} seconds", log_path)
