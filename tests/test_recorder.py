"""recorder.record(): a finished Transcript becomes Session, Message, Recipient and
TranscriptChunk rows (a thousand transcript lines to a chunk), in one transaction, in a
few queries per thousand rows, holding little memory, never raising."""

from __future__ import annotations

import logging
import tracemalloc
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from pytest_django import Settings

from django_sockmail import bulk, recorder
from django_sockmail.models import Message, Recipient, Session, TranscriptChunk
from django_sockmail.recorder import record
from django_sockmail.smtp import results
from django_sockmail.smtp.events import TLSInfo
from django_sockmail.smtp.replies import Reply
from django_sockmail.smtp.results import MessageOutcome, RecipientOutcome
from django_sockmail.transcript import FAILED, Line, MessageRecord, Transcript
from tests.toolkit import (
    CONVERSATION,
    STARTED,
    make_transcript,
    sent_message,
)

pytestmark = pytest.mark.django_db


def reply(code: int, *lines: str) -> Reply:
    return Reply(code, lines)


def test_record_writes_the_session() -> None:
    session = record(make_transcript())

    assert session is not None
    stored = Session.objects.get()
    assert stored.pk == session.pk
    assert (stored.host, stored.port, stored.security) == ("mail.example.com", 587, "starttls")
    assert (stored.peer_address, stored.local_address) == ("192.0.2.10:587", "198.51.100.7:53422")
    assert stored.started_at == STARTED
    assert stored.ended_at == STARTED + timedelta(seconds=1.25)
    assert stored.duration == timedelta(seconds=1.25)
    assert (stored.status, stored.error) == ("ok", "")
    assert (stored.tls_version, stored.tls_cipher) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    assert stored.tls_peer_subject == "CN=mail.example.com"
    assert stored.tls_peer_issuer == "CN=Example CA,O=Example"
    assert stored.tls_peer_not_before == "Jan  1 00:00:00 2024 GMT"
    assert stored.tls_peer_not_after == "Jan  1 00:00:00 2025 GMT"
    assert stored.tls_peer_fingerprint == "ab" * 32


def test_a_session_without_tls_stores_blank_tls_fields() -> None:
    session = record(make_transcript(tls=None, security="none", port=25))

    assert session is not None
    stored = Session.objects.get()
    assert stored.security == "none"
    assert [
        stored.tls_version,
        stored.tls_cipher,
        stored.tls_peer_subject,
        stored.tls_peer_issuer,
        stored.tls_peer_not_before,
        stored.tls_peer_not_after,
        stored.tls_peer_fingerprint,
    ] == [""] * 7


def test_a_failed_session_keeps_its_error() -> None:
    session = record(
        make_transcript(status=FAILED, error="SMTPServerDisconnected: lost", ended_at=None)
    )

    assert session is not None
    stored = Session.objects.get()
    assert (stored.status, stored.error) == ("failed", "SMTPServerDisconnected: lost")
    assert stored.ended_at is None
    assert stored.duration is None


def test_counters_count_messages_and_the_ones_the_server_took() -> None:
    refused = MessageOutcome(
        sender="alice@example.org",
        recipients=[RecipientOutcome("dave@example.net", reply(250, "2.1.5 Ok"))],
        mail_reply=reply(250, "2.1.0 Ok"),
        data_reply=reply(554, "5.3.4 Message too big"),
    )
    refused.settle()
    transcript = make_transcript()
    transcript.messages.append(MessageRecord(refused, subject="Too big"))

    record(transcript)

    stored = Session.objects.get()
    assert stored.message_count == 3
    assert stored.sent_count == 2  # sent and partly sent; not the refused one


