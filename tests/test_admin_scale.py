"""The admin on big tables: no full count, a number of queries that does not grow with
the rows, and (on PostgreSQL) an index for every filter and search.

benchmarks/admin_scale.py times the same pages with a million sessions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core import checks
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_sockmail import admin as sockmail_admin
from django_sockmail import models, recorder
from django_sockmail.admin_pagination import CappedCountPaginator
from django_sockmail.models import (
    Message,
    Recipient,
    Session,
    TextPatternIndex,
    TranscriptChunk,
)
from tests.toolkit import STARTED

pytestmark = pytest.mark.django_db

SESSIONS = reverse("admin:django_sockmail_session_changelist")
MESSAGES = reverse("admin:django_sockmail_message_changelist")


def conversation(i: int) -> list[tuple[str, str]]:
    """(direction, text) of the transcript of fill()'s ``i``-th session."""
    return [
        ("S", "220 mail.example.com ESMTP"),
        ("C", "EHLO app.example.com"),
        ("S", "250 mail.example.com"),
        ("C", f"MAIL FROM:<sender{i % 3}@example.org>"),
        ("S", "250 2.1.0 Ok"),
        ("C", f"RCPT TO:<to{i}@example.net>"),
        ("S", "250 2.1.5 Ok"),
        ("C", f"RCPT TO:<cc{i}@example.net>"),
        ("S", "250 2.1.5 Ok"),
        ("C", "DATA"),
        ("S", "354 End data with <CR><LF>.<CR><LF>"),
        ("D", f"Subject: Invoice {i}"),
        ("S", f"250 2.0.0 Ok: queued as Q{i}"),
        ("C", "QUIT"),
        ("S", "221 2.0.0 Bye"),
    ]


def chunks(session: Session, said: list[tuple[str, str]]) -> Iterator[TranscriptChunk]:
    """``said`` stored as the recorder stores a transcript: LINES_PER_CHUNK lines to a
    chunk, each a JSON array of [offset_us, direction, text]."""
    lines = [[seq * 3250, d, text] for seq, (d, text) in enumerate(said, 1)]
    per_chunk = recorder.LINES_PER_CHUNK
    for start in range(0, len(lines), per_chunk):
        held = lines[start : start + per_chunk]
        yield TranscriptChunk(
            session=session,
            first_seq=start + 1,
            line_count=len(held),
            lines=json.dumps(held, ensure_ascii=False, separators=(",", ":")),
        )


def fill(count: int) -> None:
    """``count`` sessions, each with a message to two recipients and a transcript, in a
    few queries."""
    sessions = Session.objects.bulk_create(
        Session(
            host="mail.example.com",
            port=587,
            security=Session.Security.STARTTLS if i % 2 else Session.Security.NONE,
            started_at=STARTED + timedelta(minutes=i),
            status=Session.Status.FAILED if i % 10 == 0 else Session.Status.OK,
            message_count=1,
            sent_count=1,
            line_count=len(conversation(i)),
        )
        for i in range(count)
    )
    messages = Message.objects.bulk_create(
        Message(
            session=session,
            position=1,
            envelope_from=f"sender{i % 3}@example.org",
            message_id=f"<m{i}@example.org>",
            subject=f"Invoice {i}",
            status=Message.Status.PARTIAL if i % 10 == 0 else Message.Status.SENT,
            queue_id=f"Q{i}",
            recipient_count=2,
        )
        for i, session in enumerate(sessions)
    )
    Recipient.objects.bulk_create(
        Recipient(message=message, address=f"{name}{i}@example.net", accepted=True)
        for i, message in enumerate(messages)
        for name in ("to", "cc")
    )
    TranscriptChunk.objects.bulk_create(
        chunk for i, session in enumerate(sessions) for chunk in chunks(session, conversation(i))
    )


def sockmail_sql(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "django_sockmail_" in q["sql"]]


PAGES = [
    pytest.param(SESSIONS, {}, id="sessions"),
    pytest.param(SESSIONS, {"status__exact": "ok"}, id="sessions-by-status"),
    pytest.param(SESSIONS, {"security__exact": "starttls"}, id="sessions-by-security"),
    pytest.param(
        SESSIONS,
        {
            "started_at__gte": "2024-05-01 00:00:00+00:00",
            "started_at__lt": "2024-06-01 00:00:00+00:00",
        },
        id="sessions-by-date",
    ),
    pytest.param(SESSIONS, {"q": "invoice"}, id="sessions-searched-by-subject"),
    pytest.param(SESSIONS, {"q": "sender1@example.org"}, id="sessions-searched-by-address"),
    pytest.param(MESSAGES, {}, id="messages"),
    pytest.param(MESSAGES, {"status__exact": "sent"}, id="messages-by-status"),
    pytest.param(
        MESSAGES, {"session__started_at__gte": "2024-05-01 00:00:00+00:00"}, id="messages-by-date"
    ),
    pytest.param(MESSAGES, {"q": "SENDER2@example.org"}, id="messages-searched-by-address"),
]


