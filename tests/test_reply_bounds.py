"""Whatever a server says, what a session stores and holds per message is bounded.

The servers here answer every MAIL, RCPT, DATA and end of data with a reply as large
as the parser takes (MAX_REPLY_SIZE, MAX_LINES): 31 lines of 8,000 bytes, 1,000 lines
of 6 bytes, or 1,000 lines that fill what is kept of a reply. Before replies were
bounded, 40 small messages to the first stored 1.49 MB each in the audit log, and the
session's memory peaked at 2.25 MB a message (tracemalloc); at the default
WRITE_EVERY of 1,000 messages a session would have held gigabytes.

A reply is now kept as its first lines (KEPT_LINE_BYTES of a line, KEPT_TEXT_BYTES and
KEPT_LINES in all, see smtp/replies.py) and a note of what was cut; the transcript and
the message's and recipient's rows hold that same reply. So, per message of one
recipient, whatever the server says:

- stored in the database (the text of the session's, messages', recipients' and
  transcript chunks' rows): under STORED_PER_MESSAGE, 32 KiB (measured: 25.7 KB,
  5.6 KB and 30.0 KB for the three shapes; the last is the most that can be kept);
- memory at the session's peak, its write to the database included: under
  PEAK_PER_MESSAGE, 192 KiB (measured: 83, 36 and 80 KB on SQLite and PostgreSQL, up
  to 117 KB on MariaDB, whose driver builds each query's text in Python; most of it
  is the write at the end, which the recorder's rows and text a query bound);
- and an open session is written and let go once its transcript holds
  HELD_BYTES_BUDGET, so what it holds does not grow with the number of messages.
"""

from __future__ import annotations

import tracemalloc
from functools import partial
from typing import Any

import pytest
from django.db import models
from django.test import override_settings

from django_sockmail import recorder, transcript
from django_sockmail.models import Message, Recipient, Session, TranscriptChunk
from django_sockmail.smtp.replies import MAX_LINE_LENGTH, MAX_LINES, MAX_REPLY_SIZE
from tests import toolkit
from tests.faults import HostileResponder
from tests.servers import Answer, Scripted, ScriptedServer, backend_for
from tests.test_write_so_far import gapless

pytestmark = pytest.mark.django_db(transaction=True)

STORED_PER_MESSAGE = 32 << 10
PEAK_PER_MESSAGE = 192 << 10
BUDGET = 256 << 10  # HELD_BYTES_BUDGET, made small: a session writes every dozen messages
MESSAGES = 40


def reply(code: int, lines: int, line_bytes: int) -> bytes:
    """A multi-line reply of ``lines`` lines of ``line_bytes`` bytes each (its code
    and CRLF included)."""
    text = b"x" * (line_bytes - 6)
    return b"".join([b"%d-%s\r\n" % (code, text)] * (lines - 1) + [b"%d %s\r\n" % (code, text)])


# Replies as large as the parser takes (MAX_REPLY_SIZE, MAX_LINES): of long lines (31
# of 8,000 bytes), of as many lines as it takes (1,000 of 6 bytes), and of lines that
# fill what is kept of a reply (KEPT_LINES lines of 81 bytes of text: 4,050 bytes).
SHAPES = {"long-lines": (31, 8000), "many-lines": (1000, 6), "kept-in-full": (1000, 87)}
for lines, line_bytes in SHAPES.values():
    assert lines * line_bytes <= MAX_REPLY_SIZE and lines <= MAX_LINES
    assert line_bytes <= MAX_LINE_LENGTH


def long_replies(scripted: Scripted, lines: int, line_bytes: int) -> ScriptedServer:
    """A server that takes every message, answering every MAIL, RCPT, DATA and end
    of data with a reply of ``lines`` lines of ``line_bytes`` bytes."""
    answers: dict[str, Answer | list[Answer]] = {
        verb: reply(250, lines, line_bytes) for verb in ("MAIL", "RCPT", "END")
    }
    answers["DATA"] = reply(354, lines, line_bytes)
    return scripted(HostileResponder(answers, pipelining=True))