def test_lines_keep_their_order_direction_text_and_offset() -> None:
    session = record(make_transcript())

    assert session is not None
    stored = Session.objects.get()
    lines = stored.transcript_lines()
    assert [(line.direction, line.text) for line in lines] == CONVERSATION
    assert [line.seq for line in lines] == list(range(1, len(CONVERSATION) + 1))
    assert [line.offset_ms for line in lines] == [i * 12.5 for i in range(len(CONVERSATION))]
    assert "AUTH PLAIN [credentials redacted]" in [line.text for line in lines]
    assert stored.line_count == len(CONVERSATION)
    # A short transcript is one chunk: the lines 1 .. n, as the session reads them.
    [chunk] = TranscriptChunk.objects.filter(session=stored)
    assert (chunk.first_seq, chunk.line_count) == (1, len(CONVERSATION))
    assert chunk.decoded() == lines


def test_offsets_are_kept_to_the_microsecond() -> None:
    offsets = [0.0, 0.0000004, 0.0000006, 0.0125, 1.2345674, 1.2345676, 86_399.9999994]
    transcript = make_transcript(lines=[Line(s, "*", f"at {s}") for s in offsets])

    session = record(transcript)

    assert session is not None
    stored = Session.objects.get().transcript_lines()
    assert [line.offset_ms for line in stored] == [
        0.0,
        0.0,
        0.001,
        12.5,
        1234.567,
        1234.568,
        86_399_999.999,
    ]
    assert [line.text for line in stored] == [f"at {s}" for s in offsets]


def test_messages_and_recipients_are_stored_in_order() -> None:
    session = record(make_transcript())

    assert session is not None
    first, second = Message.objects.filter(session=session).order_by("position")
    assert first.position == 1
    assert first.envelope_from == "alice@example.org"
    assert first.message_id == "<report.1@example.org>"
    assert first.subject == "Quarterly report"
    assert first.headers.startswith("From: alice@example.org\nTo: bob@example.net")
    assert first.size == 321
    assert first.status == Message.Status.SENT
    assert (first.reply_code, first.reply_text) == (250, "2.0.0 Ok: queued as ABC123")
    assert first.enhanced_status == "2.0.0"
    assert first.queue_id == "ABC123"
    assert first.error == ""
    assert first.recipient_count == 1
    assert [(r.address, r.accepted, r.reply_code) for r in first.recipients.all()] == [
        ("bob@example.net", True, 250)
    ]

    assert second.position == 2
    assert second.status == Message.Status.PARTIAL
    assert second.queue_id == "DEF456"
    assert second.recipient_count == 2
    carol, nobody = second.recipients.all()
    assert (carol.address, carol.accepted, carol.reply_code) == ("carol@example.net", True, 250)
    assert (nobody.address, nobody.accepted, nobody.reply_code) == (
        "nobody@example.net",
        False,
        550,
    )
    assert nobody.enhanced_status == "5.1.1"
    assert nobody.reply_text == "5.1.1 <nobody@example.net>: Recipient address rejected"


@pytest.mark.parametrize(
    ("outcome", "expected_reply"),
    [
        pytest.param(
            MessageOutcome(
                sender="a@example.org",
                recipients=[RecipientOutcome("b@example.net", reply(250, "2.1.5 Ok"))],
                mail_reply=reply(250, "2.1.0 Ok"),
                data_reply=reply(554, "5.3.4 Message too big"),
                error="refused DATA",
            ),
            (554, "5.3.4 Message too big", "5.3.4"),
            id="DATA refused",
        ),
        pytest.param(
            MessageOutcome(
                sender="a@example.org",
                recipients=[RecipientOutcome("b@example.net")],
                mail_reply=reply(553, "5.7.1 Sender address rejected"),
                error="refused MAIL",
            ),
            (553, "5.7.1 Sender address rejected", "5.7.1"),
            id="MAIL refused",
        ),
        pytest.param(
            MessageOutcome(
                sender="a@example.org",
                recipients=[RecipientOutcome("b@example.net", reply(550, "5.1.1 No such user"))],
                mail_reply=reply(250, "2.1.0 Ok"),
                error="all recipients refused",
            ),
            (550, "5.1.1 No such user", "5.1.1"),
            id="every RCPT refused",
        ),
    ],
)
def test_a_failed_message_keeps_the_reply_that_failed_it(
    outcome: MessageOutcome, expected_reply: tuple[int | None, str, str]
) -> None:
    outcome.settle()
    session = record(make_transcript(messages=[MessageRecord(outcome)]))

    assert session is not None
    message = Message.objects.get()
    assert message.status == Message.Status.FAILED
    assert (message.reply_code, message.reply_text, message.enhanced_status) == expected_reply
    assert message.error == outcome.error
    assert message.queue_id == ""


