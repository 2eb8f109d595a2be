"""The Django backend against a real aiosmtpd server."""

from __future__ import annotations

import email
import email.policy
import smtplib
import threading
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage, send_mail
from django.test import override_settings

from django_sockmail import outcome_of
from django_sockmail.backend import EmailBackend
from django_sockmail.models import Session
from django_sockmail.rendering import render
from tests.servers import Peer, SMTPServer, backend_for, mail_to

pytestmark = pytest.mark.django_db(transaction=True)

BACKEND = "django_sockmail.backend.EmailBackend"


def parsed(content: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_send_mail_delivers_the_exact_message(smtpd: SMTPServer) -> None:
    with mail_to(smtpd):
        assert (
            send_mail("Hello", "Body text\nline two", "from@example.org", ["to@example.org"]) == 1
        )
    [received] = smtpd.messages
    assert received.mail_from == "from@example.org"
    assert received.rcpt_tos == ["to@example.org"]
    message = parsed(received.content)
    assert message["Subject"] == "Hello"
    assert message["To"] == "to@example.org"
    assert message.get_content().splitlines() == ["Body text", "line two"]


def test_the_server_receives_exactly_the_bytes_django_renders(smtpd: SMTPServer) -> None:
    fixed = {"Message-ID": "<fixed@example.org>", "Date": "Thu, 26 Nov 2026 12:00:00 +0000"}
    message = EmailMessage(
        "Grüße", "Zeile 1\n.Zeile 2\nÄÖÜ", "from@example.org", ["to@example.org"], headers=fixed
    )
    assert backend_for(smtpd).send_messages([message]) == 1
    _, rendered = render(message)  # what Django's own backend would hand to smtplib
    # Byte for byte what Django renders, plus the line ending the data needs last
    # (Django 6's modern email API renders one already).
    ending = b"" if rendered.endswith(b"\r\n") else b"\r\n"
    assert smtpd.messages[0].content == rendered + ending


def test_email_message_with_cc_bcc_and_attachment(smtpd: SMTPServer) -> None:
    message = EmailMessage(
        "Report",
        "See attached.",
        "Sender <from@example.org>",
        ["a@example.org"],
        cc=["b@example.org"],
        bcc=["c@example.org"],
    )
    message.attach("report.csv", "a,b\n1,2\n", "text/csv")
    assert backend_for(smtpd).send_messages([message]) == 1
    [received] = smtpd.messages
    assert received.mail_from == "from@example.org"
    assert received.rcpt_tos == ["a@example.org", "b@example.org", "c@example.org"]
    assert b"c@example.org" not in received.content.split(b"\r\n\r\n")[0]  # Bcc not in headers
    attachment = next(parsed(received.content).iter_attachments())
    assert attachment.get_filename() == "report.csv"
    assert attachment.get_content().splitlines() == ["a,b", "1,2"]


def test_fifty_messages_over_one_opened_connection_use_one_session(smtpd: SMTPServer) -> None:
    messages = [
        EmailMessage(f"n{i}", "body", "from@example.org", [f"to{i}@example.org"]) for i in range(50)
    ]
    with backend_for(smtpd) as backend:
        assert backend.send_messages(messages[:25]) == 25
        assert backend.send_messages(messages[25:]) == 25
    assert len(smtpd.messages) == 50
    assert [parsed(m.content)["Subject"] for m in smtpd.messages] == [f"n{i}" for i in range(50)]
    session = Session.objects.get()
    assert session.message_count == 50 and session.sent_count == 50
    commands = [line.text for line in session.transcript_lines() if line.direction == "C"]
    assert sum(c.startswith("EHLO") for c in commands) == 1
    # No RSET at all, not even between the two calls: every transaction ended with its
    # data, which ends a transaction whatever the verdict (RFC 5321 §4.1.1.4), so the
    # server is never left mid-transaction and each next one starts with MAIL.
    assert sum(c == "RSET" for c in commands) == 0
    assert sum(c.startswith("MAIL") for c in commands) == 50
    assert commands[-1] == "QUIT"


def test_body_line_endings_cannot_end_the_data_early(smtpd: SMTPServer) -> None:
    body = "a\nb\rc\n.\nd\r\n.\r\ne\n..f\n.g\r.h\n."
    message = EmailMessage("dots", body, "from@example.org", ["to@example.org"])
    message.encoding = "us-ascii"
    assert backend_for(smtpd).send_messages([message]) == 1
    [received] = smtpd.messages  # exactly one message, nothing smuggled after it
    text = parsed(received.content).get_content()
    # Every bare CR and LF became a line break; every line and dot is intact.
    assert text.splitlines() == ["a", "b", "c", ".", "d", ".", "e", "..f", ".g", ".h", "."]


def test_bytes_body_with_bare_line_endings_is_one_message(scripted: Any) -> None:
    # A raw body that would end the data early on a lenient server if sent unnormalised.
    from django_sockmail.smtp.client import SMTPClient
    from django_sockmail.smtp.envelope import make_envelope

    def script(c: Any) -> None:
        c.send(b"220 hi\r\n")
        c.expect(b"EHLO", b"250 ok\r\n")
        c.expect(b"MAIL", b"250 ok\r\n")
        c.expect(b"RCPT", b"250 ok\r\n")
        c.expect(b"DATA", b"354 go\r\n")
        c.data = c.read_data()
        c.send(b"250 queued\r\n")
        c.expect(b"QUIT", b"221 bye\r\n")

    server = scripted(script)
    client = SMTPClient(server.host, server.port, timeout=5)
    client.open()
    raw = b"Subject: x\n\nline\n.\nMAIL FROM:<evil@x>\r.\rend"
    client.send(make_envelope("a@example.org", ["b@example.org"]), raw)
    client.quit()
    data = server.conversations[0].data
    assert data == b"Subject: x\r\n\r\nline\r\n..\r\nMAIL FROM:<evil@x>\r\n..\r\nend"


def test_one_refused_recipient_does_not_stop_the_others(smtpd: SMTPServer) -> None:
    message = EmailMessage("s", "b", "from@example.org", ["ok@example.org", "x@refused.test"])
    assert backend_for(smtpd).send_messages([message]) == 1
    assert smtpd.messages[0].rcpt_tos == ["ok@example.org"]
    outcome = outcome_of(message)
    assert outcome.status == "partial"
    assert outcome.refused_recipients["x@refused.test"].code == 550
    recorded = Session.objects.get().messages.get()
    refused = recorded.recipients.get(address="x@refused.test")
    assert refused.reply_code == 550 and not refused.accepted


def test_invalid_address_raises_value_error_before_anything_is_sent(smtpd: SMTPServer) -> None:
    good = EmailMessage("s", "b", "from@example.org", ["ok@example.org"])
    bad = EmailMessage("s", "b", "from@example.org", ["x@y.org> NOTIFY=SUCCESS"])
    with pytest.raises(ValueError):
        backend_for(smtpd).send_messages([good, bad])
    assert smtpd.messages == []
    assert Session.objects.count() == 0  # no connection was even made


def test_message_without_recipients_is_skipped(smtpd: SMTPServer) -> None:
    empty = EmailMessage("s", "b", "from@example.org", [])
    full = EmailMessage("s", "b", "from@example.org", ["to@example.org"])
    assert backend_for(smtpd).send_messages([empty, full]) == 1
    assert len(smtpd.messages) == 1
    assert backend_for(smtpd).send_messages([]) == 0


def test_open_and_close_return_values(smtpd: SMTPServer) -> None:
    backend = backend_for(smtpd)
    assert backend.open() is True
    assert backend.open() is False
    backend.close()
    backend.close()  # closing twice is harmless
    assert Session.objects.get().status == "ok"


def test_open_failing_silently_returns_none() -> None:
    backend = backend_for(Peer("127.0.0.1", 1), fail_silently=True)
    assert backend.open() is None
    assert backend.send_messages([EmailMessage("s", "b", "a@b.org", ["c@d.org"])]) == 0


def test_close_never_raises_on_a_dead_connection(smtpd: SMTPServer) -> None:
    backend = backend_for(smtpd)
    backend.open()
    smtpd.stop()
    backend.close()
    assert backend.connection is None


def test_a_connection_the_caller_opened_stays_open(smtpd: SMTPServer) -> None:
    backend = backend_for(smtpd)
    backend.open()
    message = EmailMessage("s", "b", "from@example.org", ["to@example.org"])
    backend.send_messages([message])
    assert backend.connection is not None and backend.connection.is_open
    backend.send_messages([message])
    backend.close()
    assert len(smtpd.messages) == 2 and Session.objects.count() == 1


def test_a_connection_it_opened_itself_is_closed(smtpd: SMTPServer) -> None:
    backend = backend_for(smtpd)
    backend.send_messages([EmailMessage("s", "b", "from@example.org", ["to@example.org"])])
    assert backend.connection is None
    assert Session.objects.get().transcript_lines()[-1].text == "connection closed"


def test_thread_safe_on_one_shared_connection(smtpd: SMTPServer) -> None:
    backend = backend_for(smtpd)
    backend.open()

    def send(n: int) -> None:
        for i in range(10):
            message = EmailMessage(f"t{n}-{i}", "b", "from@example.org", [f"{n}@example.org"])
            backend.send_messages([message])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    backend.close()
    subjects = sorted(parsed(m.content)["Subject"] for m in smtpd.messages)
    assert subjects == sorted(f"t{n}-{i}" for n in range(4) for i in range(10))
    assert Session.objects.get().sent_count == 40


@pytest.mark.email_settings
def test_settings_and_attributes_match_djangos_backend() -> None:
    with override_settings(
        EMAIL_HOST="mail.example.org",
        EMAIL_PORT=2525,
        EMAIL_HOST_USER="u",
        EMAIL_HOST_PASSWORD="p",
        EMAIL_USE_TLS=True,
        EMAIL_TIMEOUT=7,
        EMAIL_SSL_CERTFILE="/c.pem",
        EMAIL_SSL_KEYFILE="/k.pem",
    ):
        backend = EmailBackend()
    assert (backend.host, backend.port, backend.username, backend.password) == (
        "mail.example.org",
        2525,
        "u",
        "p",
    )
    assert backend.use_tls and not backend.use_ssl and backend.timeout == 7
    assert (backend.ssl_certfile, backend.ssl_keyfile) == ("/c.pem", "/k.pem")
    explicit = EmailBackend(host="h", port=1, username="x", password="", use_ssl=True, timeout=3)
    assert (explicit.host, explicit.port, explicit.username, explicit.password) == ("h", 1, "x", "")
    assert explicit.use_ssl and explicit.timeout == 3


@pytest.mark.email_settings
def test_tls_and_ssl_together_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        EmailBackend(use_tls=True, use_ssl=True)


def test_outbox_backend_is_not_involved(smtpd: SMTPServer) -> None:
    # pytest-django swaps EMAIL_BACKEND for locmem; an explicit connection bypasses it.
    backend_for(smtpd).send_messages([EmailMessage("s", "b", "a@example.org", ["b@example.org"])])
    assert mail.outbox == [] and len(smtpd.messages) == 1


def test_idna_domains_and_utf8_local_parts_in_the_envelope(smtpd: SMTPServer) -> None:
    message = EmailMessage("s", "b", "from@bücher.de", ["jörg@example.org", "x@münchen.de"])
    assert backend_for(smtpd).send_messages([message]) == 1
    [received] = smtpd.messages
    assert received.mail_from == "from@xn--bcher-kva.de"
    assert received.rcpt_tos == ["jörg@example.org", "x@xn--mnchen-3ya.de"]
    assert "SMTPUTF8" in received.mail_options


def test_ehlo_name_from_settings(smtpd: SMTPServer) -> None:
    with override_settings(SOCKMAIL={"LOCAL_HOSTNAME": "app.example.org"}):
        backend_for(smtpd).send_messages([EmailMessage("s", "b", "a@example.org", ["b@x.org"])])
    assert smtpd.handler.ehlo_names == ["app.example.org"]


def test_recording_can_be_turned_off(smtpd: SMTPServer) -> None:
    with override_settings(SOCKMAIL={"RECORD_SESSIONS": False}):
        backend_for(smtpd).send_messages([EmailMessage("s", "b", "a@example.org", ["b@x.org"])])
    assert len(smtpd.messages) == 1 and Session.objects.count() == 0


def test_an_unreadable_client_certificate_fails_like_djangos_backend(tmp_path: Any) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(OSError, match=r"missing\.pem") as info:
        backend_for(Peer("127.0.0.1", 1), use_tls=True, ssl_certfile=missing).open()
    assert isinstance(info.value, smtplib.SMTPException)
    quiet = backend_for(
        Peer("127.0.0.1", 1), use_tls=True, ssl_certfile=missing, fail_silently=True
    )
    assert quiet.open() is None
    session = Session.objects.last()
    assert session is not None and session.status == "failed" and "missing.pem" in session.error
    assert (session.host, session.port) == ("127.0.0.1", 1)


# -- settings that fail closed when the backend is built --------------------------------


@pytest.mark.email_settings
def test_a_port_past_65535_is_refused_not_wrapped_around(smtpd: SMTPServer) -> None:
    # 65536 + p reached port p, and the audit log recorded the port that was not used.
    wrapped = 65536 + smtpd.port
    with (
        override_settings(EMAIL_HOST=smtpd.host, EMAIL_PORT=wrapped),
        pytest.raises(ImproperlyConfigured, match=rf"EMAIL_PORT .*{wrapped}"),
    ):
        mail.get_connection(BACKEND).send_messages([EmailMessage("s", "b", "a@x.org", ["b@x.org"])])
    assert smtpd.messages == []
    assert Session.objects.count() == 0  # no session with a port that was not used


@pytest.mark.email_settings
@pytest.mark.parametrize("port", ["abc", -25, 0x10000, 25.5])
def test_a_port_given_to_the_backend_is_checked_too(port: object) -> None:
    with pytest.raises(ImproperlyConfigured, match="EmailBackend's port argument"):
        EmailBackend(host="127.0.0.1", port=port)  # type: ignore[arg-type]


@pytest.mark.email_settings
@pytest.mark.parametrize("timeout", ["5", 0, -1, True])
def test_a_timeout_that_is_not_seconds_is_refused(timeout: object) -> None:
    with (
        override_settings(EMAIL_TIMEOUT=timeout),
        pytest.raises(ImproperlyConfigured, match="EMAIL_TIMEOUT"),
    ):
        EmailBackend(host="127.0.0.1")
    with pytest.raises(ImproperlyConfigured, match="EmailBackend's timeout argument"):
        EmailBackend(host="127.0.0.1", timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.email_settings
def test_a_port_in_digits_is_taken_as_djangos_backend_takes_it(smtpd: SMTPServer) -> None:
    with override_settings(EMAIL_HOST=smtpd.host, EMAIL_PORT=str(smtpd.port)):
        backend = mail.get_connection(BACKEND)
    assert isinstance(backend, EmailBackend) and backend.port == smtpd.port
    assert backend.send_messages([EmailMessage("s", "b", "a@example.org", ["b@x.org"])]) == 1
    assert Session.objects.get().port == smtpd.port


@pytest.mark.parametrize("key", ["DANGEROUSLY_SKIP_TLS_VERIFICATION", "ALLOW_CLEARTEXT_AUTH"])
def test_a_security_switch_given_as_a_string_stops_the_backend(smtpd: SMTPServer, key: str) -> None:
    # "False" from an environment variable is true to bool(): verification off, or
    # credentials in cleartext. The backend is not built at all, so nothing is sent.
    with (
        override_settings(SOCKMAIL={key: "False"}),
        pytest.raises(ImproperlyConfigured, match=rf"SOCKMAIL\['{key}'\] must be True or False"),
    ):
        backend_for(smtpd).send_messages([EmailMessage("s", "b", "a@example.org", ["b@x.org"])])
    assert smtpd.messages == [] and Session.objects.count() == 0


def test_a_switch_changed_after_the_backend_was_built_fails_closed_when_read(
    smtpd: SMTPServer,
) -> None:
    backend = backend_for(smtpd)
    message = EmailMessage("s", "b", "a@example.org", ["b@x.org"])
    with (
        override_settings(SOCKMAIL={"ALLOW_CLEARTEXT_AUTH": "False"}),
        pytest.raises(ImproperlyConfigured, match="ALLOW_CLEARTEXT_AUTH"),
    ):
        backend.send_messages([message])
    assert smtpd.messages == []
