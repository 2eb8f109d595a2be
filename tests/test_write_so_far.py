"""A long session's records go to the database as it goes (every WRITE_EVERY
messages), so its memory stays flat and a process that dies mid-session leaves what
was done; the rows come out the same as when written in one go at the end."""

from __future__ import annotations

import itertools
import re
from functools import partial
from typing import Any

import pytest
from django.test import override_settings

from django_sockmail import bulk, recorder
from django_sockmail.models import Message, Session
from django_sockmail.transcript import Transcript
from tests import toolkit
from tests.servers import SMTPServer, backend_for

pytestmark = pytest.mark.django_db(transaction=True)


batch = partial(toolkit.batch, subject="m{n}")


def rows() -> list[tuple[Any, ...]]:
    """Every row of every session, without ids and times: what a reader sees. (Digits
    in the transcript's text are blurred: sizes, queue ids and times vary by run.)"""
    sessions = Session.objects.order_by("id")
    messages = Message.objects.order_by("session_id", "position")
    return [
        *sessions.values_list("message_count", "sent_count", "line_count", "status"),
        *(
            (
                line.seq,
                line.direction,
                "" if line.direction == "D" else re.sub(r"\d+", "#", line.text),
            )
            for session in sessions
            for line in session.transcript_lines()
        ),
        *messages.values_list("position", "subject", "status", "recipients__address"),
    ]


def gapless(session: Session) -> list[tuple[int, int]]:
    """Assert that ``session``'s transcript reads back as lines 1..line_count, held in
    chunks each of which begins where the one before ended; return the chunks'
    ``(first_seq, line_count)``."""
    seqs = [line.seq for line in session.transcript_lines()]
    assert seqs == list(range(1, session.line_count + 1))
    chunks = list(session.chunks.order_by("first_seq").values_list("first_seq", "line_count"))
    assert [first for first, _ in chunks] == list(
        itertools.accumulate([1] + [count for _, count in chunks[:-1]])
    )
    assert sum(count for _, count in chunks) == session.line_count
    return chunks


def test_written_as_it_goes_or_at_the_end_the_rows_are_the_same(
    smtpd: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with override_settings(SOCKMAIL={"WRITE_EVERY": 0, "LOCAL_HOSTNAME": "client.test"}):
        backend_for(smtpd).send_messages(batch(25))
    at_the_end = [r for r in rows() if not _varies(r)]
    [whole] = Session.objects.all()
    assert len(gapless(whole)) == 1  # a few hundred lines: one chunk
    Session.objects.all().delete()

    # After each part, the session's row counts every line written so far, and they
    # read back as one sequence, across the chunks of the parts before.
    real_write_so_far, parts = recorder.write_so_far, []

    def write_so_far(transcript: Transcript) -> bool:
        total = transcript.lines_written + len(transcript.lines)
        assert real_write_so_far(transcript) and transcript.session_id is not None
        session = Session.objects.get(pk=transcript.session_id)
        assert session.line_count == total
        parts.append(gapless(session))
        return True

    monkeypatch.setattr(recorder, "write_so_far", write_so_far)
    with override_settings(SOCKMAIL={"WRITE_EVERY": 10, "LOCAL_HOSTNAME": "client.test"}):
        backend_for(smtpd).send_messages(batch(25))
    assert [r for r in rows() if not _varies(r)] == at_the_end
    [session] = Session.objects.all()
    assert session.ended_at is not None and session.message_count == 25
    # Two parts while open (after messages 10 and 20), a chunk each, then the rest.
    assert [len(chunks) for chunks in parts] == [1, 2]
    chunks = gapless(session)
    assert chunks[:2] == parts[-1] and len(chunks) == 3
    assert session.line_count == whole.line_count
    # Read from the middle of the first part: on across the parts' chunks, in order.
    (_, count), _, _ = chunks
    after = [line.seq for line in session.transcript_lines(after=count - 2, limit=4)]
    assert after == [count - 1, count, count + 1, count + 2]


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
    real_insert, calls = bulk.insert, []

    def failing_once(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the audit database is away")
        real_insert(*args)

    monkeypatch.setattr(bulk, "insert", failing_once)
    with override_settings(SOCKMAIL={"WRITE_EVERY": 5}):
        assert backend_for(smtpd).send_messages(batch(7)) == 7
    [session] = Session.objects.all()
    assert session.message_count == 7
    positions = list(session.messages.values_list("position", flat=True))
    assert positions == list(range(1, 8))
    gapless(session)  # the failed part's lines went with the next part, once
    assert [line.text for line in session.transcript_lines()].count("DATA") == 7
    assert len(smtpd.messages) == 7  # and the mail went, each message once