def test_a_message_never_offered_has_no_reply() -> None:
    outcome = MessageOutcome(sender="", recipients=[RecipientOutcome("b@example.net")])
    session = record(make_transcript(messages=[MessageRecord(outcome)]))

    assert session is not None
    message = Message.objects.get()
    assert message.status == results.NOT_SENT == Message.Status.NOT_SENT
    assert message.envelope_from == ""
    assert message.reply_code is None
    recipient = Recipient.objects.get()
    assert (recipient.reply_code, recipient.accepted) == (None, False)


def queries(transcript: Transcript) -> int:
    """How many queries recording ``transcript`` takes."""
    with CaptureQueriesContext(connection) as captured:
        assert record(transcript) is not None
    return len(captured)


def long_session(messages: int, lines: int) -> Transcript:
    """``messages`` messages, each to a recipient of its own, and ``lines`` lines."""
    records = []
    for position in range(1, messages + 1):
        outcome = MessageOutcome(
            sender="alice@example.org",
            recipients=[RecipientOutcome(f"r{position}@example.net", reply(250, "2.1.5 Ok"))],
            mail_reply=reply(250, "2.1.0 Ok"),
            final_reply=reply(250, f"2.0.0 Ok: queued as Q{position}"),
        )
        outcome.settle()
        records.append(MessageRecord(outcome, subject=f"message {position}"))
    transcript = make_transcript(messages=records)
    transcript.lines = [Line(i * 0.001, "S", f"250-line {i}") for i in range(1, lines + 1)]
    return transcript


def chunk_queries(transcript: Transcript) -> int:
    """How many of the queries recording ``transcript`` takes write transcript chunks."""
    table = TranscriptChunk._meta.db_table
    with CaptureQueriesContext(connection) as captured:
        assert record(transcript) is not None
    return sum(table in query["sql"] for query in captured)


def test_the_number_of_queries_grows_only_by_chunks_of_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bulk, "ROWS_PER_QUERY", 10)
    monkeypatch.setattr(recorder, "LINES_PER_CHUNK", 10)
    fewest = queries(long_session(messages=1, lines=1))

    # Ten chunks of ten lines are ten rows: one query, as one line is.
    assert queries(long_session(messages=10, lines=100)) == fewest
    assert queries(long_session(messages=0, lines=0)) == fewest - 4  # no rows, no query
    # A query's worth of chunks more is one query more; a chunk of messages more is
    # three: their insert, the query for their ids, the insert of their recipients.
    assert queries(long_session(messages=10, lines=101)) == fewest + 1
    assert queries(long_session(messages=11, lines=100)) == fewest + 3
    assert queries(long_session(messages=25, lines=350)) == fewest + 2 * 3 + 3
    assert chunk_queries(long_session(messages=1, lines=350)) == 4  # 35 chunks
    assert chunk_queries(long_session(messages=1, lines=0)) == 0


def test_a_long_transcript_is_a_few_chunks_in_one_query() -> None:
    assert recorder.LINES_PER_CHUNK == 1000
    assert chunk_queries(long_session(messages=1, lines=20_000)) == 1  # one INSERT or COPY

    session = Session.objects.get()
    assert session.line_count == 20_000
    chunks = list(session.chunks.order_by("first_seq").values_list("first_seq", "line_count"))
    assert chunks == [(1 + 1000 * n, 1000) for n in range(20)]
    lines = session.transcript_lines()
    assert [(line.seq, line.text) for line in lines] == [
        (i, f"250-line {i}") for i in range(1, 20_001)
    ]


