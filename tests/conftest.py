from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import django
import pytest
import trustme

from tests.servers import Script, ScriptedServer, SMTPServer, server_context


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from django.db import connections

    engine = connections["default"].vendor
    for item in items:
        if "postgresql" in item.keywords and engine != "postgresql":
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL (SOCKMAIL_TEST_DB)"))


@pytest.fixture(autouse=True)
def deprecated_email_settings(request: pytest.FixtureRequest) -> None:
    """On Django 6.1, a test marked ``email_settings`` runs on the deprecated EMAIL_*
    settings, the path many projects still take: MAILERS (tests/settings.py defines it,
    as a 6.1 project does) is taken away and the default backend is the locmem one, as
    Django's test environment makes it without MAILERS. Every other test runs with
    MAILERS, as Django's test environment leaves it (each mailer a locmem one)."""
    if django.VERSION >= (6, 1) and request.node.get_closest_marker("email_settings"):
        settings = request.getfixturevalue("settings")
        del settings.MAILERS
        settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def smtpd() -> Iterator[SMTPServer]:
    """A real aiosmtpd server that keeps what it receives."""
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def make_smtpd() -> Iterator[Callable[..., SMTPServer]]:
    """Start aiosmtpd servers with options (TLS contexts, authenticator, ...)."""
    servers: list[SMTPServer] = []

    def start(**kwargs: Any) -> SMTPServer:
        server = SMTPServer(**kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], ScriptedServer]]:
    """Start scripted (hostile) servers; any assertion failing in a script fails the test."""
    servers: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        server = ScriptedServer(script).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        assert not server.errors, server.errors


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def server_ctx(server_cert: trustme.LeafCert) -> ssl.SSLContext:
    """A server's TLS context holding the test CA's certificate for localhost."""
    return server_context(server_cert)


@pytest.fixture
def untrusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the system's own trust store, which does not hold the test CA."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture
def trust_ca(ca: trustme.CA, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the test CA the system trust store, the way a user would: SSL_CERT_FILE."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return str(path)


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist two workers may run the example project's demo at once (its
    # tests, and the fresh-clone test): each gives the demo's embedded SMTP server a port
    # of its own instead of the fixed 8025 (example_project/settings.py).
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        os.environ["SOCKMAIL_DEMO_SMTP_PORT"] = str(8026 + int(worker[2:]))
    # On Django 6.1 the tests marked email_settings use the deprecated EMAIL_* settings
    # and get_connection() on purpose (the path many projects still take), and tests hand
    # a backend over with send_mail(connection=...): Django's warnings about the tests'
    # own calls are no news. One raised from django_sockmail is still an error
    # (pyproject.toml's filterwarnings).
    if django.VERSION >= (6, 1):
        config.addinivalue_line(
            "filterwarnings",
            "ignore::django.utils.deprecation.RemovedInDjango2028Warning:"
            r"(tests|_pytest|pytest_django)(\.|$)",
        )
