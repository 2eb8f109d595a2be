"""What the audit log keeps, and that keeping it never gets in the way of sending."""

from __future__ import annotations

import base64
import email
import hashlib
import logging
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import serializers
from django.core.mail import EmailMessage
from django.db import connections, transaction
from django.test import override_settings

from django_sockmail import outcome_of, signals
from django_sockmail.models import Message, Recipient, Session, TranscriptChunk, TranscriptLine
from tests.servers import SMTPServer, authenticator, backend_for

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "audit"])

BODY = "The body: the secret plan is in here.\n" * 3
PASSWORD = "correct horse battery staple"


def send(server: SMTPServer, **kwargs: Any) -> EmailMessage:
    message = EmailMessage(
        "Quarterly numbers", BODY, "from@example.org", ["to@example.org"], **kwargs
    )
    assert backend_for(server).send_messages([message]) == 1
    return message


def all_lines() -> list[TranscriptLine]:
    """Every transcript line stored, of every session."""
    return [line for session in Session.objects.all() for line in session.transcript_lines()]


def content_line() -> str:
    [line] = [line for line in all_lines() if line.direction == "D"]
    return line.text


def everything_stored() -> str:
    """Every row of the audit log, serialised: what a database dump would show; and the
    transcript's lines decoded from their chunks' JSON, so no escape in it hides a word."""
    models = (Session, Message, Recipient, TranscriptChunk)
    dump = "".join(serializers.serialize("json", m.objects.all()) for m in models)
    return "\n".join([dump, *(line.text for line in all_lines())])


def test_headers_mode_is_the_default(smtpd: SMTPServer) -> None:
    send(smtpd)
    line = content_line()
    assert "Subject: Quarterly numbers" in line
    assert "secret plan" not in everything_stored()
    message = Message.objects.get()
    assert message.content_mode == "headers" and message.subject == "Quarterly numbers"
    assert message.content_stored == len(message.headers.encode())


def test_full_mode_keeps_the_whole_message(smtpd: SMTPServer) -> None:
    with override_settings(SOCKMAIL={"STORE_CONTENT": "full"}):
        send(smtpd)
    line = content_line()
    assert "Subject: Quarterly numbers" in line and "the secret plan is in here." in line
    message = Message.objects.get()
    assert message.content_mode == "full" and message.content_stored == message.size


def test_full_mode_is_capped_and_says_so(smtpd: SMTPServer) -> None:
    with override_settings(SOCKMAIL={"STORE_CONTENT": "full", "CONTENT_MAX_BYTES": 100}):
        send(smtpd)
    message = Message.objects.get()
    assert message.size > 100 and message.content_stored == 100
    assert "the first 100 stored" in content_line()
    assert "secret plan" not in content_line()  # it lies beyond the first 100 bytes


def test_envelope_mode_keeps_nothing_of_the_content(smtpd: SMTPServer) -> None:
    with override_settings(SOCKMAIL={"STORE_CONTENT": "envelope"}):
        send(smtpd)
    stored = everything_stored()
    assert "Quarterly" not in stored and "secret plan" not in stored
    assert "Subject" not in stored
    row = Message.objects.get()
    assert (row.subject, row.headers, row.content_stored) == ("", "", 0)
    assert row.envelope_from == "from@example.org"
    assert list(row.recipients.values_list("address", flat=True)) == ["to@example.org"]
    # The Message-ID is kept: it identifies the message without revealing its content.
    sent_id = email.message_from_bytes(smtpd.messages[0].content)["Message-ID"]
    assert row.message_id == sent_id


@pytest.mark.parametrize("mode", ["full", "headers", "envelope"])
def test_every_mode_records_the_size_and_digest_of_what_was_sent(
    smtpd: SMTPServer, mode: str
) -> None:
    with override_settings(SOCKMAIL={"STORE_CONTENT": mode}):
        send(smtpd)
    received = smtpd.messages[0].content  # what the server stored, byte for byte
    message = Message.objects.get()
    assert message.size == len(received)
    assert message.sha256 == hashlib.sha256(received).hexdigest()