def test_rows_written_in_chunks_keep_their_order_and_their_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bulk, "ROWS_PER_QUERY", 10)
    monkeypatch.setattr(recorder, "LINES_PER_CHUNK", 3)  # 12 chunks: two queries

    session = record(long_session(messages=25, lines=35))

    assert session is not None
    messages = list(session.messages.order_by("position"))
    assert [(m.position, m.subject, m.queue_id) for m in messages] == [
        (i, f"message {i}", f"Q{i}") for i in range(1, 26)
    ]
    assert [(m.position, r.address) for m in messages for r in m.recipients.all()] == [
        (i, f"r{i}@example.net") for i in range(1, 26)
    ]
    assert list(Recipient.objects.order_by("id").values_list("address", flat=True)) == [
        f"r{i}@example.net" for i in range(1, 26)
    ]
    assert [(line.seq, line.text) for line in session.transcript_lines()] == [
        (i, f"250-line {i}") for i in range(1, 36)
    ]
    assert list(TranscriptChunk.objects.order_by("id").values_list("first_seq", "line_count")) == [
        *((seq, 3) for seq in range(1, 34, 3)),
        (34, 2),
    ]


def test_recording_holds_only_a_chunk_of_rows_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "ROWS_PER_QUERY", 100)
    # About three chunks' JSON (30 kB each) to a query, so a query holds a tenth of it.
    monkeypatch.setattr(bulk, "TEXT_PER_QUERY", 100_000)
    transcript = long_session(messages=2000, lines=20_000)

    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        assert record(transcript) is not None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak - start < 1_000_000  # the rows of the whole session take about 5 MB
    assert Session.objects.get().line_count == 20_000
    assert TranscriptChunk.objects.count() == 20


def test_long_texts_go_fewer_to_a_query(monkeypatch: pytest.MonkeyPatch) -> None:
    # A "full" content line can hold CONTENT_MAX_BYTES: a query takes a bounded amount.
    monkeypatch.setattr(bulk, "TEXT_PER_QUERY", 1000)
    short = queries(long_session(messages=1, lines=4))
    long = long_session(messages=1, lines=0)
    long.lines = [Line(0.001 * i, "D", f"{i}" * 600) for i in range(1, 5)]

    assert queries(long) == short + 3  # one line to a chunk, one chunk to a query

    session = Session.objects.latest("id")
    assert [line.text for line in session.transcript_lines()] == [f"{i}" * 600 for i in range(1, 5)]
    assert list(session.chunks.order_by("first_seq").values_list("first_seq", "line_count")) == [
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 1),
    ]


def test_a_database_error_is_logged_and_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(*args: object) -> None:  # the last of the writes: the transcript chunks
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr(recorder, "_insert_chunks", fail)

    with caplog.at_level(logging.ERROR, logger="django_sockmail"):
        assert record(make_transcript()) is None

    (log,) = [r for r in caplog.records if r.name == "django_sockmail"]
    assert log.levelno == logging.ERROR
    assert "mail.example.com" in log.getMessage()
    assert log.exc_info is not None
    assert isinstance(log.exc_info[1], DatabaseError)
    # The session and messages written before the failure were rolled back with it.
    assert not Session.objects.exists()
    assert not Message.objects.exists()


def test_any_error_while_recording_is_logged_and_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(*args: object) -> None:  # after the session and message rows went in
        raise RuntimeError("unexpected")

    monkeypatch.setattr(recorder, "_recipient_row", fail)

    with caplog.at_level(logging.ERROR, logger="django_sockmail"):
        assert record(make_transcript()) is None

    (log,) = [r for r in caplog.records if r.name == "django_sockmail"]
    assert log.exc_info is not None
    assert isinstance(log.exc_info[1], RuntimeError)
    assert not Session.objects.exists()
    assert not Message.objects.exists()


