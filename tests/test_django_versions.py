"""The backend on each Django it supports: Django 6.1's MAILERS (the OPTIONS reach the
backend, ``send_mail(..., using=alias)`` goes through the named mailer) and the EMAIL_*
settings of Django 5.2 (deprecated on 6.1) — and no warning raised from our code on
either. Each test that is about one version is skipped on the other, saying why."""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import django
import pytest
import trustme
from django.core import mail
from django.test import override_settings

import django_sockmail
from django_sockmail.backend import EmailBackend
from django_sockmail.models import Session
from tests.servers import USERS, MakeServer, SMTPServer, replying_authenticator, server_context

pytestmark = pytest.mark.django_db(transaction=True)

OURS = "django_sockmail.backend.EmailBackend"
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"
HAS_MAILERS = django.VERSION >= (6, 1)
VERSION = django.get_version()

on_django_61 = pytest.mark.skipif(
    not HAS_MAILERS, reason=f"MAILERS and send_mail(using=...) are Django 6.1's; this is {VERSION}"
)
on_django_52 = pytest.mark.skipif(
    HAS_MAILERS,
    reason=f"Django 5.2's mail settings; on {VERSION} MAILERS replaces them (tested above)",
)

PACKAGE = Path(django_sockmail.__file__).parent


@contextmanager
def warnings_from_our_code() -> Iterator[list[str]]:
    """Every warning raised in the block that Python attributes to django_sockmail's
    code (a deprecation warning raised by Django on our behalf points at our line)."""
    ours: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield ours
    ours.extend(
        f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}"
        for w in caught
        if Path(w.filename).is_relative_to(PACKAGE)
    )


@pytest.fixture
def client_cert(ca: trustme.CA, tmp_path: Path) -> tuple[str, str]:
    cert = ca.issue_cert("client.example")
    certfile, keyfile = tmp_path / "client.pem", tmp_path / "client.key"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return str(certfile), str(keyfile)


@pytest.fixture
def tls_auth_server(
    make_smtpd: MakeServer, ca: trustme.CA, server_cert: trustme.LeafCert, trust_ca: str
) -> SMTPServer:
    """aiosmtpd that requires STARTTLS, a client certificate of the test CA, and AUTH."""
    context = server_context(server_cert)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return make_smtpd(
        tls_context=context,
        require_starttls=True,
        authenticator=replying_authenticator,
        auth_required=True,
    )


def options(server: SMTPServer, certs: tuple[str, str], **more: Any) -> dict[str, Any]:
    certfile, keyfile = certs
    return {
        "host": server.host,
        "port": server.port,
        "use_tls": True,
        "username": "alice",
        "password": USERS["alice"],
        "timeout": 5,
        "ssl_certfile": certfile,
        "ssl_keyfile": keyfile,
        **more,
    }


def assert_session_went_to(server: SMTPServer, security: str) -> Session:
    [session] = Session.objects.all()
    assert (session.host, session.port, session.security) == (server.host, server.port, security)
    assert session.status == "ok"
    commands = [line.text for line in session.transcript_lines() if line.direction == "C"]
    assert any(c.startswith("AUTH") for c in commands)
    assert USERS["alice"] not in " ".join(commands)
    return session


# -- Django 6.1: MAILERS --------------------------------------------------------------


@on_django_61
def test_a_mailers_entry_s_options_reach_our_backend(
    tls_auth_server: SMTPServer, client_cert: tuple[str, str]
) -> None:
    given = options(tls_auth_server, client_cert)
    mailers = {"default": {"BACKEND": LOCMEM}, "transactional": {"BACKEND": OURS, "OPTIONS": given}}
    with warnings_from_our_code() as ours, override_settings(MAILERS=mailers):
        backend = mail.mailers["transactional"]  # type: ignore[attr-defined,unused-ignore]

    assert isinstance(backend, EmailBackend)
    assert backend.alias == "transactional"
    assert {name: getattr(backend, name) for name in given} == given
    assert (backend.use_ssl, backend.security, backend.timeouts.command) == (False, "starttls", 5)
    assert ours == []