@pytest.mark.parametrize(("url", "params"), PAGES)
def test_the_number_of_queries_does_not_grow_with_the_rows(
    admin_client: Client, url: str, params: dict[str, str]
) -> None:
    fill(10)
    with CaptureQueriesContext(connection) as few:
        few_rows = admin_client.get(url, params)
    fill(990)
    with CaptureQueriesContext(connection) as many:
        many_rows = admin_client.get(url, params)

    assert len(few_rows.context["cl"].result_list) <= 10
    assert len(many_rows.context["cl"].result_list) == 100  # a full page
    assert len(many.captured_queries) == len(few.captured_queries), sockmail_sql(many)
    # The count and the page, after the recipients of an address searched for.
    assert len(sockmail_sql(many)) == (3 if "@" in params.get("q", "") else 2)


@pytest.mark.parametrize(("url", "params"), PAGES)
def test_no_list_reads_the_whole_table(
    admin_client: Client, url: str, params: dict[str, str]
) -> None:
    # Not a full COUNT(*) (show_full_result_count, the stock paginator), not the
    # date hierarchy's SELECT DISTINCT of every date, no facet counts: every query on
    # the audit log stops after a bounded number of rows. (Each list has several pages.)
    fill(400)

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url, {**params, "_facets": "True"})

    assert response.status_code == 200
    *lookups, count, page = sockmail_sql(queries)
    for lookup in lookups:  # the messages to an address searched for
        assert lookup.endswith(f"LIMIT {sockmail_admin.RECIPIENT_ID_LIMIT + 1}"), lookup
    assert count.startswith("SELECT COUNT(*) FROM (SELECT "), count
    assert f"LIMIT {CappedCountPaginator.count_limit + 1}" in count
    assert "ORDER BY" not in count  # the database may count along any index
    assert page.endswith("LIMIT 100"), page


@pytest.fixture
def count_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(CappedCountPaginator, "count_limit", 20)
    monkeypatch.setattr(sockmail_admin.SessionAdmin, "list_per_page", 10)
    yield 20


def test_a_count_past_the_limit_reads_more_than(admin_client: Client, count_limit: int) -> None:
    fill(count_limit + 1)

    response = admin_client.get(SESSIONS, {"status__exact": "ok"})  # 18 of 21: counted
    assert response.context["cl"].result_count == 18
    assert "18 SMTP sessions" in response.content.decode()
    assert "18 results" in response.content.decode()

    response = admin_client.get(SESSIONS)

    content = response.content.decode()
    cl = response.context["cl"]
    assert cl.count_capped
    assert "more than 20 SMTP sessions" in content
    assert "21 SMTP sessions" not in content
    # Pages up to the limit are offered, no further.
    assert cl.paginator.num_pages == 2
    assert 'href="?p=2"' in content
    assert admin_client.get(SESSIONS, {"p": "3"}).status_code == 302  # the admin's ?e=1
    # Filtered and still capped: no "N results" in the search bar either.
    response = admin_client.get(SESSIONS, {"q": "invoice"})
    assert "more than 20 SMTP sessions" in response.content.decode()
    assert " results" not in response.content.decode()


def test_a_capped_list_offers_no_select_all(admin_client: Client, count_limit: int) -> None:
    fill(count_limit)
    content = admin_client.get(SESSIONS).content.decode()
    assert "Select all 20" in content  # counted: all of them may be selected

    fill(1)
    content = admin_client.get(SESSIONS).content.decode()
    assert 'class="action-counter"' in content
    assert not re.search(r"Select all \d", content)
    assert 'class="question' not in content


def test_the_paginator_counts_lists_too() -> None:
    paginator = CappedCountPaginator(list(range(25)), 10)
    assert (paginator.count, paginator.capped, paginator.num_pages) == (25, False, 3)


