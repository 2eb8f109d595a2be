"""Cases from review: where a careless client would report a message wrongly, get out
of step with the server, or behave unlike Django's backend."""

from __future__ import annotations

import smtplib
import ssl
from functools import cached_property, partial
from typing import Any

import pytest
import trustme
from django.core.mail import EmailMessage
from django.utils.functional import lazy

from django_sockmail import outcome_of
from django_sockmail.backend import EmailBackend
from django_sockmail.models import Message, Session
from django_sockmail.smtp.errors import SMTPProtocolError
from tests import toolkit
from tests.servers import Conversation, SMTPServer, backend_for

pytestmark = pytest.mark.django_db(transaction=True)

EHLO = b"250-scripted.test\r\n250 8BITMIME\r\n"


def greet(c: Conversation, ehlo: bytes = EHLO) -> None:
    c.send(b"220 scripted.test ESMTP\r\n")
    c.expect(b"EHLO", ehlo)


message = partial(toolkit.message, to="to@example.org")


def test_content_sent_but_no_verdict_is_unknown_not_unsent(scripted: Any) -> None:
    def script(c: Conversation) -> None:
        greet(c)
        c.expect(b"MAIL", b"250 ok\r\n")
        c.expect(b"RCPT", b"250 ok\r\n")
        c.expect(b"DATA", b"354 go\r\n")
        c.read_data()  # ... and hang up before saying whether it took it

    server = scripted(script)
    first, second = message(), message()
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        backend_for(server).send_messages([first, second])
    assert outcome_of(first).status == "unknown"
    assert info.value.unknown_messages == [first]  # type: ignore[attr-defined]
    assert info.value.unsent_messages == [second]  # type: ignore[attr-defined]
    assert info.value.sent_messages == []  # type: ignore[attr-defined]
    recorded = Message.objects.order_by("position").values_list("status", flat=True)
    assert list(recorded) == ["unknown", "not_sent"]  # the second, never offered, too


def test_an_extra_reply_is_an_error_not_an_answer_to_the_next_command(scripted: Any) -> None:
    def script(c: Conversation) -> None:
        greet(c)
        c.expect(b"MAIL", b"250 ok\r\n250 ok\r\n")  # one reply too many
        c.expect(b"RCPT", b"550 no such user\r\n")
        c.expect(b"DATA", b"354 go\r\n")
        c.read_data()
        c.send(b"250 queued\r\n")

    server = scripted(script)
    with pytest.raises(SMTPProtocolError):
        backend_for(server).send_messages([message()])
    # The stray 250 was never taken for the RCPT's reply: nothing looked accepted.
    assert [line for line in server.lines if line.startswith(b"RCPT")] == []
    assert Message.objects.get().status == "not_sent"  # no reply refused it: retryable


def test_a_verdict_followed_by_garbage_still_counts(scripted: Any) -> None:
    def script(c: Conversation) -> None:
        greet(c)
        c.expect(b"MAIL", b"250 ok\r\n")
        c.expect(b"RCPT", b"250 ok\r\n")
        c.expect(b"DATA", b"354 go\r\n")
        c.read_data()
        c.send(b"250 2.0.0 Ok: queued as ABC123\r\nnot smtp\r\n")

    server = scripted(script)
    sent = message()
    assert backend_for(server).send_messages([sent]) == 1
    assert outcome_of(sent).queue_id == "ABC123"
    session = Session.objects.get()
    assert session.messages.get().status == "sent"
    assert session.status == "failed" and "SMTPProtocolError" in session.error


def test_no_auth_without_a_password_like_djangos_backend(smtpd: SMTPServer) -> None:
    # aiosmtpd here offers no AUTH: trying it would fail the whole send.
    backend = backend_for(smtpd, username="relay-user", password="")
    assert backend.send_messages([message()]) == 1


def test_a_bad_cram_md5_challenge_is_an_authentication_error(scripted: Any) -> None:
    def script(c: Conversation) -> None:
        greet(c, b"250-scripted.test\r\n250 AUTH CRAM-MD5\r\n")
        c.expect(b"AUTH CRAM-MD5", b"334 !!!not-base64!!!\r\n")
        c.readline()

    server = scripted(script)
    backend = backend_for(server, username="u", password="p")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        backend.open()
    assert Session.objects.get().status == "failed"


def test_lazy_strings_are_addresses_too(smtpd: SMTPServer) -> None:
    lazy_address = lazy(str, str)("to@example.org")
    msg = EmailMessage("s", "b", lazy(str, str)("from@example.org"), [lazy_address])
    assert backend_for(smtpd).send_messages([msg]) == 1
    assert smtpd.messages[0].rcpt_tos == ["to@example.org"]


@pytest.mark.email_settings
def test_a_subclass_can_supply_its_own_ssl_context(
    make_smtpd: Any, ca: trustme.CA, server_cert: trustme.LeafCert
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_context)
    server = make_smtpd(tls_context=server_context, require_starttls=True)

    class PrivateCABackend(EmailBackend):
        @cached_property
        def ssl_context(self) -> ssl.SSLContext:
            context = ssl.create_default_context()
            ca.configure_trust(context)
            return context

    backend = PrivateCABackend(host=server.host, port=server.port, use_tls=True, timeout=5)
    assert backend.send_messages([message()]) == 1
    assert Session.objects.get().tls_version.startswith("TLSv1")