batch = partial(toolkit.batch, subject="m{n}")


def stored_bytes(session: Session) -> int:
    """The bytes of text (UTF-8) the audit log holds for ``session``: every text
    column of its row and of its messages', recipients' and transcript chunks' rows."""
    tables: list[models.QuerySet[Any]] = [
        Session.objects.filter(pk=session.pk),
        Message.objects.filter(session=session),
        Recipient.objects.filter(message__session=session),
        TranscriptChunk.objects.filter(session=session),
    ]
    total = 0
    for rows in tables:
        texts = [
            field.attname
            for field in rows.model._meta.concrete_fields
            if isinstance(field, (models.CharField, models.TextField))
        ]
        for values in rows.values_list(*texts):
            total += sum(len(value.encode()) for value in values)
    return total


def peak_while(send: Any) -> int:
    """The most memory (bytes, as tracemalloc sees it) held at once while ``send()``
    ran, beyond what was held when it began."""
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        send()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start


@pytest.mark.parametrize(("lines", "line_bytes"), SHAPES.values(), ids=SHAPES.keys())
def test_long_replies_store_and_hold_a_bounded_amount_per_message(
    scripted: Scripted, lines: int, line_bytes: int
) -> None:
    server = long_replies(scripted, lines, line_bytes)
    backend_for(server).send_messages(batch(1))  # what a first session imports and caches
    messages = batch(MESSAGES)

    peak = peak_while(lambda: backend_for(server).send_messages(messages))

    session = Session.objects.order_by("pk").last()
    assert session is not None
    assert (session.message_count, session.sent_count) == (MESSAGES, MESSAGES)
    stored = stored_bytes(session)
    print(f"per message: {stored / MESSAGES:,.0f} bytes stored, {peak / MESSAGES:,.0f} peak")
    assert stored / MESSAGES < STORED_PER_MESSAGE
    assert peak / MESSAGES < PEAK_PER_MESSAGE


def test_an_open_session_is_written_once_it_holds_the_budget(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transcript, "HELD_BYTES_BUDGET", BUDGET)
    real_write_so_far, writes = recorder.write_so_far, []

    def write_so_far(held: transcript.Transcript) -> bool:
        before = held.held_bytes
        assert real_write_so_far(held)
        writes.append((before, held.held_bytes, len(held.lines), len(held.messages)))
        return True

    monkeypatch.setattr(recorder, "write_so_far", write_so_far)
    server = long_replies(scripted, *SHAPES["long-lines"])

    backend_for(server).send_messages(batch(MESSAGES))  # WRITE_EVERY: 1,000 messages

    # Written each time the transcript held the budget (and at most the message that
    # passed it more); each time it let go of everything it held.
    assert len(writes) >= 2
    for before, after, lines, messages in writes:
        assert BUDGET <= before < BUDGET + (32 << 10)
        assert (after, lines, messages) == (0, 0, 0)
    [session] = Session.objects.all()
    assert (session.message_count, session.sent_count) == (MESSAGES, MESSAGES)
    assert session.ended_at is not None
    gapless(session)
    assert list(session.messages.values_list("position", flat=True)) == list(range(1, MESSAGES + 1))


@override_settings(SOCKMAIL={"RECORD_SESSIONS": False})
def test_an_unrecorded_session_lets_go_of_what_it_holds(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transcript, "HELD_BYTES_BUDGET", BUDGET)
    server = long_replies(scripted, *SHAPES["long-lines"])
    backend = backend_for(server)
    backend.open()
    try:
        assert backend.send_messages(batch(MESSAGES)) == MESSAGES
        held = backend._transcript
        assert held is not None
        assert held.messages_written > 0
        assert held.held_bytes < BUDGET
    finally:
        backend.close()
    assert not Session.objects.exists()
