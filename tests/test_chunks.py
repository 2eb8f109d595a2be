"""The transcript stored in chunks (TranscriptChunk): where the recorder cuts them (at
LINES_PER_CHUNK lines, sooner at about TEXT_PER_QUERY characters of text), reading
lines from the middle of a transcript, text that must come back exactly, and migration
0007, which turns the line rows of before into chunks, and back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext

from django_sockmail import bulk, recorder
from django_sockmail.models import Session, TranscriptChunk, TranscriptLine
from django_sockmail.recorder import record, write_so_far
from django_sockmail.transcript import Line, Transcript
from tests.spies import decodes
from tests.toolkit import STARTED, recorded

L = recorder.LINES_PER_CHUNK


def transcript_of(texts: list[str], direction: str = "S") -> Transcript:
    return Transcript(
        host="mx.example.com",
        port=25,
        started_at=STARTED,
        ended_at=STARTED + timedelta(seconds=5),
        lines=[Line(i * 0.001, direction, text) for i, text in enumerate(texts, start=1)],
    )


def chunks_of(session: Session) -> list[tuple[int, int]]:
    """``(first_seq, line_count)`` of the session's chunks, in order."""
    return list(session.chunks.order_by("first_seq").values_list("first_seq", "line_count"))


def texts_by_chunk(session: Session) -> list[list[str]]:
    return [
        [line.text for line in chunk.decoded()] for chunk in session.chunks.order_by("first_seq")
    ]


# -- where the chunks end ---------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (1, [(1, 1)]),
        (L - 1, [(1, L - 1)]),
        (L, [(1, L)]),
        (L + 1, [(1, L), (L + 1, 1)]),
        (2 * L, [(1, L), (L + 1, L)]),
        (2 * L + 1, [(1, L), (L + 1, L), (2 * L + 1, 1)]),
    ],
    ids=["1", "L-1", "L", "L+1", "2L", "2L+1"],
)
def test_a_chunk_holds_lines_per_chunk_lines(lines: int, expected: list[tuple[int, int]]) -> None:
    assert L == 1000

    session = recorded(transcript_of([f"250-line {i}" for i in range(1, lines + 1)]))

    assert chunks_of(session) == expected
    assert session.line_count == lines
    assert [(line.seq, line.text) for line in session.transcript_lines()] == [
        (i, f"250-line {i}") for i in range(1, lines + 1)
    ]
    for chunk in session.chunks.all():  # each chunk's JSON holds exactly its line_count
        assert len(chunk.decoded()) == len(json.loads(chunk.lines)) == chunk.line_count


@pytest.mark.django_db
def test_a_transcript_without_lines_has_no_chunk() -> None:
    session = recorded(transcript_of([]))

    assert (session.line_count, chunks_of(session)) == (0, [])
    assert session.transcript_lines() == []
    assert session.transcript_lines(after=5, limit=3) == []


def assert_within_the_text_limit(session: Session, limit: int) -> None:
    """No chunk holds more than ``limit`` characters of text, unless it is one line."""
    for texts in texts_by_chunk(session):
        assert sum(map(len, texts)) <= limit or len(texts) == 1, [len(t) for t in texts]


@pytest.mark.django_db
def test_long_lines_go_fewer_to_a_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "TEXT_PER_QUERY", 1000)
    sizes = [300, 300, 300, 300, 2500, 10, 990, 11, 1000, 1, 1, 999, 1]
    texts = [chr(ord("a") + i) * size for i, size in enumerate(sizes)]

    session = recorded(transcript_of(texts, "D"))

    # Each chunk takes lines while their text fits in the limit; a line longer than the
    # limit is a chunk of its own; a line exactly at the limit fills one.
    assert chunks_of(session) == [(1, 3), (4, 1), (5, 1), (6, 2), (8, 1), (9, 1), (10, 2), (12, 2)]
    assert [list(map(len, chunk)) for chunk in texts_by_chunk(session)] == [
        [300, 300, 300],
        [300],
        [2500],
        [10, 990],
        [11],
        [1000],
        [1, 1],
        [999, 1],
    ]
    assert_within_the_text_limit(session, 1000)
    assert [line.text for line in session.transcript_lines()] == texts
    assert session.line_count == len(texts)


