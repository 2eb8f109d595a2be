"""TLS: STARTTLS and implicit TLS against aiosmtpd with a trustme certificate, certificate
verification through the system trust store, and the STARTTLS attacks a client must
resist (stripping, a refused STARTTLS, response injection)."""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from django.core.mail import EmailMessage, send_mail
from django.test import override_settings

from django_sockmail import outcome_of
from django_sockmail.models import Session
from django_sockmail.rendering import render
from django_sockmail.smtp.errors import SMTPProtocolError
from tests.servers import (
    MakeServer,
    Responder,
    Scripted,
    ScriptedServer,
    SMTPServer,
    backend_for,
    note_mail_from,
    note_peer_certificates,
    server_context,
)
from tests.toolkit import client_commands, transcript

pytestmark = pytest.mark.django_db(transaction=True)

STARTTLS_EHLO = b"250-scripted.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n"


def send(server: SMTPServer | ScriptedServer, **kwargs: Any) -> int:
    return send_mail(
        "Subject",
        "Body",
        "from@example.com",
        ["to@example.com"],
        connection=backend_for(server, **kwargs),
    )


def der_fingerprint(cert: trustme.LeafCert) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode("ascii"))
    return hashlib.sha256(der).hexdigest()


def test_starttls_delivers_the_exact_message_and_records_the_tls_session(
    make_smtpd: MakeServer,
    server_ctx: ssl.SSLContext,
    server_cert: trustme.LeafCert,
    trust_ca: str,
) -> None:
    server = make_smtpd(tls_context=server_ctx, require_starttls=True)
    fixed = {"Message-ID": "<tls-1@example.com>", "Date": "Thu, 26 Nov 2026 12:00:00 +0000"}
    message = EmailMessage(
        "Over TLS",
        "Line one\n.dot line\nÄÖÜ",
        "from@example.com",
        ["to@example.com"],
        headers=fixed,
    )

    assert backend_for(server, use_tls=True).send_messages([message]) == 1

    [received] = server.messages
    assert received.mail_from == "from@example.com"
    assert received.rcpt_tos == ["to@example.com"]
    _, rendered = render(message)  # as Django renders it, with CRLF line endings
    # Byte for byte, plus the line ending the data needs last (dot-stuffing undone).
    assert received.content == (rendered if rendered.endswith(b"\r\n") else rendered + b"\r\n")

    session = Session.objects.get()
    assert session.status == "ok"
    assert session.security == "starttls"
    assert session.tls_version in ("TLSv1.2", "TLSv1.3")
    assert session.tls_cipher
    assert session.tls_peer_fingerprint == der_fingerprint(server_cert)
    lines = transcript(session)
    commands = client_commands(session)
    assert [c.split()[0] for c in commands[:4]] == ["EHLO", "STARTTLS", "EHLO", "MAIL"]
    assert commands[0] == commands[2]  # the same name, asked again after TLS
    assert len(server.handler.ehlo_names) == 2  # the server heard both
    starttls = lines.index(("C", "STARTTLS"))
    second_ehlo = lines.index(("C", commands[2]), starttls)
    established = [
        i for i, (d, t) in enumerate(lines) if d == "*" and t.startswith("TLS established")
    ]
    assert len(established) == 1
    assert starttls < established[0] < second_ehlo


def test_implicit_tls_delivers_the_message(
    make_smtpd: MakeServer, server_ctx: ssl.SSLContext, trust_ca: str
) -> None:
    server = make_smtpd(ssl_context=server_ctx)

    assert send(server, use_ssl=True) == 1

    [received] = server.messages
    assert received.rcpt_tos == ["to@example.com"]
    session = Session.objects.get()
    assert session.security == "ssl"
    assert session.tls_version in ("TLSv1.2", "TLSv1.3")
    assert session.tls_cipher
    lines = transcript(session)
    assert ("C", "STARTTLS") not in lines
    # TLS came first: nothing was said before the handshake, not even the greeting.
    first_said = next(i for i, (d, _) in enumerate(lines) if d in ("C", "S"))
    established = next(i for i, (d, t) in enumerate(lines) if t.startswith("TLS established"))
    assert established < first_said


def test_the_ca_is_trusted_through_ssl_cert_file(
    make_smtpd: MakeServer,
    server_ctx: ssl.SSLContext,
    ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    untrusted: None,
) -> None:
    server = make_smtpd(tls_context=server_ctx, require_starttls=True)
    with pytest.raises(ssl.SSLError, match=r"(?i)certificate verify failed"):
        send(server, use_tls=True)
    assert server.messages == []

    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    assert send(server, use_tls=True) == 1
    assert len(server.messages) == 1


@pytest.mark.parametrize("security", ["use_tls", "use_ssl"])
def test_an_untrusted_certificate_fails_before_anything_is_sent(
    make_smtpd: MakeServer, server_ctx: ssl.SSLContext, untrusted: None, security: str
) -> None:
    if security == "use_tls":
        server = make_smtpd(tls_context=server_ctx)  # STARTTLS offered, not required
    else:
        server = make_smtpd(ssl_context=server_ctx)
    mail_from = note_mail_from(server)

    with pytest.raises(smtplib.SMTPException) as excinfo:
        send(server, **{security: True})

    assert isinstance(excinfo.value, ssl.SSLError)
    assert "certificate verify failed" in str(excinfo.value).lower()
    assert mail_from == []
    assert server.messages == []
    session = Session.objects.get()
    assert session.status == "failed"
    assert "certificate verify failed" in session.error.lower()
    assert session.tls_version == ""
    assert not any(c.startswith("MAIL") for c in client_commands(session))