@pytest.mark.parametrize("mode", ["full", "headers", "envelope"])
def test_no_mode_ever_stores_a_credential(make_smtpd: Any, mode: str) -> None:
    server = make_smtpd(authenticator=authenticator, auth_require_tls=False)
    with override_settings(SOCKMAIL={"STORE_CONTENT": mode}):
        message = EmailMessage("s", f"password in body? {PASSWORD}", "a@example.org", ["b@x.org"])
        backend = backend_for(server, username="alice", password=PASSWORD)
        assert backend.send_messages([message]) == 1
    stored = everything_stored()
    secrets = [
        base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode(),
        base64.b64encode(PASSWORD.encode()).decode(),
    ]
    assert not any(secret in stored for secret in secrets)
    if mode != "full":  # in full mode the body is the user's own choice to keep
        assert PASSWORD not in stored
    assert any(line.text == "AUTH PLAIN ********" for line in all_lines())


def test_an_unknown_mode_is_a_configuration_error(smtpd: SMTPServer) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with (
        override_settings(SOCKMAIL={"STORE_CONTENT": "bodies"}),
        pytest.raises(ImproperlyConfigured, match="STORE_CONTENT"),
    ):
        send(smtpd)


@pytest.mark.postgresql
def test_the_record_survives_the_callers_rollback(smtpd: SMTPServer) -> None:
    audit_alias = override_settings(SOCKMAIL={"DATABASE": "audit"})
    with audit_alias, pytest.raises(RuntimeError), transaction.atomic():
        User.objects.create(username="order-42")  # the caller's own work
        send(smtpd)
        raise RuntimeError("the order failed after the mail went out")
    assert not User.objects.exists()  # the caller's work was rolled back
    assert len(smtpd.messages) == 1  # the mail left the machine
    session = Session.objects.get()  # ... and its record stayed
    assert session.messages.get().status == "sent"


@pytest.mark.postgresql
def test_without_an_audit_alias_the_rollback_takes_the_record(smtpd: SMTPServer) -> None:
    # The contrast that shows why docs/operations.md asks for an alias of its own.
    with pytest.raises(RuntimeError), transaction.atomic():
        send(smtpd)
        raise RuntimeError
    assert len(smtpd.messages) == 1 and not Session.objects.exists()


def test_a_broken_database_never_stops_the_mail(
    smtpd: SMTPServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The audit connection points at a database that is not there.
    audit = connections["audit"]
    audit.close()
    broken = {**audit.settings_dict, "NAME": "/nonexistent/dir/db.sqlite3", "PORT": "1"}
    monkeypatch.setattr(audit, "settings_dict", broken)
    with override_settings(SOCKMAIL={"DATABASE": "audit"}), caplog.at_level(logging.ERROR):
        message = EmailMessage("s", "b", "from@example.org", ["to@example.org"])
        assert backend_for(smtpd).send_messages([message]) == 1
    audit.close()
    assert len(smtpd.messages) == 1  # delivered exactly once
    assert outcome_of(message).status == "sent"
    [log] = [r for r in caplog.records if r.name == "django_sockmail"]
    assert "Could not record the SMTP session" in log.getMessage()


def test_signals_for_sessions_and_messages(smtpd: SMTPServer) -> None:
    seen: list[tuple[str, Any]] = []

    def on_session(sender: Any, session: Session, **kwargs: Any) -> None:
        seen.append(("session", session.pk))

    def on_sent(sender: Any, message: EmailMessage, outcome: Any, **kwargs: Any) -> None:
        seen.append(("sent", [(r.address, r.accepted) for r in outcome.recipients]))

    def on_failed(sender: Any, message: EmailMessage, outcome: Any, error: Any, **kw: Any) -> None:
        seen.append(("failed", type(error).__name__))

    signals.session_recorded.connect(on_session)
    signals.message_sent.connect(on_sent)
    signals.message_failed.connect(on_failed)
    try:
        good = EmailMessage("s", "b", "a@example.org", ["ok@example.org", "x@refused.test"])
        bad = EmailMessage("s", "b", "a@example.org", ["y@refused.test"])
        backend = backend_for(smtpd, fail_silently=True)
        assert backend.send_messages([good, bad]) == 1
    finally:
        signals.session_recorded.disconnect(on_session)
        signals.message_sent.disconnect(on_sent)
        signals.message_failed.disconnect(on_failed)
    assert seen == [
        ("sent", [("ok@example.org", True), ("x@refused.test", False)]),
        ("failed", "SMTPRecipientsRefused"),
        ("session", Session.objects.get().pk),
    ]


def test_a_failing_receiver_is_logged_and_breaks_nothing(
    smtpd: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.message_sent.connect(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="django_sockmail"):
            send(smtpd)
    finally:
        signals.message_sent.disconnect(broken)
    assert len(smtpd.messages) == 1 and Session.objects.count() == 1
    assert any("receiver failed" in r.getMessage() for r in caplog.records)