@pytest.mark.django_db
def test_full_content_lines_of_hundreds_of_kilobytes() -> None:
    # STORE_CONTENT "full" keeps a message's content in one line: a few of those fill
    # a chunk's MiB long before its thousand lines.
    assert bulk.TEXT_PER_QUERY == 1 << 20
    content = "Subject: big\n\n" + "x" * 399_000 + '\nÿ "quoted" \\ and a tab\t.\n'
    texts = ["220 mx.example.com ESMTP"]
    for n in range(5):
        texts += ["DATA", "354 go ahead", f"{n}:{content}", f"250 2.0.0 queued as Q{n}"]
    texts += ["DATA", "354 go ahead", "y" * 1_100_000, "250 2.0.0 queued as BIG", "221 bye"]
    assert len(texts) == 26 and 399_000 < len(texts[3]) < 400_000

    with CaptureQueriesContext(connection) as captured:
        session = recorded(transcript_of(texts, "D"))

    # Two contents (800 kB) fit in a MiB, a third does not; the 1.1 MB line is alone.
    assert texts_by_chunk(session) == [
        texts[0:11],
        texts[11:19],
        texts[19:23],
        texts[23:24],
        texts[24:26],
    ]
    assert chunks_of(session) == [(1, 11), (12, 8), (20, 4), (24, 1), (25, 2)]
    assert_within_the_text_limit(session, 1 << 20)
    assert [line.text for line in session.transcript_lines()] == texts
    assert session.line_count == len(texts)
    # A query takes about a MiB of text too: here, each chunk one of its own.
    table = TranscriptChunk._meta.db_table
    assert sum(table in query["sql"] for query in captured) == 5


# -- reading ----------------------------------------------------------------------------


