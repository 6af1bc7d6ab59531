"""The local real stack: each component started for real on loopback, then checked and stopped."""

from __future__ import annotations

import imaplib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import hvac
import psutil
import pytest
from sqlalchemy import create_engine, inspect, text

from stack.mail import MailServer
from stack.openbao import OpenBaoDevServer
from stack.postgres import PostgresServer
from stack.prefect_server import PrefectServer
from stack.process import ForegroundProcess, StartupError, is_alive, process_tree

pytestmark = pytest.mark.stack

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
KEEP_ALIVE_PARAMS = {"_task": "mail", "_action": "keep-alive", "_remote": "1"}


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A fresh directory (mode 0755) that the mail server's daemon users can reach."""
    path = Path(tempfile.mkdtemp(prefix="warden-stack-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def all_pids(pids: list[int]) -> list[int]:
    """Return ``pids`` with all of their descendants."""
    return [pid for root in pids for pid in process_tree(root)]


def living(pids: list[int]) -> list[int]:
    return [pid for pid in pids if is_alive(pid)]


def roundcube_login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    """Log in through Roundcube's login form as a browser would, without following redirects."""
    login_page = client.get("/")
    assert login_page.status_code == 200
    match = re.search(r'name="_token" value="([^"]+)"', login_page.text)
    assert match, "the login page has no _token field"
    return client.post(
        "/?_task=login",
        data={
            "_token": match.group(1),
            "_task": "login",
            "_action": "login",
            "_timezone": "UTC",
            "_url": "",
            "_user": user,
            "_pass": password,
        },
    )


# OpenBao


def test_openbao_kv_v2_write_read(openbao_server: OpenBaoDevServer) -> None:
    client = hvac.Client(url=openbao_server.address, token=openbao_server.root_token.get_secret_value())

    client.secrets.kv.v2.create_or_update_secret(
        path="connectors/alice", secret={"user": "alice", "note": "stack test"}
    )
    read = client.secrets.kv.v2.read_secret_version(path="connectors/alice", raise_on_deleted_version=True)

    assert read["data"]["data"] == {"user": "alice", "note": "stack test"}


def test_openbao_root_token_file_private(openbao_server: OpenBaoDevServer) -> None:
    mode = stat.S_IMODE(openbao_server.root_token_path.stat().st_mode)
    stored = openbao_server.root_token_path.read_text(encoding="utf-8").strip()

    assert mode == 0o600
    assert stored == openbao_server.root_token.get_secret_value()
    assert openbao_server.address.startswith("http://127.0.0.1:")


def test_openbao_token_not_in_command_line(openbao_server: OpenBaoDevServer) -> None:
    token = openbao_server.root_token.get_secret_value()

    (pid,) = openbao_server.pids

    assert not any(token in part for part in psutil.Process(pid).cmdline())


# Mail: Dovecot and Roundcube


def test_roundcube_login_succeeds(mail_server: MailServer) -> None:
    mail_server.add_user("login-ok", "right password")

    with httpx.Client(base_url=mail_server.roundcube_url, trust_env=False) as client:
        response = roundcube_login(client, "login-ok", "right password")
        keep_alive = client.get("/", params=KEEP_ALIVE_PARAMS)

    assert response.status_code == 302
    assert "_task=mail" in response.headers["location"]
    assert "roundcube_sessauth" in client.cookies
    assert keep_alive.status_code == 200
    assert "session_error" not in keep_alive.json()["exec"]


def test_roundcube_login_wrong_password(mail_server: MailServer) -> None:
    mail_server.add_user("login-bad", "right password")

    with httpx.Client(base_url=mail_server.roundcube_url, trust_env=False) as client:
        response = roundcube_login(client, "login-bad", "wrong password")

    assert response.status_code == 401


def test_roundcube_keep_alive_without_session(mail_server: MailServer) -> None:
    with httpx.Client(base_url=mail_server.roundcube_url, trust_env=False) as client:
        response = client.get("/", params=KEEP_ALIVE_PARAMS)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "session_error" in response.json()["exec"]


def imap_login_status(server: MailServer, user: str, password: str) -> str:
    with imaplib.IMAP4(server.imap_host, server.imap_port) as client:
        try:
            status, _ = client.login(user, password)
        except imaplib.IMAP4.error:
            return "NO"
    return status


def test_add_user_same_password_keeps_file(mail_server: MailServer) -> None:
    mail_server.add_user("repeated", "same password")
    passwd_file = mail_server.passwd_dir / "repeated"
    first_content = passwd_file.read_text(encoding="utf-8")

    mail_server.add_user("repeated", "same password")

    assert passwd_file.read_text(encoding="utf-8") == first_content
    assert imap_login_status(mail_server, "repeated", "same password") == "OK"
    assert "repeated" in mail_server.users


def test_add_user_changes_password(mail_server: MailServer) -> None:
    mail_server.add_user("rotating", "first")
    assert imap_login_status(mail_server, "rotating", "first") == "OK"

    mail_server.add_user("rotating", "second")

    assert imap_login_status(mail_server, "rotating", "first") == "NO"
    assert imap_login_status(mail_server, "rotating", "second") == "OK"
    assert "second" not in (mail_server.passwd_dir / "rotating").read_text(encoding="utf-8")


def test_new_user_logs_in_at_once(mail_server: MailServer) -> None:
    # The logins below fall within one second. With one shared passwd-file, Dovecot
    # would not see the users added after the first login of that second.
    for index in range(5):
        mail_server.add_user(f"burst-{index}", f"password {index}")
        assert imap_login_status(mail_server, f"burst-{index}", f"password {index}") == "OK"


def test_add_user_rejects_invalid_name(mail_server: MailServer) -> None:
    with pytest.raises(ValueError, match="invalid mail user name"):
        mail_server.add_user("../escape", "password")
    with pytest.raises(ValueError, match="invalid mail user name"):
        mail_server.add_user("colon:name", "password")


def test_appended_message_is_unseen(mail_server: MailServer) -> None:
    mail_server.add_user("reader", "reader password")
    raw = (
        b"From: sender@example.test\r\n"
        b"To: reader@example.test\r\n"
        b"Subject: Stack append test\r\n"
        b"Message-ID: <stack-append-test@example.test>\r\n"
        b"\r\n"
        b"Body line.\r\n"
    )

    uid = mail_server.append_message("reader", "reader password", raw)

    with imaplib.IMAP4(mail_server.imap_host, mail_server.imap_port) as client:
        client.login("reader", "reader password")
        client.select("INBOX", readonly=True)
        status, data = client.uid("FETCH", str(uid), "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    flags_and_header = data[0]
    assert status == "OK"
    assert isinstance(flags_and_header, tuple)
    assert b"\\Seen" not in flags_and_header[0]
    assert b"Subject: Stack append test" in flags_and_header[1]


def test_appended_message_keeps_flags(mail_server: MailServer) -> None:
    mail_server.add_user("flagger", "flagger password")

    uid = mail_server.append_message(
        "flagger",
        "flagger password",
        b"Subject: flagged\r\n\r\nbody\r\n",
        mailbox="Junk",
        flags=["\\Seen", "\\Flagged"],
    )

    with imaplib.IMAP4(mail_server.imap_host, mail_server.imap_port) as client:
        client.login("flagger", "flagger password")
        client.select("Junk", readonly=True)
        status, data = client.uid("FETCH", str(uid), "(FLAGS)")
    assert status == "OK"
    assert b"\\Seen" in data[0]
    assert b"\\Flagged" in data[0]


def test_special_folders_subscribed(mail_server: MailServer) -> None:
    mail_server.add_user("folders", "folders password")

    with imaplib.IMAP4(mail_server.imap_host, mail_server.imap_port) as client:
        client.login("folders", "folders password")
        status, lines = client.lsub()
    subscribed = b"\n".join(line for line in lines if isinstance(line, bytes))

    assert status == "OK"
    for folder in (b"Sent", b"Drafts", b"Trash", b"Junk"):
        assert folder in subscribed


def test_maildir_owned_by_mail(mail_server: MailServer) -> None:
    mail_server.add_user("owner-check", "password")

    maildir = mail_server.mail_root / "owner-check" / "Maildir"

    assert maildir.owner() == "mail"
    assert (maildir / "new").is_dir()


def test_mail_server_rejects_private_parent(scratch_dir: Path) -> None:
    private = scratch_dir / "private"
    private.mkdir(mode=0o700)

    with pytest.raises(StartupError, match="cannot reach"):
        MailServer(private / "mail").start()


def test_mail_server_failed_start_cleans_up(scratch_dir: Path) -> None:
    server = MailServer(scratch_dir / "mail")
    # A directory where php-fpm wants its socket makes php-fpm fail after Dovecot started.
    (server.php_socket_path / "blocker").mkdir(parents=True)

    with pytest.raises(StartupError) as caught:
        server.start()

    message = str(caught.value)
    assert caught.value.component == "php-fpm"
    assert str(server.php_fpm_log_path) in message
    assert "unable to bind listening socket" in message
    assert server.pids == []


# Prefect


def test_prefect_server_health(prefect_server: PrefectServer) -> None:
    response = httpx.get(f"{prefect_server.api_url}/health", trust_env=False)

    assert response.status_code == 200
    assert response.json() is True


def test_prefect_server_is_session_api(prefect_server: PrefectServer) -> None:
    from prefect.settings import PREFECT_API_URL

    assert os.environ["PREFECT_API_URL"] == prefect_server.api_url
    assert PREFECT_API_URL.value() == prefect_server.api_url


# Stopping


def test_openbao_stop_leaves_no_process(scratch_dir: Path) -> None:
    server = OpenBaoDevServer(scratch_dir / "openbao")
    server.start()
    pids = all_pids(server.pids)

    server.stop()

    assert pids
    assert living(pids) == []
    assert not server.root_token_path.exists()


def test_mail_server_stop_leaves_no_process(scratch_dir: Path) -> None:
    server = MailServer(scratch_dir / "mail")
    server.start()
    server.add_user("stopper", "password")
    server.append_message("stopper", "password", b"Subject: s\r\n\r\nbody\r\n")
    pids = all_pids(server.pids)

    server.stop()

    assert len(pids) > 3, "expected worker processes beside the three masters"
    assert living(pids) == []
    assert server.pids == []


def test_prefect_server_stop_leaves_no_process(scratch_dir: Path) -> None:
    server = PrefectServer(scratch_dir / "prefect")
    server.start()
    pids = all_pids(server.pids)

    server.stop()

    assert pids
    assert living(pids) == []


def test_startup_error_quotes_log(scratch_dir: Path) -> None:
    process = ForegroundProcess(
        "failing component",
        ["sh", "-c", "echo 'listen failed: port taken'; exit 3"],
        log_path=scratch_dir / "failing.log",
        pid_path=scratch_dir / "failing.pid",
    )
    process.start()

    with pytest.raises(StartupError) as caught:
        process.wait_ready(lambda: False, timeout_seconds=10)

    message = str(caught.value)
    assert "failing component failed to start" in message
    assert "exited with status 3" in message
    assert str(scratch_dir / "failing.log") in message
    assert "listen failed: port taken" in message


# python -m stack


def run_stack_command(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack", *args],
        cwd=REPOSITORY_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def environment_without_prefect_api() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}


def recorded_pids(state: dict) -> list[int]:
    return [pid for component in state["components"].values() for pid in component["pids"]]


def test_cli_up_twice_reuses_then_down(scratch_dir: Path) -> None:
    stack_dir = scratch_dir / "stack"
    env = environment_without_prefect_api()

    first = run_stack_command(
        "up",
        "--dir",
        str(stack_dir),
        "--mail-user",
        "demo",
        "--mail-password-stdin",
        env=env,
        stdin="demo password\n",
    )
    try:
        assert first.returncode == 0, first.stderr
        first_state = json.loads((stack_dir / "stack.json").read_text(encoding="utf-8"))
        first_pids = recorded_pids(first_state)
        first_tree = all_pids(first_pids)

        second = run_stack_command("up", "--dir", str(stack_dir), env=env)
        assert second.returncode == 0, second.stderr
        second_state = json.loads((stack_dir / "stack.json").read_text(encoding="utf-8"))
        status = run_stack_command("status", "--dir", str(stack_dir), env=env)

        env_file = stack_dir / "env"
        env_text = env_file.read_text(encoding="utf-8")
        state_text = (stack_dir / "stack.json").read_text(encoding="utf-8")
        root_token = (stack_dir / "openbao" / "root-token").read_text(encoding="utf-8").strip()
        mail = MailServer(
            stack_dir / "mail",
            imap_port=first_state["components"]["mail"]["imap_port"],
            http_port=first_state["components"]["mail"]["http_port"],
        )
        with httpx.Client(base_url=mail.roundcube_url, trust_env=False) as client:
            demo_login = roundcube_login(client, "demo", "demo password")
    finally:
        down = run_stack_command("down", "--dir", str(stack_dir), env=env)

    assert len(first_pids) == 6
    assert first.stdout.count("started") == 4
    assert second.stdout.count("reused") == 4
    assert recorded_pids(second_state) == first_pids
    assert second_state["components"]["openbao"]["port"] == first_state["components"]["openbao"]["port"]
    assert status.returncode == 0
    assert demo_login.status_code == 302

    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert f"export PREFECT_API_URL={first_state['components']['prefect']['api_url']}" in env_text
    assert f"export VAULT_ADDR={first_state['components']['openbao']['address']}" in env_text
    assert f"export WARDEN_HOME={stack_dir / 'warden'}" in env_text
    assert f"export PREFECT_HOME={stack_dir / 'prefect-client'}" in env_text
    assert "export DO_NOT_TRACK=1" in env_text
    for secret in (root_token, "demo password"):
        assert secret not in env_text
        assert secret not in state_text
        assert secret not in first.stdout

    assert down.returncode == 0, down.stderr
    assert living(first_tree) == []


def test_cli_up_uses_external_prefect(scratch_dir: Path) -> None:
    stack_dir = scratch_dir / "stack"
    external_url = "http://127.0.0.1:9/api"
    env = dict(environment_without_prefect_api(), PREFECT_API_URL=external_url)
    password_file = scratch_dir / "password"
    password_file.write_text("file password\n", encoding="utf-8")
    password_file.chmod(0o600)

    up = run_stack_command(
        "up",
        "--dir",
        str(stack_dir),
        "--mail-user",
        "from-file",
        "--mail-password-file",
        str(password_file),
        env=env,
    )
    try:
        state = json.loads((stack_dir / "stack.json").read_text(encoding="utf-8"))
        env_text = (stack_dir / "env").read_text(encoding="utf-8")
        pids = all_pids(recorded_pids(state))
        mail = state["components"]["mail"]
        with imaplib.IMAP4(mail["imap_host"], mail["imap_port"]) as client:
            login_status, _ = client.login("from-file", "file password")
    finally:
        down = run_stack_command("down", "--dir", str(stack_dir), env=env)

    assert up.returncode == 0, up.stderr
    assert login_status == "OK"
    assert state["mail_users"] == ["from-file"]
    assert state["components"]["prefect"] == {
        "external": True,
        "api_url": external_url,
        "pids": [],
    }
    assert f"export PREFECT_API_URL={external_url}" in env_text
    assert not (stack_dir / "prefect-server").exists()
    assert down.returncode == 0, down.stderr
    assert living(pids) == []


def test_cli_up_rejects_readable_password_file(scratch_dir: Path) -> None:
    password_file = scratch_dir / "password"
    password_file.write_text("demo password\n", encoding="utf-8")
    password_file.chmod(0o644)

    result = run_stack_command(
        "up",
        "--dir",
        str(scratch_dir / "stack"),
        "--mail-user",
        "demo",
        "--mail-password-file",
        str(password_file),
        env=environment_without_prefect_api(),
    )

    assert result.returncode == 1
    assert "chmod 600" in result.stderr
    assert not (scratch_dir / "stack" / "stack.json").exists()


def read_env_file(path: Path) -> dict[str, str]:
    """Return the variables that the ``export`` lines of ``path`` set."""
    variables = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            name, value = words[1].split("=", 1)
            variables[name] = value
    return variables


def test_cli_up_postgresql_then_sqlite(scratch_dir: Path) -> None:
    from warden.store import DocumentStore

    stack_dir = scratch_dir / "stack"
    env = environment_without_prefect_api()
    flow_name = "stack-on-postgresql"

    up = run_stack_command("up", "--dir", str(stack_dir), "--database", "postgresql", env=env)
    try:
        assert up.returncode == 0, up.stderr
        state_text = (stack_dir / "stack.json").read_text(encoding="utf-8")
        state = json.loads(state_text)
        postgres_state = state["components"]["postgres"]
        prefect_state = state["components"]["prefect"]
        postgres_tree = all_pids(postgres_state["pids"])
        status = run_stack_command("status", "--dir", str(stack_dir), env=env)
        reused = run_stack_command("up", "--dir", str(stack_dir), env=env)
        variables = read_env_file(stack_dir / "env")
        password = (stack_dir / "postgres" / "password").read_text(encoding="utf-8").strip()

        # The Prefect server writes a new flow to the database `prefect` of the stack's cluster.
        health = httpx.get(f"{prefect_state['api_url']}/health", trust_env=False)
        created = httpx.post(f"{prefect_state['api_url']}/flows/", json={"name": flow_name}, trust_env=False)
        postgres = PostgresServer(stack_dir / "postgres", port=postgres_state["port"])
        prefect_engine = create_engine(postgres.sync_database_url("prefect"))
        with prefect_engine.connect() as connection:
            stored_flows = connection.execute(text("SELECT id FROM flow WHERE name = :name"), {"name": flow_name})
            stored_flow_ids = [str(row.id) for row in stored_flows]
        prefect_engine.dispose()

        store = DocumentStore(variables["WARDEN_STORE_URL"])
        store_message_count = store.message_count("stack-check")
        store.close()
        store_engine = create_engine(variables["WARDEN_STORE_URL"])
        store_tables = inspect(store_engine).get_table_names()
        store_engine.dispose()

        switch = run_stack_command("up", "--dir", str(stack_dir), "--database", "sqlite", env=env)
        switched_state = json.loads((stack_dir / "stack.json").read_text(encoding="utf-8"))
        switched_prefect = switched_state["components"]["prefect"]
        switched_env_text = (stack_dir / "env").read_text(encoding="utf-8")
        switched_status = run_stack_command("status", "--dir", str(stack_dir), env=env)
        flow_after_switch = httpx.get(f"{switched_prefect['api_url']}/flows/name/{flow_name}", trust_env=False)
        all_trees = all_pids(recorded_pids(switched_state)) + postgres_tree + all_pids(prefect_state["pids"])
    finally:
        down = run_stack_command("down", "--dir", str(stack_dir), env=env)

    port = postgres_state["port"]
    assert state["database"] == "postgresql"
    assert prefect_state["database"] == "postgresql"
    assert prefect_state["database_url"] == f"postgresql+asyncpg://warden:***@127.0.0.1:{port}/prefect"
    assert postgres_state["store_url"] == f"postgresql+psycopg://warden:***@127.0.0.1:{port}/warden"
    assert up.stdout.count("started") == 5
    assert re.search(r"^PostgreSQL +started +127\.0\.0\.1:", up.stdout, re.MULTILINE)
    assert status.returncode == 0, status.stdout
    assert re.search(r"^PostgreSQL +running ", status.stdout, re.MULTILINE)
    assert reused.returncode == 0, reused.stderr
    assert reused.stdout.count("reused") == 5

    assert health.json() is True
    assert created.status_code == 201, created.text
    assert stored_flow_ids == [created.json()["id"]]

    assert variables["WARDEN_STORE_URL"] == postgres.sync_database_url("warden")
    assert store_message_count == 0
    assert "schema_version" in store_tables
    for output in (up.stdout, up.stderr, status.stdout, reused.stdout, state_text):
        assert password not in output

    assert switch.returncode == 0, switch.stderr
    assert "now uses SQLite" in switch.stderr
    assert "restarting the Prefect server" in switch.stderr
    assert switched_state["database"] == "sqlite"
    assert switched_prefect["database"] == "sqlite"
    assert switched_prefect["pids"] != prefect_state["pids"]
    assert flow_after_switch.status_code == 404
    assert "export WARDEN_STORE_URL" not in switched_env_text
    assert "\nunset WARDEN_STORE_URL\n" in switched_env_text
    assert living(postgres_tree) == []
    assert switched_status.returncode == 0, switched_status.stdout
    assert not re.search(r"^PostgreSQL ", switched_status.stdout, re.MULTILINE)

    assert down.returncode == 0, down.stderr
    assert living(all_trees) == []


def test_cli_down_unreadable_state(scratch_dir: Path) -> None:
    stack_dir = scratch_dir / "broken-state"
    env = environment_without_prefect_api()
    # On PostgreSQL, so that the pid files below the directory include the cluster's.
    up = run_stack_command("up", "--dir", str(stack_dir), "--database", "postgresql", env=env)
    assert up.returncode == 0, up.stderr
    pids = all_pids(recorded_pids(json.loads((stack_dir / "stack.json").read_text())))

    (stack_dir / "stack.json").write_text("{ not json", encoding="utf-8")
    rejected = run_stack_command("up", "--dir", str(stack_dir), env=env)
    assert rejected.returncode != 0
    assert "stack down --dir" in rejected.stderr

    down = run_stack_command("down", "--dir", str(stack_dir), env=env)
    assert down.returncode == 0, down.stderr
    assert [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"] == []
    assert (stack_dir / "stack.json.corrupt").exists()


def test_status_names_processes_not_listed(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text('{"version": 1, "components": {}}', encoding="utf-8")
    # A process started from the directory and named in a pid file, as a component that stack.json lost.
    orphan = subprocess.Popen(["sleep", "60"], cwd=tmp_path)
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "dovecot.pid").write_text(f"{orphan.pid}\n", encoding="utf-8")
    env = environment_without_prefect_api()
    try:
        status = run_stack_command("status", "--dir", str(tmp_path), env=env)
        down = run_stack_command("down", "--dir", str(tmp_path), env=env)
    finally:
        orphan.kill()
        orphan.wait()

    assert status.returncode == 1
    assert "lists no component" in status.stdout
    assert f"pids {orphan.pid}" in status.stdout
    assert "stack down" in status.stdout
    assert down.returncode == 0, down.stderr
    assert "Stopped 1 more processes" in down.stdout


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[]", "the top level is a JSON list"),
        ('{"version": 99, "components": {}}', "its version is 99"),
        ('{"version": 1, "components": "x"}', "'components' is not an object"),
        ('{"version": 1, "components": {"mail": null}}', "components.mail is not an object"),
        ('{"version": 1, "components": {"mail": {"imap_port": "x"}}}', "components.mail.imap_port is 'x'"),
        ('{"version": 1, "components": {"prefect": {"pids": "1"}}}', "components.prefect.pids is not a list"),
    ],
)
def test_state_of_wrong_shape_rejected(tmp_path: Path, content: str, problem: str) -> None:
    from stack.__main__ import StackDirectory
    from stack.process import StackError

    directory = StackDirectory(tmp_path)
    directory.state_path.write_text(content, encoding="utf-8")

    with pytest.raises(StackError, match="unexpected shape") as raised:
        directory.load_state()
    assert problem in str(raised.value)
    assert "stack down --dir" in str(raised.value)
