"""A long session's records go to the database as it goes (every WRITE_EVERY
messages), so its memory stays flat and a process that dies mid-session leaves what
was done; the rows come out the same as when written in one go at the end."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.test import override_settings

from django_sockmail import recorder
from django_sockmail.models import Message, Session, TranscriptLine
from tests.servers import SMTPServer, backend_for

pytestmark = pytest.mark.django_db(transaction=True)


def batch(count: int, start: int = 0) -> list[EmailMessage]:
    return [
        EmailMessage(f"m{n}", "b", "from@example.org", [f"to{n}@example.org"])
        for n in range(start, start + count)
    ]


def rows() -> list[tuple[Any, ...]]:
    """Every row of every session, without ids and times: what a reader sees. (Digits
    in the transcript's text are blurred: sizes, queue ids and times vary by run.)"""
    lines = TranscriptLine.objects.order_by("session_id", "seq")
    messages = Message.objects.order_by("session_id", "position")
    return [
        *Session.objects.order_by("id").values_list("message_count", "sent_count", "status"),
        *(
            (seq, d, "" if d == "D" else re.sub(r"\d+", "#", text))
            for seq, d, text in lines.values_list("seq", "direction", "text")
        ),
        *messages.values_list("position", "subject", "status", "recipients__address"),
    ]


def test_written_as_it_goes_or_at_the_end_the_rows_are_the_same(smtpd: SMTPServer) -> None:
    with override_settings(SOCKMAIL={"WRITE_EVERY": 0, "LOCAL_HOSTNAME": "client.test"}):
        backend_for(smtpd).send_messages(batch(25))
    at_the_end = [r for r in rows() if not _varies(r)]
    Session.objects.all().delete()
    with override_settings(SOCKMAIL={"WRITE_EVERY": 10, "LOCAL_HOSTNAME": "client.test"}):
        backend_for(smtpd).send_messages(batch(25))
    assert [r for r in rows() if not _varies(r)] == at_the_end
    [session] = Session.objects.all()
    assert session.ended_at is not None and session.message_count == 25
    assert list(session.lines.values_list("seq", flat=True)) == list(
        range(1, session.lines.count() + 1)
    )


def _varies(row: tuple[Any, ...]) -> bool:
    # aiosmtpd's replies name the connection, which differs from run to run.
    return any(isinstance(v, str) and "connected to" in v for v in row)


def test_an_open_session_is_in_the_database_before_it_ends(smtpd: SMTPServer) -> None:
    with override_settings(SOCKMAIL={"WRITE_EVERY": 10}):
        backend = backend_for(smtpd)
        backend.open()
        assert backend.send_messages(batch(12)) == 12
        # The process could die now: the first ten messages are on record already.
        [session] = Session.objects.all()
        assert (session.message_count, session.sent_count, session.ended_at) == (10, 10, None)
        assert backend._transcript is not None and len(backend._transcript.messages) == 2
        backend.close()
    [session] = Session.objects.all()
    assert (session.message_count, session.sent_count) == (12, 12)
    assert session.ended_at is not None and session.status == "ok"


def test_a_failed_write_keeps_everything_for_the_next(
    smtpd: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_insert, calls = recorder._insert, []

    def failing_once(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the audit database is away")
        real_insert(*args)

    monkeypatch.setattr(recorder, "_insert", failing_once)
    with override_settings(SOCKMAIL={"WRITE_EVERY": 5}):
        assert backend_for(smtpd).send_messages(batch(7)) == 7
    [session] = Session.objects.all()
    assert session.message_count == 7
    positions = list(session.messages.values_list("position", flat=True))
    assert positions == list(range(1, 8))
    assert len(smtpd.messages) == 7  # and the mail went, each message once