def test_a_certificate_for_another_host_name_is_refused(
    make_smtpd: MakeServer, ca: trustme.CA, trust_ca: str
) -> None:
    other = ca.issue_cert("other.example")
    server = make_smtpd(tls_context=server_context(other), require_starttls=True)
    mail_from = note_mail_from(server)

    with pytest.raises(smtplib.SMTPException) as excinfo:
        send(server, use_tls=True)

    # The CA is trusted, so only the name can be what failed.
    assert isinstance(excinfo.value, ssl.SSLError)
    assert "mismatch" in str(excinfo.value)
    assert mail_from == []
    assert server.messages == []
    assert Session.objects.get().status == "failed"


@pytest.mark.parametrize(
    "replies",
    [
        pytest.param({}, id="ehlo-without-starttls"),
        pytest.param({"EHLO": b"502 5.5.1 EHLO not implemented\r\n"}, id="helo-only"),
    ],
)
def test_starttls_stripping_is_an_error_not_a_cleartext_session(
    scripted: Scripted, replies: dict[str, bytes]
) -> None:
    responder = Responder(dict(replies))
    server = scripted(responder)

    with pytest.raises(smtplib.SMTPNotSupportedError):
        send(server, use_tls=True)

    responder.wait()
    assert not any(line.upper().startswith((b"MAIL", b"RCPT", b"DATA")) for line in server.lines)
    assert responder.messages == []
    session = Session.objects.get()
    assert session.status == "failed"
    assert "STARTTLS" in session.error


def test_a_refused_starttls_is_an_error(scripted: Scripted) -> None:
    responder = Responder(
        {
            "EHLO": STARTTLS_EHLO,
            "STARTTLS": b"454 4.7.0 TLS not available due to temporary reason\r\n",
        }
    )
    server = scripted(responder)

    with pytest.raises(smtplib.SMTPResponseException) as excinfo:
        send(server, use_tls=True)

    assert excinfo.value.smtp_code == 454
    responder.wait()
    assert b"STARTTLS" in server.lines
    assert not any(line.upper().startswith(b"MAIL") for line in server.lines)
    session = Session.objects.get()
    assert session.status == "failed"
    assert ("S", "454 4.7.0 TLS not available due to temporary reason") in transcript(session)


def test_starttls_response_injection_is_refused(
    scripted: Scripted, server_ctx: ssl.SSLContext, trust_ca: str
) -> None:
    # "250 fake" arrives in cleartext with the 220: read after the handshake, it would
    # pass for the server's reply to the EHLO sent over TLS (NO STARTTLS, 2021).
    responder = Responder(
        {"EHLO": STARTTLS_EHLO, "STARTTLS": b"220 go ahead\r\n250 fake\r\n"}, tls_context=server_ctx
    )
    server = scripted(responder)

    with pytest.raises(smtplib.SMTPException) as excinfo:
        send(server, use_tls=True)

    assert isinstance(excinfo.value, SMTPProtocolError)
    responder.wait()
    assert not any(line.upper().startswith(b"MAIL") for line in server.lines)
    assert responder.messages == []
    session = Session.objects.get()
    assert session.status == "failed"
    assert session.tls_version == ""


def test_a_client_certificate_is_presented_and_accepted(
    make_smtpd: MakeServer,
    ca: trustme.CA,
    server_cert: trustme.LeafCert,
    trust_ca: str,
    tmp_path: Path,
) -> None:
    client_cert = ca.issue_cert("client.example")
    certfile, keyfile = tmp_path / "client.pem", tmp_path / "client.key"
    client_cert.cert_chain_pems[0].write_to_path(str(certfile))
    client_cert.private_key_pem.write_to_path(str(keyfile))
    context = server_context(server_cert)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    server = make_smtpd(tls_context=context, require_starttls=True)
    peer_certificates = note_peer_certificates(server)

    # The server really insists: without the certificate there is no session.
    with pytest.raises(smtplib.SMTPException):
        send(server, use_tls=True)
    assert server.messages == []

    sent = send(server, use_tls=True, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile))

    assert sent == 1
    assert len(server.messages) == 1
    assert ("DNS", "client.example") in peer_certificates[-1]["subjectAltName"]


def test_big_messages_pipelined_over_tls_arrive_whole(
    make_smtpd: MakeServer, server_ctx: ssl.SSLContext, trust_ca: str
) -> None:
    # Several MB through the non-blocking TLS writer: partial TLS writes are retried
    # with the same bytes, and the next message follows the content of the one before.
    server = make_smtpd(ssl_context=server_ctx)
    bodies = [f"{n} {'.dotted line and some text ' * 40}\n" * 3000 for n in range(3)]
    messages = [EmailMessage("big", b, "from@example.com", ["to@example.com"]) for b in bodies]
    with override_settings(SOCKMAIL={"STORE_CONTENT": "envelope"}):
        assert backend_for(server, use_ssl=True).send_messages(messages) == 3
    sent = [outcome_of(m) for m in messages]
    assert [len(r.content) for r in server.messages] == [o.size for o in sent]
    assert [hashlib.sha256(r.content).hexdigest() for r in server.messages] == [
        o.sha256 for o in sent
    ]
    assert min(o.size for o in sent) > 3_000_000