@pytest.fixture
def decoded_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The first_seq of every chunk decoded while the test reads lines."""
    yield decodes(monkeypatch)


@pytest.mark.django_db
def test_reading_from_the_middle_of_a_later_chunk(decoded_chunks: list[int]) -> None:
    session = recorded(transcript_of([f"line {i}" for i in range(1, 2501)]))
    assert chunks_of(session) == [(1, 1000), (1001, 1000), (2001, 500)]
    decoded_chunks.clear()

    def seqs(**kwargs: int) -> list[int]:
        lines = session.transcript_lines(**kwargs)
        assert [line.text for line in lines] == [f"line {line.seq}" for line in lines]
        return [line.seq for line in lines]

    assert seqs(after=1500, limit=10) == list(range(1501, 1511))
    assert decoded_chunks == [1001]  # only the chunk that holds them
    decoded_chunks.clear()
    assert seqs(after=1000, limit=2) == [1001, 1002]  # from the first line of a chunk
    assert decoded_chunks == [1001]
    assert seqs(after=999, limit=2) == [1000, 1001]  # from the last line of the one before
    assert seqs(after=1998, limit=5) == [1999, 2000, 2001, 2002, 2003]  # across chunks
    assert seqs(after=2000) == list(range(2001, 2501))
    assert seqs(after=2499) == [2500]
    assert seqs(after=2500) == []
    assert seqs(after=10_000) == []
    assert seqs(after=2400, limit=1000) == list(range(2401, 2501))
    assert seqs(limit=3) == [1, 2, 3]
    assert seqs(limit=0) == []
    assert seqs() == list(range(1, 2501))
    decoded_chunks.clear()
    assert [line.seq for line in session.iter_transcript_lines(after=1700)][:2] == [1701, 1702]
    assert decoded_chunks == [1001, 2001]
    # The lines of another session are not read, in whatever order they were written.
    other = recorded(transcript_of(["other 1", "other 2"]))
    assert [line.text for line in other.transcript_lines()] == ["other 1", "other 2"]
    assert seqs(after=2498) == [2499, 2500]


@pytest.mark.django_db
def test_a_session_written_in_parts_continues_its_numbering() -> None:
    transcript = transcript_of([f"first {i}" for i in range(1, 1501)])
    assert write_so_far(transcript)
    session_id = transcript.session_id
    assert session_id is not None
    assert Session.objects.get(pk=session_id).line_count == 1500
    transcript.lines = [Line(2.0 + i, "S", f"second {i}") for i in range(1, 1001)]
    assert record(transcript) is not None

    session = Session.objects.get(pk=session_id)
    # Each part is cut on its own: its first chunk begins at the line after the last.
    assert chunks_of(session) == [(1, 1000), (1001, 500), (1501, 1000)]
    assert session.line_count == 2500
    texts = [line.text for line in session.transcript_lines()]
    assert texts == [f"first {i}" for i in range(1, 1501)] + [f"second {i}" for i in range(1, 1001)]
    assert [line.seq for line in session.transcript_lines(after=1499, limit=3)] == [
        1500,
        1501,
        1502,
    ]


HARD_TEXTS = [
    "Grüße aus Köln, ½ € für ein ß",
    "日本語のメール",
    "emoji 📧 and a symbol outside the BMP: 𝄞",
    "\x00",
    "NUL\x00in the middle\x00",
    "\\u0000 is six characters here, not a NUL",
    '"quoted" and \\backslashed\\',
    "tab\tCR\rLF\nend",
    "\x01\x1f\x7f control characters",
    "\u2028line and paragraph\u2029separators",
    "\ufffd the replacement character itself",
    "",
    " leading and trailing spaces ",
    '[1.5, "S", "a JSON-looking line"]',
]


@pytest.mark.django_db
def test_any_text_comes_back_exactly() -> None:
    # JSON escapes NUL as \u0000, which every database stores: a NUL from the wire now
    # reads back as a NUL (the rows of before held U+FFFD instead).
    session = recorded(transcript_of(HARD_TEXTS))

    lines = session.transcript_lines()
    assert [line.text for line in lines] == HARD_TEXTS
    assert [line.direction for line in lines] == ["S"] * len(HARD_TEXTS)
    assert "\x00" not in session.chunks.get().lines
    # And across a chunk boundary, read from the middle.
    session = recorded(transcript_of([text for _ in range(80) for text in HARD_TEXTS]))
    assert len(chunks_of(session)) == 2
    after = L - 3
    assert [line.text for line in session.transcript_lines(after=after, limit=6)] == [
        HARD_TEXTS[seq % len(HARD_TEXTS)] for seq in range(after, after + 6)
    ]


@pytest.mark.django_db
def test_every_direction_and_offset_comes_back() -> None:
    transcript = transcript_of([])
    transcript.lines = [
        Line(0.0, TranscriptLine.Direction.INFO, "connecting"),
        Line(0.0123456, TranscriptLine.Direction.SERVER, "220 hi"),
        Line(0.5, TranscriptLine.Direction.CLIENT, "EHLO me"),
        Line(3600.000001, TranscriptLine.Direction.CONTENT, "Subject: x"),
    ]
    assert record(transcript) is not None

    lines = Session.objects.get().transcript_lines()
    assert lines == [
        TranscriptLine(1, 0.0, "*", "connecting"),
        TranscriptLine(2, 12.346, "S", "220 hi"),
        TranscriptLine(3, 500.0, "C", "EHLO me"),
        TranscriptLine(4, 3_600_000.001, "D", "Subject: x"),
    ]


# -- migration 0007 ---------------------------------------------------------------------

APP = "django_sockmail"
BEFORE = (APP, "0006_session_indexes_in_the_unique_ones")
CHUNKED = (APP, "0007_transcript_in_chunks")


def migrate_to(*targets: tuple[str, str]) -> Apps:
    """Migrate the test database to ``targets``; the models as they were there."""
    executor = MigrationExecutor(connection)
    executor.migrate(list(targets))
    executor.loader.build_graph()  # what is applied now
    apps: Apps = executor.loader.project_state(list(targets)).apps
    return apps


def latest() -> list[tuple[str, str]]:
    leaves: list[tuple[str, str]] = MigrationExecutor(connection).loader.graph.leaf_nodes()
    return leaves


def tables() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


OLD_TEXTS = [
    "220 mx.example.com ESMTP",
    "Grüße, 日本語, 📧",
    '"quoted", \\backslashed\\, [1, "S", "x"]',
    "tab\tand\nnewline",
    "\ufffd where a NUL was",
    "",
]


@pytest.mark.django_db(transaction=True)
def test_migration_0007_turns_line_rows_into_chunks_and_back() -> None:
    try:
        _migrate_and_check()
    finally:  # the tests that run after this one need the latest schema
        migrate_to(*latest())
    assert TranscriptChunk._meta.db_table in tables()


def _migrate_and_check() -> None:
    old = migrate_to(BEFORE)
    OldSession = old.get_model(APP, "Session")
    OldLine = old.get_model(APP, "TranscriptLine")
    assert OldLine._meta.db_table in tables()

    def session(host: str) -> Any:
        return OldSession.objects.create(host=host, port=25, started_at=STARTED, status="ok")

    gap, long, empty, late = (session(h) for h in ("gap", "long", "empty", "late"))
    many = [session(f"many{n}") for n in range(600)]  # more chunks than a query takes
    rows = [
        # a gap in the numbering (no line 4), which the recorder never left
        *(
            (gap.pk, seq, seq * 1.5, "S", OLD_TEXTS[seq % len(OLD_TEXTS)])
            for seq in (1, 2, 3, 5, 6)
        ),
        # offsets to the microsecond, as the recorder wrote them, which chunks keep exactly
        *(
            (long.pk, seq, int(seq / 7 * 1e3 + 0.5) / 1e3, "CSD*"[seq % 4], f"line {seq}")
            for seq in range(1, 2501)
        ),
        *((late.pk, seq, 0.001 * seq, "C", f"late {seq}") for seq in (2, 3)),  # no line 1
        *((s.pk, 1, 0.25, "*", f"only line of {s.host}") for s in many),
    ]
    # Written in an order of their own: the migration orders them by session and seq.
    OldLine.objects.bulk_create(
        OldLine(session_id=s, seq=q, offset_ms=o, direction=d, text=t)
        for s, q, o, d, t in reversed(rows)
    )
    old_rows = sorted(
        OldLine.objects.values_list("session_id", "seq", "offset_ms", "direction", "text")
    )
    assert old_rows == sorted(rows)

    new = migrate_to(CHUNKED)
    NewSession = new.get_model(APP, "Session")
    Chunk = new.get_model(APP, "TranscriptChunk")
    assert OldLine._meta.db_table not in tables()

    def chunks(s: Any) -> list[tuple[int, int]]:
        return list(
            Chunk.objects.filter(session_id=s.pk)
            .order_by("first_seq")
            .values_list("first_seq", "line_count")
        )

    assert chunks(gap) == [(1, 3), (5, 2)]  # a gap starts a new chunk
    assert chunks(long) == [(1, 1000), (1001, 1000), (2001, 500)]
    assert chunks(empty) == []
    assert chunks(late) == [(2, 2)]
    assert all(chunks(s) == [(1, 1)] for s in many)
    assert Chunk.objects.count() == 2 + 3 + 1 + 600
    line_counts = dict(NewSession.objects.values_list("host", "line_count"))
    assert {h: line_counts[h] for h in ("gap", "long", "empty", "late")} == {
        "gap": 5,
        "long": 2500,
        "empty": 0,
        "late": 2,
    }
    assert {line_counts[s.host] for s in many} == {1}
    # Decoded as the recorder's chunks are: every line, with its seq, offset, direction
    # and text as the row had them.
    decoded = sorted(
        (chunk.session_id, line.seq, line.offset_ms, line.direction, line.text)
        for chunk in Chunk.objects.all()
        for line in TranscriptChunk(
            first_seq=chunk.first_seq, line_count=chunk.line_count, lines=chunk.lines
        ).decoded()
    )
    assert decoded == old_rows
    # The models of now read them so (0007 is the latest migration they need).
    assert [
        (line.seq, line.text) for line in Session.objects.get(pk=gap.pk).transcript_lines()
    ] == [(seq, OLD_TEXTS[seq % len(OLD_TEXTS)]) for seq in (1, 2, 3, 5, 6)]
    assert [line.seq for line in Session.objects.get(pk=gap.pk).transcript_lines(after=3)] == [5, 6]
    assert [
        line.seq for line in Session.objects.get(pk=long.pk).transcript_lines(after=1500, limit=2)
    ] == [1501, 1502]

    # And back: the rows of before, each line as it was; the chunks gone.
    old = migrate_to(BEFORE)
    OldLine = old.get_model(APP, "TranscriptLine")
    assert Chunk._meta.db_table not in tables()
    assert (
        sorted(OldLine.objects.values_list("session_id", "seq", "offset_ms", "direction", "text"))
        == old_rows
    )
    assert OldLine.objects.filter(session_id=long.pk).count() == 2500


@pytest.mark.django_db(transaction=True)
def test_migrating_back_stores_a_nul_as_the_line_rows_always_did() -> None:
    # A chunk keeps a NUL from the wire (JSON escapes it); a line row never held one
    # (the recorder wrote U+FFFD for it on every database, and PostgreSQL refuses NUL
    # in text), so going back to 0006 must not fail, nor bring back a NUL.
    session = recorded(transcript_of(["220 evil\x00server", "250 ok"]))
    try:
        old = migrate_to(BEFORE)
        OldLine = old.get_model(APP, "TranscriptLine")
        assert list(
            OldLine.objects.filter(session_id=session.pk).order_by("seq").values_list("seq", "text")
        ) == [(1, "220 evil\ufffdserver"), (2, "250 ok")]
    finally:
        migrate_to(*latest())
    assert TranscriptChunk._meta.db_table in tables()
