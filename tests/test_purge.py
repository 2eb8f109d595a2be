"""manage.py sockmail_purge: old sessions go with their messages, recipients and
transcript chunks, a bounded batch at a time; newer sessions stay; no age, no purge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, router
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone as django_timezone
from pytest_django import DjangoAssertNumQueries

from django_sockmail import recorder
from django_sockmail.management.commands import sockmail_purge
from django_sockmail.models import Message, Recipient, Session, TranscriptChunk
from django_sockmail.transcript import Line
from tests.toolkit import CONVERSATION, recorded, sent_message

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
LINES = len(CONVERSATION)  # a recorded session has 2 messages, 3 recipients and these lines


@pytest.fixture(autouse=True)
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(django_timezone, "now", lambda: NOW)


def recorded_ago(age: timedelta, **overrides: Any) -> Session:
    """The toolkit's example session, started ``age`` before NOW (and never ended)."""
    return recorded(started_at=NOW - age, ended_at=None, **overrides)


def purge(*args: str, **options: Any) -> str:
    out = StringIO()
    call_command("sockmail_purge", *args, stdout=out, **options)
    return out.getvalue()


def rows() -> tuple[int, int, int, int, int]:
    """Sessions, messages, recipients, transcript chunks, and the transcript lines the
    chunks hold (decoded, not taken from any count)."""
    return (
        Session.objects.count(),
        Message.objects.count(),
        Recipient.objects.count(),
        TranscriptChunk.objects.count(),
        sum(len(chunk.decoded()) for chunk in TranscriptChunk.objects.all()),
    )


def chunks_of(*sessions: Session) -> set[int]:
    return set(TranscriptChunk.objects.filter(session__in=sessions).values_list("pk", flat=True))


def test_old_sessions_go_with_their_children_and_newer_ones_stay_whole() -> None:
    old = [recorded_ago(timedelta(days=40)), recorded_ago(timedelta(days=31))]
    at_cutoff = recorded_ago(timedelta(days=30))
    new = recorded_ago(timedelta(days=1))
    kept_chunks = chunks_of(at_cutoff, new)
    assert len(chunks_of(*old)) == len(kept_chunks) == 2  # a short transcript: a chunk
    assert rows() == (4, 8, 12, 4, 4 * LINES)

    output = purge("--older-than", "30d")

    assert output == (
        f"Deleted 2 sessions (4 messages, 6 recipients, {2 * LINES} transcript lines) "
        "older than 2026-10-27 12:00:00 UTC.\n"
    )
    assert set(Session.objects.values_list("pk", flat=True)) == {at_cutoff.pk, new.pk}
    assert not TranscriptChunk.objects.filter(session_id__in=[s.pk for s in old]).exists()
    assert chunks_of(at_cutoff, new) == kept_chunks  # the very rows, untouched
    for kept in (at_cutoff, new):
        assert kept.messages.count() == 2
        assert Recipient.objects.filter(message__session=kept).count() == 3
        kept.refresh_from_db()
        assert kept.line_count == LINES
        lines = kept.transcript_lines()
        assert [(line.direction, line.text) for line in lines] == CONVERSATION
        assert [line.seq for line in lines] == list(range(1, LINES + 1))
    assert rows() == (2, 4, 6, 2, 2 * LINES)  # nothing orphaned


def test_the_report_counts_in_thousands_and_says_one_session() -> None:
    lines = [Line(i * 0.001, "S", f"250-line {i}") for i in range(1200)]
    recorded_ago(timedelta(days=40), lines=lines, messages=[sent_message()])
    assert rows() == (1, 1, 1, 2, 1200)  # the lines in two chunks: 1,200 counted, not 2

    output = purge("--older-than=30d")

    assert output == (
        "Deleted 1 session (1 message, 1 recipient, 1,200 transcript lines) "
        "older than 2026-10-27 12:00:00 UTC.\n"
    )
    assert rows() == (0, 0, 0, 0, 0)


