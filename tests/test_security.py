"""The TLS and AUTH policy, with our own servers where aiosmtpd cannot play the part
(CRAM-MD5, XOAUTH2, a server off loopback), and a scan for secrets everywhere a
credential could leak: the database, log records, exception texts and reprs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import smtplib
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trustme
from django.test import override_settings

from django_sockmail.backend import EmailBackend
from django_sockmail.models import Session
from django_sockmail.smtp import client as smtp_client
from django_sockmail.smtp.errors import SMTPProtocolError
from tests import toolkit
from tests.servers import Conversation, SMTPServer, authenticator, backend_for, server_context
from tests.test_auth import assert_no_secret_in_transcript, database_text, secret_forms

pytestmark = pytest.mark.django_db(transaction=True)

USER, PASSWORD, TOKEN = "alice", "correct horse battery staple", "ya29.A0ARrdaM-secret-token"
EHLO_AUTH = b"250-scripted.test\r\n250 AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2\r\n"
CHALLENGE = base64.b64encode(b"<1896.697170952@scripted.test>")


message = partial(toolkit.message, to="to@example.org")


def tls_server(make_smtpd: Any, cert: trustme.LeafCert, **kwargs: Any) -> SMTPServer:
    server: SMTPServer = make_smtpd(tls_context=server_context(cert), **kwargs)
    return server


def auth_script(mechanism: bytes, answers: list[bytes]) -> Callable[[Conversation], None]:
    """A server offering every mechanism; it answers the client's AUTH with ``answers``
    in turn, keeps what the client said, and takes one message."""

    def script(c: Conversation) -> None:
        c.send(b"220 scripted.test ESMTP\r\n")
        c.expect(b"EHLO", EHLO_AUTH)
        c.expect(b"AUTH " + mechanism, answers[0])
        for answer in answers[1:]:
            c.readline()
            c.send(answer)
        if answers[-1].startswith(b"235"):
            c.expect(b"MAIL", b"250 ok\r\n")
            c.expect(b"RCPT", b"250 ok\r\n")
            c.expect(b"DATA", b"354 go\r\n")
            c.read_data()
            c.send(b"250 queued\r\n")
        c.expect(b"QUIT", b"221 bye\r\n")

    return script


# CRAM-MD5 and XOAUTH2 against servers of our own


def test_cram_md5_answers_the_challenge_with_the_hmac(scripted: Any) -> None:
    server = scripted(auth_script(b"CRAM-MD5", [b"334 " + CHALLENGE + b"\r\n", b"235 ok\r\n"]))
    with override_settings(SOCKMAIL={"AUTH_MECHANISM": "CRAM-MD5"}):
        sent = backend_for(server, username=USER, password=PASSWORD).send_messages([message()])
    assert sent == 1
    answer = base64.b64decode(server.conversations[0].received[2]).decode()
    digest = hmac.new(PASSWORD.encode(), base64.b64decode(CHALLENGE), hashlib.md5).hexdigest()
    assert answer == f"{USER} {digest}"


def test_cram_md5_refused(scripted: Any) -> None:
    answers = [b"334 " + CHALLENGE + b"\r\n", b"535 5.7.8 no\r\n"]
    server = scripted(auth_script(b"CRAM-MD5", answers))
    with pytest.raises(smtplib.SMTPAuthenticationError):
        backend_for(server, username=USER, password="wrong").send_messages([message()])
    assert Session.objects.get().status == "failed"


def fresh_token(username: str) -> str:
    fresh_token.calls.append(username)  # type: ignore[attr-defined]
    return f"{TOKEN}-{len(fresh_token.calls)}"  # type: ignore[attr-defined]


@pytest.fixture
def token_source() -> Callable[[str], str]:
    fresh_token.calls = []  # type: ignore[attr-defined]
    return fresh_token


def test_xoauth2_token_comes_fresh_from_the_callable_in_settings(
    scripted: Any, token_source: Callable[[str], str]
) -> None:
    server = scripted(auth_script(b"XOAUTH2", [b"235 2.7.0 Accepted\r\n"]))
    with override_settings(SOCKMAIL={"OAUTH2_TOKEN": "tests.test_security.fresh_token"}):
        backend = backend_for(server, username=USER, password="")
        assert backend.send_messages([message()]) == 1
        assert backend.send_messages([message()]) == 1  # a second session
    assert fresh_token.calls == [USER, USER]  # type: ignore[attr-defined]
    first, second = (base64.b64decode(c.received[1].split()[2]) for c in server.conversations)
    assert first == f"user={USER}\x01auth=Bearer {TOKEN}-1\x01\x01".encode()
    assert second.endswith(f"{TOKEN}-2\x01\x01".encode())
    stored = database_text()
    assert TOKEN not in stored and "AUTH XOAUTH2 ********" in stored
    for session in Session.objects.all():
        commands = [line.text for line in session.transcript_lines() if line.direction == "C"]
        assert "AUTH XOAUTH2 ********" in commands
    assert_no_secret_in_transcript(secret_forms(TOKEN))


def test_xoauth2_refused_token(scripted: Any, token_source: Callable[[str], str]) -> None:
    error_report = base64.b64encode(b'{"status":"401","schemes":"bearer"}')
    server = scripted(
        auth_script(b"XOAUTH2", [b"334 " + error_report + b"\r\n", b"535 5.7.8 bad token\r\n"])
    )
    with (
        override_settings(SOCKMAIL={"OAUTH2_TOKEN": fresh_token}),
        pytest.raises(smtplib.SMTPAuthenticationError) as info,
    ):
        backend_for(server, username=USER).send_messages([message()])
    assert info.value.smtp_code == 535
    assert server.conversations[0].received[2] == b""  # the empty answer to the 334


def test_a_pinned_mechanism_is_used_even_when_a_stronger_is_offered(make_smtpd: Any) -> None:
    server = make_smtpd(authenticator=authenticator, auth_require_tls=False)
    with override_settings(SOCKMAIL={"AUTH_MECHANISM": "LOGIN"}):
        backend_for(server, username=USER, password=PASSWORD).send_messages([message()])
    commands = [
        line.text for line in Session.objects.get().transcript_lines() if line.direction == "C"
    ]
    assert "AUTH LOGIN" in commands and not any(c.startswith("AUTH PLAIN") for c in commands)


# Cleartext AUTH


def test_cleartext_auth_off_loopback_is_refused_before_any_secret_is_sent(
    make_smtpd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_smtpd(authenticator=authenticator, auth_require_tls=False)
    # The server stands in for one across the network: the client must not treat it
    # as loopback. (The predicate itself is tested on real addresses below.)
    monkeypatch.setattr(smtp_client, "is_loopback", lambda address: False)
    with pytest.raises(smtplib.SMTPNotSupportedError, match="unencrypted"):
        backend_for(server, username=USER, password=PASSWORD).send_messages([message()])
    session = Session.objects.get()
    lines = session.transcript_lines()
    assert lines and not any(
        line.direction == "C" and line.text.startswith("AUTH") for line in lines
    )
    assert session.status == "failed" and server.messages == []


def test_cleartext_auth_off_loopback_when_explicitly_allowed(
    make_smtpd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_smtpd(authenticator=authenticator, auth_require_tls=False)
    monkeypatch.setattr(smtp_client, "is_loopback", lambda address: False)
    with override_settings(SOCKMAIL={"ALLOW_CLEARTEXT_AUTH": True}):
        backend = backend_for(server, username=USER, password=PASSWORD)
        assert backend.send_messages([message()]) == 1


def test_auth_over_tls_off_loopback_is_fine(
    make_smtpd: Any, server_cert: trustme.LeafCert, trust_ca: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = tls_server(make_smtpd, server_cert, authenticator=authenticator)
    monkeypatch.setattr(smtp_client, "is_loopback", lambda address: False)
    backend = backend_for(server, username=USER, password=PASSWORD, use_tls=True)
    assert backend.send_messages([message()]) == 1


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("192.0.2.10", False),
        ("2001:db8::1", False),
        ("10.0.0.1", False),
        ("not-an-ip", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert smtp_client.is_loopback(address) is loopback


# TLS policy


def test_opportunistic_tls_upgrades_when_offered(
    make_smtpd: Any, server_cert: trustme.LeafCert, trust_ca: str
) -> None:
    server = tls_server(make_smtpd, server_cert)
    with override_settings(SOCKMAIL={"OPPORTUNISTIC_TLS": True}):
        assert backend_for(server).send_messages([message()]) == 1
    session = Session.objects.get()
    assert session.security == "starttls" and session.tls_version.startswith("TLSv1")


def test_opportunistic_tls_carries_on_in_cleartext_when_not_offered(smtpd: SMTPServer) -> None:
    with override_settings(SOCKMAIL={"OPPORTUNISTIC_TLS": True}):
        assert backend_for(smtpd).send_messages([message()]) == 1
    assert Session.objects.get().security == "none"


def test_opportunistic_tls_carries_on_when_starttls_is_refused(scripted: Any) -> None:
    def script(c: Conversation) -> None:
        c.send(b"220 scripted.test\r\n")
        c.expect(b"EHLO", b"250-scripted.test\r\n250 STARTTLS\r\n")
        c.expect(b"STARTTLS", b"454 4.7.0 TLS not available\r\n")
        c.take_message()
        c.expect(b"QUIT", b"221 bye\r\n")

    server = scripted(script)
    with override_settings(SOCKMAIL={"OPPORTUNISTIC_TLS": True}):
        assert backend_for(server).send_messages([message()]) == 1


def test_a_ca_bundle_setting_trusts_a_private_ca(
    make_smtpd: Any, ca: trustme.CA, server_cert: trustme.LeafCert, tmp_path: Any
) -> None:
    server = tls_server(make_smtpd, server_cert, require_starttls=True)
    bundle = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with override_settings(SOCKMAIL={"SSL_CAFILE": str(bundle)}):
        assert backend_for(server, use_tls=True).send_messages([message()]) == 1


def test_skipping_verification_is_possible_loud_and_recorded(
    make_smtpd: Any, server_cert: trustme.LeafCert, caplog: pytest.LogCaptureFixture
) -> None:
    server = tls_server(make_smtpd, server_cert, require_starttls=True)
    with pytest.raises(smtplib.SMTPException) as info:  # untrusted CA: refused by default
        backend_for(server, use_tls=True).send_messages([message()])
    assert str(info.value).startswith("TLS with")  # a sentence, not a tuple
    assert Session.objects.get().error.startswith("SMTPTLSError: TLS with")
    with (
        override_settings(SOCKMAIL={"DANGEROUSLY_SKIP_TLS_VERIFICATION": True}),
        caplog.at_level(logging.WARNING, logger="django_sockmail"),
    ):
        assert backend_for(server, use_tls=True).send_messages([message()]) == 1
    assert any("verification is OFF" in r.getMessage() for r in caplog.records)
    latest = Session.objects.order_by("-id").first()
    assert latest is not None
    assert any("verification is disabled" in line.text for line in latest.transcript_lines())


# Secrets, everywhere


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"])
def test_no_secret_in_database_logs_exceptions_or_reprs(
    scripted: Any,
    mechanism: str,
    caplog: pytest.LogCaptureFixture,
    token_source: Callable[[str], str],
) -> None:
    first = {
        "PLAIN": b"535 5.7.8 no\r\n",
        "LOGIN": b"334 VXNlcm5hbWU6\r\n",
        "CRAM-MD5": b"334 " + CHALLENGE + b"\r\n",
        "XOAUTH2": b"334 eyJzdGF0dXMiOiI0MDEifQ==\r\n",
    }[mechanism]
    rest = {"LOGIN": [b"334 UGFzc3dvcmQ6\r\n", b"535 no\r\n"]}.get(mechanism, [b"535 no\r\n"])
    answers = [first] if mechanism == "PLAIN" else [first, *rest]
    server = scripted(auth_script(mechanism.encode(), answers))
    settings = {"AUTH_MECHANISM": mechanism, "OAUTH2_TOKEN": fresh_token}
    backend: EmailBackend
    with (
        override_settings(SOCKMAIL=settings),
        caplog.at_level(logging.DEBUG),
        pytest.raises(smtplib.SMTPAuthenticationError) as info,
    ):
        backend = backend_for(server, username=USER, password=PASSWORD)
        backend.send_messages([message()])
    exposed = "\n".join(
        [
            database_text(),
            "\n".join(r.getMessage() + str(r.exc_info) for r in caplog.records),
            str(info.value),
            repr(info.value),
            repr(info.value.args),
            repr(backend),
            repr(backend.connection),
        ]
    )
    assert Session.objects.exists()
    secrets = [
        *secret_forms(PASSWORD),
        *secret_forms(TOKEN),
        base64.b64encode(TOKEN.encode()).decode(),
    ]
    for secret in secrets:
        assert secret not in exposed, secret
    # The transcript as stored: each chunk's JSON text, and the lines decoded from it.
    assert_no_secret_in_transcript(secrets)


# Hostile servers: replies that would exhaust memory, or are not SMTP at all


def endless_multiline(c: Conversation) -> None:
    c.send(b"220 scripted.test\r\n")
    c.readline()
    for _ in range(5000):  # far past any honest EHLO reply; the client must give up
        c.send(b"250-" + b"X" * 60 + b"\r\n")


def endless_line(c: Conversation) -> None:
    c.send(b"220 scripted.test\r\n")
    c.readline()
    for _ in range(200):  # 1.6 MB and no line end
        c.send(b"2" * 8192)


def mixed_codes(c: Conversation) -> None:
    c.send(b"220 scripted.test\r\n")
    c.readline()
    c.send(b"250-scripted.test\r\n550 changed my mind\r\n")


def not_smtp(c: Conversation) -> None:
    c.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")


@pytest.mark.parametrize(
    ("script", "says"),
    [
        (endless_multiline, "too large"),
        (endless_line, "too long"),
        (mixed_codes, "code changed"),
        (not_smtp, "malformed"),
    ],
)
def test_hostile_replies_end_in_a_protocol_error_and_a_record(
    scripted: Any, script: Callable[[Conversation], None], says: str
) -> None:
    server = scripted(script)
    with pytest.raises(SMTPProtocolError, match=says) as info:
        backend_for(server).send_messages([message()])
    assert isinstance(info.value, smtplib.SMTPException)
    session = Session.objects.get()
    assert session.status == "failed" and "SMTPProtocolError" in session.error
    # What was kept of the flood is bounded by the parser's limits.
    assert sum(len(line.text) for line in session.transcript_lines()) < 300_000
    assert sum(len(chunk.lines) for chunk in session.chunks.all()) < 300_000
    assert not any(line.startswith(b"MAIL") for line in server.lines)


def test_an_ehlo_name_with_a_line_break_never_reaches_the_wire(scripted: Any) -> None:
    def script(c: Conversation) -> None:
        c.send(b"220 scripted.test\r\n")
        c.readline()  # nothing ever comes: the client refuses to send the command

    server = scripted(script)
    evil = "client.example\r\nMAIL FROM:<evil@example.org>"
    with override_settings(SOCKMAIL={"LOCAL_HOSTNAME": evil}), pytest.raises(ValueError):
        backend_for(server, timeout=2).send_messages([message()])
    assert server.lines == []
    assert Session.objects.get().status == "failed"