@on_django_61
@pytest.mark.parametrize(
    ("given", "port"), [({"use_ssl": True}, 465), ({"use_tls": True}, 587), ({}, 25)]
)
def test_a_mailer_without_a_port_gets_the_one_its_security_implies(
    given: dict[str, bool], port: int
) -> None:
    mailers = {"m": {"BACKEND": OURS, "OPTIONS": {"host": "mail.example.org", **given}}}
    with override_settings(MAILERS=mailers):
        backend = mail.mailers["m"]  # type: ignore[attr-defined,unused-ignore]
    assert isinstance(backend, EmailBackend)
    assert backend.port == port


@on_django_61
@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({}, "OPTIONS must define 'host'"),
        ({"host": "h", "use_tls": True, "use_ssl": True}, "'use_ssl' and 'use_tls'"),
        ({"host": "h", "hots": "typo"}, "Unknown options 'hots'"),
    ],
)
def test_a_wrong_mailers_entry_is_an_invalid_mailer_naming_its_alias(
    given: dict[str, Any], error: str
) -> None:
    mailers = {"broken": {"BACKEND": OURS, "OPTIONS": given}}
    with override_settings(MAILERS=mailers), pytest.raises(mail.InvalidMailer) as raised:  # type: ignore[attr-defined,unused-ignore]
        mail.mailers["broken"]  # type: ignore[attr-defined,unused-ignore]
    assert error in str(raised.value)
    assert "broken" in str(raised.value)