def test_dry_run_counts_and_deletes_nothing() -> None:
    sessions = [recorded_ago(timedelta(days=days)) for days in (40, 35, 1)]
    chunks = chunks_of(*sessions)

    output = purge("--older-than", "30d", "--dry-run")

    assert output == (
        f"Would delete 2 sessions (4 messages, 6 recipients, {2 * LINES} transcript lines) "
        "older than 2026-10-27 12:00:00 UTC.\n"
    )
    assert rows() == (3, 6, 9, 3, 3 * LINES)
    assert chunks_of(*sessions) == chunks


def test_dry_run_counts_the_lines_not_the_chunks() -> None:
    lines = [Line(i * 0.001, "S", f"250-line {i}") for i in range(2500)]
    recorded_ago(timedelta(days=40), lines=lines, messages=[sent_message()])
    recorded_ago(timedelta(days=35))
    assert rows()[3:] == (4, 2500 + LINES)  # 1,000 + 1,000 + 500 lines, and one chunk

    output = purge("--older-than", "30d", "--dry-run")

    assert output == (
        f"Would delete 2 sessions (3 messages, 4 recipients, {2500 + LINES:,} transcript "
        "lines) older than 2026-10-27 12:00:00 UTC.\n"
    )
    assert rows() == (2, 3, 4, 4, 2500 + LINES)


def test_batches_of_two_delete_five_sessions_in_three_batches() -> None:
    for days in range(40, 45):
        recorded_ago(timedelta(days=days))
    new = recorded_ago(timedelta(days=1))

    output = purge("--older-than", "30d", "--batch-size", "2", verbosity=2)

    batches = [line for line in output.splitlines() if line.startswith("Batch ")]
    assert batches == [
        f"Batch 1: deleted 2 sessions (4 messages, 6 recipients, {2 * LINES} transcript lines).",
        f"Batch 2: deleted 2 sessions (4 messages, 6 recipients, {2 * LINES} transcript lines).",
        f"Batch 3: deleted 1 session (2 messages, 3 recipients, {LINES} transcript lines).",
    ]
    assert output.splitlines()[-1].startswith("Deleted 5 sessions (10 messages, 15 recipients")
    assert list(Session.objects.values_list("pk", flat=True)) == [new.pk]
    assert rows() == (1, 2, 3, 1, LINES)
    assert set(TranscriptChunk.objects.values_list("session_id", flat=True)) == {new.pk}


def test_batches_go_oldest_first_and_hold_at_most_the_batch_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sessions = {days: recorded_ago(timedelta(days=days)).pk for days in (45, 60, 40, 50, 55)}
    batches: list[list[int]] = []
    delete = sockmail_purge._delete

    def spy(ids: list[int], using: str) -> sockmail_purge.Removed:
        batches.append(ids)
        return delete(ids, using)

    monkeypatch.setattr(sockmail_purge, "_delete", spy)

    purge("--older-than", "30d", "--batch-size", "2")

    oldest_first = [sessions[days] for days in (60, 55, 50, 45, 40)]
    assert batches == [oldest_first[:2], oldest_first[2:4], oldest_first[4:]]
    assert not Session.objects.exists()


def chunk_deletes(queries: list[dict[str, Any]]) -> int:
    table = TranscriptChunk._meta.db_table
    return sum(q["sql"].startswith("DELETE") and table in q["sql"].split()[2] for q in queries)