def test_a_write_the_database_refuses_half_way_leaves_nothing_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No real server sends a negative code; here it makes the database itself refuse
    # the recipient rows (a CHECK constraint) after the session and messages went in.
    bad = MessageOutcome(
        sender="a@example.org", recipients=[RecipientOutcome("b@example.net", reply(-1, "?"))]
    )
    transcript = make_transcript(messages=[sent_message(), MessageRecord(bad)])

    with caplog.at_level(logging.ERROR, logger="django_sockmail"):
        assert record(transcript) is None

    assert any(r.name == "django_sockmail" and r.exc_info for r in caplog.records)
    # Only the recorder's savepoint was rolled back: the caller's transaction still works.
    assert Session.objects.count() == 0
    assert Message.objects.count() == 0
    assert record(make_transcript()) is not None


def test_hostile_text_is_made_storable() -> None:
    long_queue_id = "Q" * 1000
    outcome = MessageOutcome(
        sender="a@example.org",
        recipients=[RecipientOutcome("b@example.net", reply(250, "2.1.5 Ok\x00"))],
        mail_reply=reply(250, "2.1.0 Ok"),
        final_reply=reply(250, f"2.0.0 Ok: queued as {long_queue_id}"),
    )
    outcome.settle()
    transcript = make_transcript(
        messages=[MessageRecord(outcome, subject="x" * 5000)],
        lines=[Line(0.0, "S", "220 evil\x00server")],
        tls=TLSInfo(version="TLSv1.3" * 20, cipher="c"),
    )

    session = record(transcript)

    assert session is not None
    message = Message.objects.get()
    queue_id_length = Message._meta.get_field("queue_id").max_length
    subject_length = Message._meta.get_field("subject").max_length
    assert queue_id_length is not None and subject_length is not None
    assert message.queue_id == long_queue_id[:queue_id_length]
    assert message.subject == "x" * subject_length
    assert Session.objects.get().tls_version == ("TLSv1.3" * 20)[:32]
    # The transcript's JSON escapes a NUL (\u0000), which every database stores, so the
    # line reads back exactly as the server sent it; the columns of their own get U+FFFD.
    assert Session.objects.get().transcript_lines()[0].text == "220 evil\x00server"
    stored_json = TranscriptChunk.objects.get().lines
    assert "\x00" not in stored_json and "\\u0000" in stored_json
    assert Recipient.objects.get().reply_text == "2.1.5 Ok\ufffd"


def test_a_project_without_time_zones_gets_naive_times(settings: Settings) -> None:
    settings.USE_TZ = False
    settings.TIME_ZONE = "UTC"

    session = record(make_transcript())

    assert session is not None
    stored = Session.objects.get()
    assert stored.started_at == STARTED.replace(tzinfo=None)


def test_models_describe_themselves(settings: Settings) -> None:
    settings.TIME_ZONE = "Europe/Berlin"
    session = record(make_transcript(host="2001:db8::25"))

    assert session is not None
    stored = Session.objects.get()
    assert stored.endpoint == "[2001:db8::25]:587"
    assert str(stored) == "[2001:db8::25]:587 at 2024-05-01 14:00:00 CEST (ok)"
    message = stored.messages.get(position=2)
    assert str(message) == "Lunch? from <alice@example.org> (partly sent)"
    assert message.reply == "250 2.0.0 Ok: queued as DEF456"
    assert [str(r) for r in message.recipients.all()] == [
        "carol@example.net (accepted)",
        "nobody@example.net (refused)",
    ]
    assert str(stored.transcript_lines()[0]) == "*: connecting to mail.example.com port 587"
    assert str(stored.chunks.get()) == f"lines 1 to {len(CONVERSATION)} of session {stored.pk}"