@on_django_61
@pytest.mark.parametrize(
    ("given", "option"),
    [
        ({"port": "abc"}, "port"),
        ({"port": 65536 + 25}, "port"),  # would reach port 25, and be recorded as 65561
        ({"port": -25}, "port"),
        ({"port": True}, "port"),
        ({"timeout": "5"}, "timeout"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_a_mailer_s_port_or_timeout_the_socket_would_misread_is_an_invalid_mailer(
    given: dict[str, Any], option: str
) -> None:
    mailers = {"broken": {"BACKEND": OURS, "OPTIONS": {"host": "127.0.0.1", **given}}}
    with override_settings(MAILERS=mailers), pytest.raises(mail.InvalidMailer) as raised:  # type: ignore[attr-defined,unused-ignore]
        mail.mailers["broken"]  # type: ignore[attr-defined,unused-ignore]
    assert f"MAILERS['broken']: OPTIONS[{option!r}]" in str(raised.value)
    assert repr(given[option]) in str(raised.value)
    assert not Session.objects.exists()


@on_django_61
def test_a_mailer_s_port_in_digits_is_taken(make_smtpd: MakeServer) -> None:
    server = make_smtpd()
    options = {"host": server.host, "port": str(server.port), "timeout": 5}
    with override_settings(MAILERS={"default": {"BACKEND": OURS, "OPTIONS": options}}):
        assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1
    assert Session.objects.get().port == server.port


@on_django_61
def test_send_mail_using_an_alias_goes_through_that_mailer(
    tls_auth_server: SMTPServer, client_cert: tuple[str, str], make_smtpd: MakeServer
) -> None:
    other = make_smtpd()  # the default mailer: ours too, to another server
    mailers = {
        "default": {"BACKEND": OURS, "OPTIONS": {"host": other.host, "port": other.port}},
        "transactional": {"BACKEND": OURS, "OPTIONS": options(tls_auth_server, client_cert)},
    }
    with warnings_from_our_code() as ours, override_settings(MAILERS=mailers):
        sent = mail.send_mail(
            "Receipt",
            "Thank you.",
            "shop@example.com",
            ["customer@example.com"],
            using="transactional",  # type: ignore[call-arg,unused-ignore]
        )

    assert sent == 1
    assert other.messages == []
    [received] = tls_auth_server.messages
    assert (received.mail_from, received.rcpt_tos) == ("shop@example.com", ["customer@example.com"])
    session = assert_session_went_to(tls_auth_server, "starttls")
    assert session.tls_version
    [message] = session.messages.all()
    assert message.subject == "Receipt"
    assert ours == []


@on_django_61
def test_send_mail_without_using_goes_through_the_default_mailer(make_smtpd: MakeServer) -> None:
    server = make_smtpd()
    mailers = {"default": {"BACKEND": OURS, "OPTIONS": {"host": server.host, "port": server.port}}}
    with warnings_from_our_code() as ours, override_settings(MAILERS=mailers):
        assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1
    assert [m.rcpt_tos for m in server.messages] == [["to@example.com"]]
    assert Session.objects.get().port == server.port
    assert ours == []


@pytest.mark.email_settings
@on_django_61
def test_the_deprecated_email_settings_are_read_without_a_warning_from_our_code(
    tls_auth_server: SMTPServer, client_cert: tuple[str, str]
) -> None:
    # Without MAILERS, Django 6.1 still builds the default mailer from EMAIL_*; it warns
    # the user of those settings itself, and reading them is no use of ours to warn about
    # (its own SMTP backend does not warn either).
    certfile, keyfile = client_cert
    settings = {
        "EMAIL_BACKEND": OURS,
        "EMAIL_HOST": tls_auth_server.host,
        "EMAIL_PORT": tls_auth_server.port,
        "EMAIL_USE_TLS": True,
        "EMAIL_HOST_USER": "alice",
        "EMAIL_HOST_PASSWORD": USERS["alice"],
        "EMAIL_TIMEOUT": 5,
        "EMAIL_SSL_CERTFILE": certfile,
        "EMAIL_SSL_KEYFILE": keyfile,
    }
    with warnings_from_our_code() as ours, override_settings(**settings):
        assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1
    assert ours == []
    assert len(tls_auth_server.messages) == 1
    assert_session_went_to(tls_auth_server, "starttls")


# -- Django 5.2: the EMAIL_* settings -------------------------------------------------


@on_django_52
def test_the_email_settings_reach_our_backend_and_send(
    tls_auth_server: SMTPServer, client_cert: tuple[str, str]
) -> None:
    certfile, keyfile = client_cert
    settings = {
        "EMAIL_BACKEND": OURS,
        "EMAIL_HOST": tls_auth_server.host,
        "EMAIL_PORT": tls_auth_server.port,
        "EMAIL_USE_TLS": True,
        "EMAIL_HOST_USER": "alice",
        "EMAIL_HOST_PASSWORD": USERS["alice"],
        "EMAIL_TIMEOUT": 5,
        "EMAIL_SSL_CERTFILE": certfile,
        "EMAIL_SSL_KEYFILE": keyfile,
        # Django 5.2 knows no MAILERS: an entry is ignored, by Django and by us.
        "MAILERS": {"default": {"BACKEND": LOCMEM}},
    }
    with warnings_from_our_code() as ours, override_settings(**settings):
        backend = mail.get_connection()
        assert isinstance(backend, EmailBackend)
        assert backend.alias is None
        assert (backend.host, backend.port, backend.use_tls, backend.use_ssl) == (
            tls_auth_server.host,
            tls_auth_server.port,
            True,
            False,
        )
        assert (backend.username, backend.password, backend.timeout) == ("alice", USERS["alice"], 5)
        assert (backend.ssl_certfile, backend.ssl_keyfile) == (certfile, keyfile)
        assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1

    assert ours == []
    assert len(tls_auth_server.messages) == 1
    assert_session_went_to(tls_auth_server, "starttls")


@on_django_52
@pytest.mark.parametrize(
    ("setting", "value"), [("EMAIL_PORT", "abc"), ("EMAIL_PORT", 65561), ("EMAIL_TIMEOUT", "5")]
)
def test_an_email_port_or_timeout_the_socket_would_misread_stops_get_connection(
    setting: str, value: object
) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(EMAIL_BACKEND=OURS, **{setting: value}):
        with pytest.raises(ImproperlyConfigured, match=setting):
            mail.get_connection()
        with pytest.raises(ImproperlyConfigured, match=setting):
            mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"])
    assert not Session.objects.exists()


@on_django_52
def test_arguments_override_the_email_settings() -> None:
    with override_settings(EMAIL_HOST="from.settings", EMAIL_PORT=2525, EMAIL_USE_SSL=True):
        backend = EmailBackend(host="given.example", use_ssl=False, use_tls=True)
    assert (backend.host, backend.port, backend.use_tls, backend.use_ssl) == (
        "given.example",
        2525,
        True,
        False,
    )