def test_a_batch_takes_the_same_queries_however_much_it_deletes(
    django_assert_num_queries: DjangoAssertNumQueries, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded_ago(timedelta(days=40), messages=[sent_message()], lines=[Line(0, "S", "220 hi")])
    assert rows() == (1, 1, 1, 1, 1)
    with CaptureQueriesContext(connection) as small:
        purge("--older-than", "30d")
    assert rows() == (0, 0, 0, 0, 0)
    assert chunk_deletes(small.captured_queries) == 1

    # More sessions in the batch, more messages than SQLite's 500 ids per DELETE, and
    # many chunks to each session (small ones, so that there are hundreds).
    monkeypatch.setattr(recorder, "LINES_PER_CHUNK", 2)
    many_lines = [Line(i * 0.001, "S", f"250-line {i}") for i in range(300)]
    for days in range(40, 43):
        recorded_ago(timedelta(days=days), messages=[sent_message()] * 200, lines=many_lines)
    assert rows() == (3, 600, 600, 450, 900)
    with django_assert_num_queries(len(small.captured_queries)) as large:
        output = purge("--older-than", "30d")

    assert "Deleted 3 sessions (600 messages, 600 recipients, 900 transcript lines)" in output
    assert rows() == (0, 0, 0, 0, 0)
    assert chunk_deletes(large.captured_queries) == 1  # one DELETE for all 450 chunks


def statements(queries: list[dict[str, Any]]) -> list[str]:
    """The first word of each query that reads or deletes (not the transaction's own)."""
    words = (q["sql"].split(None, 1)[0].upper() for q in queries)
    return [word for word in words if word in ("SELECT", "DELETE")]


def test_each_batch_takes_the_same_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of one session, a small one and large ones (hundreds of chunks): each
    batch adds the same queries, the ids, the line count and a DELETE per table."""
    with CaptureQueriesContext(connection) as nothing:
        purge("--older-than", "30d", "--batch-size", "1")
    recorded_ago(timedelta(days=40), messages=[sent_message()], lines=[Line(0, "S", "220 hi")])
    with CaptureQueriesContext(connection) as one:
        purge("--older-than", "30d", "--batch-size", "1")
    per_batch = len(one.captured_queries) - len(nothing.captured_queries)
    batch = ["SELECT", "SELECT", *["DELETE"] * 4]  # the ids, the lines; a table each
    assert statements(nothing.captured_queries) == ["SELECT"]  # no ids: done
    assert statements(one.captured_queries) == [*batch, "SELECT"]

    monkeypatch.setattr(recorder, "LINES_PER_CHUNK", 3)
    many_lines = [Line(i * 0.001, "S", f"250-line {i}") for i in range(600)]
    recorded_ago(timedelta(days=40), messages=[sent_message()], lines=[Line(0, "S", "220 hi")])
    recorded_ago(timedelta(days=41), messages=[sent_message()] * 50, lines=many_lines)
    recorded_ago(timedelta(days=42), messages=[sent_message()] * 100, lines=many_lines * 2)
    assert rows()[3:] == (1 + 200 + 400, 1 + 600 + 1200)
    with CaptureQueriesContext(connection) as three:
        output = purge("--older-than", "30d", "--batch-size", "1")

    assert "Deleted 3 sessions (151 messages, 151 recipients, 1,801 transcript lines)" in output
    assert rows() == (0, 0, 0, 0, 0)
    assert len(three.captured_queries) == len(nothing.captured_queries) + 3 * per_batch
    assert statements(three.captured_queries) == [*batch * 3, "SELECT"]
    assert chunk_deletes(three.captured_queries) == 3


@pytest.mark.parametrize(
    "retention", [30, 30.0, "30", timedelta(days=30)], ids=["int", "float", "str", "timedelta"]
)
def test_the_retention_setting_is_the_default_age(retention: object) -> None:
    recorded_ago(timedelta(days=40))
    new = recorded_ago(timedelta(days=20))

    with override_settings(SOCKMAIL={"RETENTION": retention}):
        output = purge()

    assert output.startswith("Deleted 1 session (")
    assert output.endswith("older than 2026-10-27 12:00:00 UTC.\n")
    assert list(Session.objects.values_list("pk", flat=True)) == [new.pk]


def test_older_than_wins_over_the_retention_setting() -> None:
    recorded_ago(timedelta(days=40))
    recorded_ago(timedelta(days=20))

    with override_settings(SOCKMAIL={"RETENTION": 30}):
        purge("--older-than", "10d")

    assert not Session.objects.exists()


@pytest.mark.parametrize(
    ("age", "cutoff"),
    [
        ("30d", "2026-10-27 12:00:00"),
        ("12h", "2026-11-26 00:00:00"),
        ("90m", "2026-11-26 10:30:00"),
        ("2w", "2026-11-12 12:00:00"),
        ("45s", "2026-11-26 11:59:15"),
        ("7", "2026-11-19 12:00:00"),
        ("1.5d", "2026-11-25 00:00:00"),
        (" 3H ", "2026-11-26 09:00:00"),
    ],
)
def test_ages_in_each_unit(age: str, cutoff: str) -> None:
    assert purge("--older-than", age, "--dry-run").endswith(f"older than {cutoff} UTC.\n")


def test_no_age_and_no_retention_setting_is_an_error() -> None:
    recorded_ago(timedelta(days=400))

    with override_settings(SOCKMAIL={}), pytest.raises(CommandError, match="--older-than"):
        purge()

    assert Session.objects.count() == 1


@pytest.mark.parametrize(
    "age", ["abc", "0d", "0", "-1d", "-1", "", "10x", "d", "1.5.3d", "99999999999w"]
)
def test_a_bad_age_is_an_error(age: str) -> None:
    recorded_ago(timedelta(days=400))

    with pytest.raises(CommandError, match="--older-than"):
        purge(f"--older-than={age}")
    with pytest.raises(CommandError, match="--older-than"):
        purge(older_than=age)  # call_command() skips argparse for keyword options

    assert Session.objects.count() == 1


@pytest.mark.parametrize("retention", [0, -1, timedelta(0), "abc"])
def test_a_bad_retention_setting_is_an_error(retention: object) -> None:
    recorded_ago(timedelta(days=400))

    with (
        override_settings(SOCKMAIL={"RETENTION": retention}),
        pytest.raises(CommandError, match=r"SOCKMAIL\['RETENTION'\]"),
    ):
        purge()

    assert Session.objects.count() == 1


def test_an_age_before_year_one_is_an_error() -> None:
    with pytest.raises(CommandError, match="before year 1"):
        purge("--older-than", "1000000d")


@pytest.mark.parametrize("size", ["0", "-5"])
def test_a_batch_size_below_one_is_an_error(size: str) -> None:
    recorded_ago(timedelta(days=400))

    with pytest.raises(CommandError, match="--batch-size"):
        purge("--older-than", "30d", f"--batch-size={size}")

    assert Session.objects.count() == 1


def test_verbosity_zero_prints_nothing() -> None:
    recorded_ago(timedelta(days=40))

    assert purge("--older-than", "30d", "--batch-size", "1", verbosity=0) == ""
    assert not Session.objects.exists()


@pytest.mark.parametrize("dry_run", [False, True])
def test_every_query_goes_through_the_audit_database_alias(
    monkeypatch: pytest.MonkeyPatch, dry_run: bool
) -> None:
    recorded_ago(timedelta(days=40))
    # A query that asked the router would go to a database that does not exist.
    monkeypatch.setattr(router, "db_for_read", lambda model, **hints: "elsewhere")
    monkeypatch.setattr(router, "db_for_write", lambda model, **hints: "elsewhere")

    with override_settings(SOCKMAIL={"DATABASE": "default"}):
        output = purge("--older-than", "30d", *(["--dry-run"] if dry_run else []))

    assert output.startswith("Would delete 1 session" if dry_run else "Deleted 1 session")


def test_without_the_database_setting_the_router_chooses() -> None:
    recorded_ago(timedelta(days=40))
    chosen: list[type[Any]] = []

    def db_for_write(model: type[Any], **hints: Any) -> str:
        chosen.append(model)
        return "default"

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(router, "db_for_write", db_for_write)
        purge("--older-than", "30d")

    assert chosen == [Session]
    assert not Session.objects.exists()
