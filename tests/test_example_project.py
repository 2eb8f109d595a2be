"""The example project, run the way a user runs it: ``manage.py`` in a subprocess."""

from __future__ import annotations

import http.cookiejar
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

import pytest

from tests.instances import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
MANAGE = ["example_project/manage.py"]


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    # pytest-django exported tests.settings; the example project must use its own.
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["SOCKMAIL_DEMO_DB"] = str(tmp_path / "demo.sqlite3")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *MANAGE, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_passes(demo_env: dict[str, str]) -> None:
    result = manage("check", env=demo_env)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_demo_sends_mail_and_prints_the_transcript(demo_env: dict[str, str]) -> None:
    result = manage("sockmail_demo", "--no-serve", env=demo_env)
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"

    # Every message reached the embedded server: 1 + 1 + 3 + 1, the last one only for
    # its good recipient.
    assert "The embedded server received 6 message(s)" in out
    assert re.search(r"DEMO0006 for dave@example\.com$", out, re.M)
    assert "DEMO0002 for bob@example.com, carol@example.com;" in out
    # The per-recipient refusal, as the backend reports it on the message.
    assert "sent 1, status partial, refused: nobody@nowhere.invalid (550 5.1.1 No such user)" in out

    # The transcript, as recorded in the database.
    assert re.search(r"^  S: 220 ", out, re.M)
    assert re.search(r"^  C: EHLO ", out, re.M)
    assert "C: MAIL FROM:<demo@example.com>" in out
    assert "C: RCPT TO:<reader3@example.com>" in out
    assert "S: 250 2.0.0 Ok: queued as DEMO0006" in out
    assert "C: RCPT TO:<nobody@nowhere.invalid>" in out
    assert "S: 550 5.1.1 No such user" in out
    assert "C: QUIT" in out
    # plain, cc + attachment, the batch over one connection, the refusal
    assert len(re.findall(r"^Session \d+:", out, re.M)) == 4

    assert "http://127.0.0.1:8000/admin/django_sockmail/session/" in out
    assert "demo / demo" in out


def test_the_demo_configures_mail_the_way_its_django_asks(demo_env: dict[str, str]) -> None:
    # MAILERS on Django 6.1, EMAIL_* on 5.2: a setting or call the running Django
    # deprecates (RemovedInDjango2028Warning on 6.1) stops the demo with an error.
    errors = ["-W", "error::DeprecationWarning", "-W", "error::PendingDeprecationWarning"]
    result = subprocess.run(
        [sys.executable, *errors, *MANAGE, "sockmail_demo", "--no-serve"],
        cwd=REPO_ROOT,
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "The embedded server received 6 message(s)" in result.stdout


def test_demo_serves_the_admin_until_interrupted(demo_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "demo.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, *MANAGE, "sockmail_demo", "--port", str(port)],
        cwd=REPO_ROOT,
        env=demo_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "4 SMTP sessions" in _log_in_to_the_changelist(base, process)

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        _stop(process, log)


def test_each_run_adds_to_the_demo_database_until_a_reset(demo_env: dict[str, str]) -> None:
    database = demo_env["SOCKMAIL_DEMO_DB"]
    first = manage("sockmail_demo", "--no-serve", env=demo_env)
    assert first.returncode == 0, first.stderr
    assert f"{database} keeps the sessions of every run: 4 SMTP session(s) so far." in first.stdout
    assert re.search(r"^    \./scripts/demo\.sh --reset$", first.stdout, re.M)

    second = manage("sockmail_demo", "--no-serve", env=demo_env)
    assert f"{database} keeps the sessions of every run: 8 SMTP session(s) so far." in second.stdout

    reset = manage("sockmail_demo", "--no-serve", "--reset", env=demo_env)
    assert reset.returncode == 0, reset.stderr
    assert f"Deleted the demo database {database}; migrating afresh." in reset.stdout
    assert f"{database} keeps the sessions of every run: 4 SMTP session(s) so far." in reset.stdout


def test_no_serve_prints_a_command_that_serves_the_admin_and_the_smtp_server(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    result = manage("sockmail_demo", "--no-serve", "--port", str(port), env=demo_env)
    assert result.returncode == 0, result.stderr
    script, manage_line = re.findall(r"^    (\S.*)$", result.stdout.split("\nAdmin\n")[1], re.M)
    assert script == f"./scripts/demo.sh --serve-only --port {port}"
    command = shlex.split(manage_line)
    assert command[1:] == [*MANAGE, "sockmail_demo", "--serve-only", "--port", str(port)]

    # Run as printed, from the repository root.
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=demo_env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        # What the first run recorded, and nothing sent again.
        changelist = _log_in_to_the_changelist(f"http://127.0.0.1:{port}", process)
        assert "4 SMTP sessions" in changelist
        log.seek(0)
        listening = re.search(r"listening on ([\d.]+):(\d+)", log.read())
        assert listening, "no embedded SMTP server"
        with socket.create_connection((listening[1], int(listening[2])), timeout=10) as smtp:
            assert smtp.recv(1024).startswith(b"220 ")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        _stop(process, log)


def _log_in_to_the_changelist(base: str, process: subprocess.Popen[str]) -> str:
    """The sessions' changelist, logged in as demo / demo once the server answers."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    login_page = _wait_for(opener, f"{base}/admin/login/", process)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page)
    assert token, login_page
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token.group(1),
            "username": "demo",
            "password": "demo",
            "next": "/admin/django_sockmail/session/",
        }
    ).encode()
    with opener.open(f"{base}/admin/login/", data=form, timeout=10) as response:
        assert response.url == f"{base}/admin/django_sockmail/session/"
        return str(response.read().decode())


def _stop(process: subprocess.Popen[str], log: IO[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    log.seek(0)
    print(log.read())
    log.close()


def _wait_for(
    opener: urllib.request.OpenerDirector, url: str, process: subprocess.Popen[str]
) -> str:
    """The page at ``url`` once the development server answers (the demo mails first)."""
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, "the demo exited before serving"
        try:
            with opener.open(url, timeout=5) as response:
                return str(response.read().decode())
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