def explain(sql: str) -> list[tuple[str, str]]:
    """(index, index condition) for every index that the plan of ``sql`` uses, and
    ("Seq Scan", table) for each table it reads whole, with sequential scans made
    prohibitively expensive: on tables this small the planner would rather read them
    whole, and so could not tell us which index would serve."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        (plan,) = cursor.fetchone()
    used: list[tuple[str, str]] = []

    def walk(node: dict[str, Any]) -> None:
        if node["Node Type"] == "Seq Scan":
            used.append(("Seq Scan", node["Relation Name"]))
        if "Index Name" in node:
            used.append((node["Index Name"], node.get("Index Cond", "")))
        for child in node.get("Plans", []):
            walk(child)

    walk((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
    return used


# The changelist with the given parameters → an index whose condition contains the
# given text must be in the plan of one of its queries.
INDEXED = [
    pytest.param(SESSIONS, {"status__exact": "failed"}, "sockmail_session_status_idx", "status"),
    pytest.param(
        SESSIONS, {"security__exact": "none"}, "sockmail_session_security_idx", "security"
    ),
    pytest.param(
        SESSIONS,
        {
            "started_at__gte": "2024-05-01 00:00:00+00:00",
            "started_at__lt": "2024-05-02 00:00:00+00:00",
        },
        "django_sockmail_session_started_at",
        "started_at",
        id="sessions-by-date",
    ),
    pytest.param(
        SESSIONS, {"q": "To5@Example.NET"}, "sockmail_recipient_address_idx", "upper((address)"
    ),
    pytest.param(
        SESSIONS, {"q": "sender1@example.org"}, "sockmail_message_sender_idx", "upper((envelope"
    ),
    pytest.param(SESSIONS, {"q": "m5@example.org"}, "sockmail_message_msgid_idx", "message_id"),
    pytest.param(SESSIONS, {"q": "Q5"}, "sockmail_message_queue_id_idx", "queue_id"),
    pytest.param(SESSIONS, {"q": "invoice 1"}, "sockmail_message_subject_idx", "~>=~"),
    pytest.param(MESSAGES, {"status__exact": "partial"}, "sockmail_message_status_idx", "status"),
    pytest.param(
        MESSAGES,
        {"session__started_at__gte": "2024-05-01 00:00:00+00:00"},
        "django_sockmail_session_started_at",
        "started_at",
        id="messages-by-date",
    ),
    pytest.param(
        MESSAGES, {"q": "cc7@example.net"}, "sockmail_recipient_address_idx", "upper((address)"
    ),
    pytest.param(MESSAGES, {"q": "Invoice 7"}, "sockmail_message_subject_idx", "~>=~"),
]


@pytest.mark.postgresql
@pytest.mark.parametrize(("url", "params", "index", "condition"), INDEXED)
def test_every_filter_and_search_is_an_index_lookup(
    admin_client: Client, url: str, params: dict[str, str], index: str, condition: str
) -> None:
    fill(150)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url, params)
    assert response.context["cl"].result_list  # the case finds something

    used = [u for sql in sockmail_sql(queries) for u in explain(sql)]

    assert not [u for u in used if u[0] == "Seq Scan"], used
    assert any(name.startswith(index) and condition in cond for name, cond in used), used


@pytest.mark.postgresql
def test_the_transcript_is_read_through_the_chunk_index(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder, "LINES_PER_CHUNK", 4)
    fill(150)  # 600 chunks: 4 to a session
    session = Session.objects.get(messages__queue_id="Q75")
    assert session.chunks.count() == 4

    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(
            reverse("admin:django_sockmail_session_change", args=[session.pk])
        ).content.decode()
        response = admin_client.get(
            reverse("admin:django_sockmail_session_transcript", args=[session.pk])
        )
        text = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
        later = session.transcript_lines(after=9, limit=2)  # from inside the third chunk

    assert "RCPT TO:&lt;cc75@example.net&gt;" in page and "221 2.0.0 Bye" in page
    assert text.endswith("+48.750ms S: 221 2.0.0 Bye\n")
    assert [line.seq for line in later] == [10, 11]
    reads = [q["sql"] for q in queries.captured_queries if "sockmail_transcriptchunk" in q["sql"]]
    # The page and the download: the four chunks (CHUNKS_PER_QUERY), then a query that
    # finds no more; lines 10 and 11: the chunk holding line 10, then its batch.
    assert models.CHUNKS_PER_QUERY == 4
    assert len(reads) == 6, reads
    for sql in reads:
        used = explain(sql)
        assert not [u for u in used if u[0] == "Seq Scan"], (sql, used)
        assert any(
            name == "django_sockmail_chunk_first_seq" and "session_id" in cond
            for name, cond in used
        ), (sql, used)


@pytest.mark.postgresql
def test_no_index_is_written_that_no_search_reads() -> None:
    # db_index=True on a CharField adds a varchar_pattern_ops twin on PostgreSQL, for
    # LIKE searches: none is made on these columns, so the twins would only be written.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename LIKE 'django_sockmail_%%' "
            "AND indexname LIKE '%%_like'"
        )
        assert cursor.fetchall() == []


@pytest.mark.postgresql
def test_the_subject_index_has_the_pattern_operator_class() -> None:
    # Under any collation but C, LIKE 'prefix%' can use only a text_pattern_ops index.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'sockmail_message_subject_idx'"
        )
        (definition,) = cursor.fetchone()
    assert definition.endswith('(upper("left"((subject)::text, 100)) text_pattern_ops)'), definition


def test_the_pattern_index_is_plain_on_other_databases() -> None:
    index = next(i for i in Message._meta.indexes if isinstance(i, TextPatternIndex))
    # The statement only, not run: no need to enter the editor (and its transaction).
    sql = str(index.create_sql(Message, connection.schema_editor(collect_sql=True)))
    assert ("text_pattern_ops" in sql) is (connection.vendor == "postgresql"), sql
    assert "UPPER(" in sql


def test_no_warning_where_expression_indexes_are_not_supported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # MariaDB: Django skips the UPPER() indexes (its case-insensitive collation makes
    # the plain ones serve) and would warn about each model with one (models.W043).
    monkeypatch.setattr(connection.features, "supports_expression_indexes", False)

    for model in (Session, Message, Recipient):
        messages = model.check(databases=["default"])
        assert not [m for m in messages if m.level >= checks.WARNING], messages
