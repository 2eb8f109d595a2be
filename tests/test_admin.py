"""The read-only admin: lists, search, filters, the session page with its transcript,
the message page with its recipients, permissions, and escaping of server text."""

from __future__ import annotations

import html
import math
import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.mail import EmailMessage
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pytest_django import Settings

from django_sockmail import admin as sockmail_admin
from django_sockmail import models, recorder
from django_sockmail.admin_search import SEARCH_HELP_TEXT
from django_sockmail.models import Message, Recipient, Session, TranscriptChunk
from django_sockmail.recorder import record, write_so_far
from django_sockmail.smtp.replies import Reply
from django_sockmail.smtp.results import MessageOutcome, RecipientOutcome
from django_sockmail.transcript import FAILED, Line, MessageRecord
from django_sockmail.transcript_text import transcript_line
from tests.servers import SMTPServer, backend_for
from tests.spies import decodes
from tests.toolkit import (
    CONVERSATION,
    STARTED,
    lines_of,
    make_transcript,
    partly_refused_message,
    recorded,
    sent_message,
)

pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("x")</script>'


def other_session() -> Session:
    """A failed session a day later, with nothing in common with make_transcript()'s."""
    outcome = MessageOutcome(
        sender="zed@example.com",
        recipients=[RecipientOutcome("yan@example.com", Reply(250, ("2.1.5 Ok",)))],
        mail_reply=Reply(250, ("2.1.0 Ok",)),
        data_reply=Reply(554, ("5.7.1 Rejected by policy",)),
    )
    outcome.settle()
    return recorded(
        host="relay.example.com",
        port=25,
        security="none",
        tls=None,
        status=FAILED,
        error="SMTPDataError: 554",
        started_at=STARTED + timedelta(days=1),
        lines=[Line(0.0, "S", "220 relay.example.com")],
        messages=[MessageRecord(outcome, message_id="<other@example.com>", subject="Invoice")],
    )


def recorded_in_parts(lines: list[Line], *, at: int) -> Session:
    """A session whose first ``at`` lines (and its messages) went to the database
    while it was open (write_so_far) and the rest when it closed: its chunks begin
    where each write began, not on multiples of LINES_PER_CHUNK."""
    transcript = make_transcript(lines=lines[:at])
    assert write_so_far(transcript)
    transcript.lines = lines[at:]
    session = record(transcript)
    assert session is not None
    return session


def chunk_spans(session: Session) -> list[tuple[int, int]]:
    """(first_seq, line_count) of each of the session's chunks, in order."""
    return list(session.chunks.order_by("first_seq").values_list("first_seq", "line_count"))


def session_url(session: Session) -> str:
    return reverse("admin:django_sockmail_session_change", args=[session.pk])


def message_url(message: Message) -> str:
    return reverse("admin:django_sockmail_message_change", args=[message.pk])


SESSIONS = reverse("admin:django_sockmail_session_changelist")
MESSAGES = reverse("admin:django_sockmail_message_changelist")


def listed(client: Client, url: str, **params: str) -> list[Any]:
    response = client.get(url, params)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def transcript_rows(content: str) -> list[tuple[str, str, str, str]]:
    """(kind, offset, prefix, text) for each transcript row of the session page."""
    rows = re.findall(
        r'<tr class="sockmail-line sockmail-line-([\w-]+)">\s*'
        r'<td class="sockmail-offset">([^<]*)</td>\s*'
        r'<td class="sockmail-prefix">([^<]*)</td>\s*'
        r'<td class="sockmail-text">(?:<pre>)?(.*?)(?:</pre>)?</td>',
        content,
        re.DOTALL,
    )
    return [(kind, offset, prefix, html.unescape(text)) for kind, offset, prefix, text in rows]


def test_every_page_renders_for_a_superuser(admin_client: Client) -> None:
    session = recorded()
    message = session.messages.get(position=1)

    for url in (SESSIONS, MESSAGES, session_url(session), message_url(message)):
        assert admin_client.get(url).status_code == 200, url


def test_anonymous_users_are_sent_to_the_login_page(client: Client) -> None:
    session = recorded()
    message = session.messages.get(position=1)

    for url in (SESSIONS, MESSAGES, session_url(session), message_url(message)):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url


def test_the_session_list_shows_each_session_without_joins(admin_client: Client) -> None:
    recorded()
    other_session()

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(SESSIONS)

    content = response.content.decode()
    assert "mail.example.com:587" in content
    assert "relay.example.com:25" in content
    assert "admin/img/icon-yes.svg" in content
    assert "admin/img/icon-no.svg" in content
    assert "TLSv1.3" in content
    session_queries = [q["sql"] for q in queries.captured_queries if "sockmail_session" in q["sql"]]
    assert session_queries
    assert not any("sockmail_message" in sql for sql in session_queries)


def test_the_session_page_shows_the_transcript_as_a_conversation(admin_client: Client) -> None:
    session = recorded()

    response = admin_client.get(session_url(session))

    rows = transcript_rows(response.content.decode())
    kinds = {"C": "client", "S": "server", "D": "content", "*": "info"}
    prefixes = {"C": "C:", "S": "S:", "D": "D:", "*": "*"}
    expected = [
        (
            "server-error" if d == "S" and text.startswith("5") else kinds[d],
            f"{i * 12.5:.1f} ms",
            prefixes[d],
            text,
        )
        for i, (d, text) in enumerate(CONVERSATION)
    ]
    assert rows == expected
    content = response.content.decode()
    assert "<pre>From: alice@example.org\nTo: bob@example.net" in content
    assert "AUTH PLAIN [credentials redacted]" in content


def test_the_session_page_lists_its_messages_with_links(admin_client: Client) -> None:
    session = recorded()
    first, second = session.messages.order_by("position")

    response = admin_client.get(session_url(session))

    content = response.content.decode()
    assert f'<a href="{message_url(first)}">Quarterly report</a>' in content
    assert f'<a href="{message_url(second)}">Lunch?</a>' in content
    assert "ABC123" in content
    assert "DEF456" in content
    assert "250 2.0.0 Ok: queued as ABC123" in content
    assert '<div class="sockmail-refused"' in content
    assert "nobody@example.net (550)" in content
    assert "TLS_AES_256_GCM_SHA384" in content
    assert "CN=Example CA,O=Example" in content
    assert "1.250 s" in content  # duration


def recipient_rows(content: str) -> list[tuple[str, str, str, str]]:
    """(message, address, outcome, reply) per row of the session page's recipient table."""
    table = content.split('<table class="sockmail-table sockmail-recipients">', 1)[1]
    table = table.split("</table>", 1)[0]
    rows = []
    for row in re.findall(r'<tr class="sockmail-recipient">(.*?)</tr>', table, re.DOTALL):
        cells = [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)
        ]
        rows.append(tuple(html.unescape(cell) for cell in cells))
    return rows  # type: ignore[return-value]


def test_the_session_page_has_an_outcome_row_per_recipient(admin_client: Client) -> None:
    session = recorded()

    content = admin_client.get(session_url(session)).content.decode()

    assert recipient_rows(content) == [
        ("1", "bob@example.net", "accepted", "250 2.1.5 Ok"),
        ("2", "carol@example.net", "accepted", "250 2.1.5 Ok"),
        (
            "2",
            "nobody@example.net",
            "refused",
            "550 5.1.1 <nobody@example.net>: Recipient address rejected",
        ),
    ]


def test_a_recipient_never_offered_is_shown_so(admin_client: Client) -> None:
    outcome = MessageOutcome(
        sender="alice@example.org",
        recipients=[RecipientOutcome("late@example.net", None)],
        mail_reply=Reply(451, ("4.3.0 Try again later",)),
    )
    outcome.settle()
    session = recorded(messages=[MessageRecord(outcome, subject="Never sent")])

    content = admin_client.get(session_url(session)).content.decode()

    assert recipient_rows(content) == [("1", "late@example.net", "not offered", "")]


def transcript_url(session: Session) -> str:
    return reverse("admin:django_sockmail_session_transcript", args=[session.pk])


def download(client: Client, session: Session) -> str:
    response = client.get(transcript_url(session))
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]


def test_the_session_page_links_to_the_transcript_download(admin_client: Client) -> None:
    session = recorded()

    content = admin_client.get(session_url(session)).content.decode()

    assert f'<a href="{transcript_url(session)}" download>Download transcript</a>' in content
    assert transcript_url(session) == f"{session_url(session).rsplit('/change/', 1)[0]}/transcript/"


def test_the_transcript_downloads_as_plain_text(admin_client: Client, settings: Settings) -> None:
    settings.TIME_ZONE = "UTC"
    session = recorded()

    response = admin_client.get(transcript_url(session))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="sockmail-session-{session.pk}.txt"'
    )
    assert response["X-Content-Type-Options"] == "nosniff"
    text = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    header, conversation = text.split("\n\n", 1)
    assert header.splitlines() == [
        f"SMTP session {session.pk}",
        "Server: mail.example.com:587 (STARTTLS)",
        "Peer: 192.0.2.10:587",
        "Local: 198.51.100.7:53422",
        "Started: 2024-05-01 12:00:00 UTC",
        "Ended: 2024-05-01 12:00:01 UTC",
        "Duration: 1.250 s",
        "TLS: TLSv1.3 TLS_AES_256_GCM_SHA384",
        "Certificate subject: CN=mail.example.com",
        "Certificate issuer: CN=Example CA,O=Example",
        "Certificate valid: Jan  1 00:00:00 2024 GMT to Jan  1 00:00:00 2025 GMT",
        f"Certificate SHA-256: {'ab' * 32}",
        "Status: OK",
        "Messages: 2 (2 sent)",
    ]
    lines = conversation.splitlines()
    assert lines[:4] == [
        "+0.000ms * connecting to mail.example.com port 587",
        "+12.500ms * connected to 192.0.2.10:587 from 198.51.100.7:53422",
        "+25.000ms S: 220 mail.example.com ESMTP Postfix",
        "+37.500ms C: EHLO client.example.org",
    ]
    assert "+162.500ms C: AUTH PLAIN [credentials redacted]" in lines
    # The header block sent as content: one event, its continuation lines indented.
    content_at = lines.index("+262.500ms D: From: alice@example.org")
    assert lines[content_at + 1] == " " * len("+262.500ms D: ") + "To: bob@example.net"
    assert lines[-1] == f"+{(len(CONVERSATION) - 1) * 12.5:.3f}ms * connection closed"
    assert sum(line.startswith("+") for line in lines) == len(CONVERSATION)


def test_the_transcript_download_has_the_error_and_no_tls_when_there_was_none(
    admin_client: Client,
) -> None:
    session = other_session()

    header = download(admin_client, session).split("\n\n", 1)[0].splitlines()

    assert "TLS: none" in header
    assert "Status: failed" in header
    assert "Error: SMTPDataError: 554" in header


def test_the_transcript_download_has_every_line_a_chunk_at_a_time(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sockmail_admin, "TRANSCRIPT_LINE_LIMIT", 5)  # the page's limit
    monkeypatch.setattr(recorder, "LINES_PER_CHUNK", 4)
    conversation = CONVERSATION * 3
    session = recorded(lines=lines_of(conversation))
    short = recorded(lines=lines_of(CONVERSATION[:4]))
    chunks = chunk_spans(session)
    assert chunks == [
        (seq, min(4, len(conversation) + 1 - seq)) for seq in range(1, len(conversation) + 1, 4)
    ]
    assert len(chunks) == 27
    assert chunk_spans(short) == [(1, 4)]
    decoded = decodes(monkeypatch)

    with CaptureQueriesContext(connection) as short_queries:
        download(admin_client, short)
    decoded.clear()
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(transcript_url(session))
        pieces = []
        for piece in response.streaming_content:  # type: ignore[attr-defined]
            pieces.append(piece.decode())
            # A piece is sent as soon as its chunk is read: one chunk decoded at a
            # time, so what is held does not grow with the transcript.
            assert decoded == [first for first, _ in chunks[: len(pieces) - 1]]

    header, *said = pieces
    assert header.startswith(f"SMTP session {session.pk}\n") and header.endswith("\n\n")
    # Every line, in order, past the page's limit: each piece the lines of its chunk.
    expected = [
        transcript_line(i * 12.5, d, text) + "\n" for i, (d, text) in enumerate(conversation)
    ]
    assert said == ["".join(expected[first - 1 : first - 1 + count]) for first, count in chunks]
    assert said[-1].endswith("* connection closed\n")
    # 27 chunks are read CHUNKS_PER_QUERY to a query, so what a query holds is bounded
    # on every database; nothing else grows with the transcript.
    reads = [q for q in queries.captured_queries if "sockmail_transcriptchunk" in q["sql"]]
    assert len(reads) == math.ceil(27 / models.CHUNKS_PER_QUERY) == 7, reads
    assert len(queries.captured_queries) == len(short_queries.captured_queries) + len(reads) - 1


def test_the_transcript_download_escapes_control_characters(admin_client: Client) -> None:
    session = recorded(
        lines=[
            Line(0.0, "S", "220 \x1b[2J\x1b]0;owned\x07 hello\rthere"),
            Line(0.001, "D", "Subject: a\tb\nX-Evil: \x1b[31mred"),
            Line(0.002, "S", "250 \u009b2J cleared by a C1 CSI"),
        ],
        error="bad \x1b[1m error",
    )

    text = download(admin_client, session)

    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "+0.000ms S: 220 \\x1b[2J\\x1b]0;owned\\x07 hello\\x0dthere" in text
    assert "+1.000ms D: Subject: a\tb\n" in text
    assert "X-Evil: \\x1b[31mred" in text
    assert "\u009b" not in text and "+2.000ms S: 250 \\x9b2J cleared by a C1 CSI" in text
    assert "Error: bad \\x1b[1m error" in text


def test_only_users_who_may_view_sessions_download_transcripts(
    client: Client, django_user_model: type[User]
) -> None:
    session = recorded()
    url = transcript_url(session)

    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))

    nobody = django_user_model.objects.create_user(username="clerk", password="x", is_staff=True)
    client.force_login(nobody)
    assert client.get(url).status_code == 403

    nobody.user_permissions.add(
        Permission.objects.get(content_type__app_label="django_sockmail", codename="view_session")
    )
    client.force_login(nobody)
    assert download(client, session).startswith(f"SMTP session {session.pk}\n")


def test_a_missing_session_has_no_transcript(admin_client: Client) -> None:
    response = admin_client.get(reverse("admin:django_sockmail_session_transcript", args=[999]))

    assert response.status_code == 404


def test_a_superuser_downloads_the_transcript(admin_client: Client) -> None:
    session = recorded()

    assert "C: QUIT" in download(admin_client, session)


def test_times_are_shown_to_the_second(admin_client: Client, settings: Settings) -> None:
    settings.TIME_ZONE = "Europe/Berlin"
    session = recorded()
    message = session.messages.get(position=1)

    page = admin_client.get(session_url(session)).content.decode()
    assert "2024-05-01 14:00:00 CEST" in page
    assert "2024-05-01 14:00:01 CEST" in page  # ended, 1.25 s later
    assert "2024-05-01 14:00:00 CEST" in admin_client.get(SESSIONS).content.decode()
    assert "2024-05-01 14:00:00 CEST" in admin_client.get(MESSAGES).content.decode()
    assert "2024-05-01 14:00:00 CEST" in admin_client.get(message_url(message)).content.decode()


def test_the_session_page_needs_a_constant_number_of_queries(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder, "LINES_PER_CHUNK", 4)
    small = recorded(messages=[sent_message()], lines=lines_of(CONVERSATION[:3]))
    big = recorded(
        messages=[sent_message(), partly_refused_message()] * 5,
        lines=lines_of(CONVERSATION * 3),
    )
    assert (len(chunk_spans(small)), len(chunk_spans(big))) == (1, 27)
    admin_client.get(session_url(small))  # what the admin caches (the content types)

    with CaptureQueriesContext(connection) as small_queries:
        admin_client.get(session_url(small))
    with CaptureQueriesContext(connection) as big_queries:
        response = admin_client.get(session_url(big))

    content = response.content.decode()
    assert content.count("nobody@example.net (550)") == 5
    assert len(transcript_rows(content)) == len(CONVERSATION) * 3  # every chunk's lines
    assert "not shown" not in content
    # Only the transcript's reads grow, CHUNKS_PER_QUERY chunks to a query (and the page
    # shows at most TRANSCRIPT_LINE_LIMIT lines): nothing grows with the messages.
    extra_reads = math.ceil(27 / models.CHUNKS_PER_QUERY) - 1
    assert len(big_queries.captured_queries) == len(small_queries.captured_queries) + extra_reads


def test_the_session_page_links_to_its_messages_in_the_message_list(admin_client: Client) -> None:
    session = recorded()
    other_session()

    response = admin_client.get(session_url(session))

    assert f"{MESSAGES}?session__id__exact={session.pk}" in response.content.decode()
    found = listed(admin_client, MESSAGES, session__id__exact=str(session.pk))
    assert sorted(m.subject for m in found) == ["Lunch?", "Quarterly report"]


@pytest.mark.parametrize("per_chunk", [1000, 5, 4, 2])
def test_a_long_transcript_is_cut_short_with_a_note(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch, per_chunk: int
) -> None:
    monkeypatch.setattr(sockmail_admin, "TRANSCRIPT_LINE_LIMIT", 5)
    monkeypatch.setattr(recorder, "LINES_PER_CHUNK", per_chunk)  # 1, 8, 9 or 18 chunks
    session = recorded()
    decoded = decodes(monkeypatch)

    response = admin_client.get(session_url(session))

    content = response.content.decode()
    rows = transcript_rows(content)
    assert [(prefix, text) for _, _, prefix, text in rows] == [
        ("*", "connecting to mail.example.com port 587"),
        ("*", "connected to 192.0.2.10:587 from 198.51.100.7:53422"),
        ("S:", "220 mail.example.com ESMTP Postfix"),
        ("C:", "EHLO client.example.org"),
        ("S:", "250-mail.example.com"),
    ]
    assert f"{len(CONVERSATION) - 5} more lines not shown." in content
    # Only the chunks that hold the lines shown are read.
    assert decoded == [first for first, _ in chunk_spans(session) if first <= 5]


@pytest.mark.parametrize("limit", [10, len(CONVERSATION) - 1, len(CONVERSATION)])
def test_the_note_counts_the_lines_of_a_transcript_written_in_parts(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    monkeypatch.setattr(sockmail_admin, "TRANSCRIPT_LINE_LIMIT", limit)
    monkeypatch.setattr(recorder, "LINES_PER_CHUNK", 4)
    session = recorded_in_parts(lines_of(CONVERSATION), at=7)
    assert chunk_spans(session) == [(1, 4), (5, 3), *((seq, 4) for seq in range(8, 36, 4)), (36, 1)]
    assert session.line_count == len(CONVERSATION)

    response = admin_client.get(session_url(session))

    content = response.content.decode()
    rows = transcript_rows(content)
    assert [text for _, _, _, text in rows] == [text for _, text in CONVERSATION[:limit]]
    assert [offset for _, offset, _, _ in rows] == [f"{i * 12.5:.1f} ms" for i in range(limit)]
    hidden = len(CONVERSATION) - limit
    if hidden == 0:
        assert "not shown" not in content
    else:
        assert f"{hidden} more line{'s' if hidden > 1 else ''} not shown." in content


@pytest.mark.parametrize("in_parts", [False, True], ids=["in-one-go", "in-parts"])
def test_transcript_lines_reads_only_the_chunks_that_hold_the_lines_asked_for(
    monkeypatch: pytest.MonkeyPatch, in_parts: bool
) -> None:
    # What the session page and the download read with: from any line, any number.
    monkeypatch.setattr(recorder, "LINES_PER_CHUNK", 4)
    # In parts: chunks 1-4, 5-7, 8-11, ..., 36; in one go: 1-4, 5-8, ..., 33-36.
    session = recorded_in_parts(lines_of(CONVERSATION), at=7) if in_parts else recorded()
    firsts = [first for first, _ in chunk_spans(session)]
    everything = session.transcript_lines()
    assert [(line.seq, line.direction, line.text) for line in everything] == [
        (seq, d, text) for seq, (d, text) in enumerate(CONVERSATION, start=1)
    ]
    assert [line.offset_ms for line in everything] == [i * 12.5 for i in range(len(CONVERSATION))]
    decoded = decodes(monkeypatch)

    def holding(seq: int) -> int:
        return max(first for first in firsts if first <= seq)

    # Lines 10 and 11, from inside the third chunk: that chunk alone is read.
    assert [line.text for line in session.transcript_lines(after=9, limit=2)] == [
        "TLS established: TLSv1.3 TLS_AES_256_GCM_SHA384",
        "EHLO client.example.org",
    ]
    assert decoded == [holding(10)] == ([8] if in_parts else [9])

    last = len(CONVERSATION)
    for after in range(last + 2):
        for limit in (None, 0, 1, 2, 3, 4, 5, 9, last):
            decoded.clear()
            with CaptureQueriesContext(connection) as queries:
                lines = session.transcript_lines(after=after, limit=limit)

            assert lines == everything[after:][:limit], (after, limit)
            # From the chunk that holds line after + 1 to the one that holds the last
            # line wanted (or to the end, when there are fewer than asked for).
            if limit == 0:
                read: list[int] = []
            else:
                until = firsts[-1] if limit is None or len(lines) < limit else lines[-1].seq
                read = [f for f in firsts if holding(min(after + 1, last)) <= f <= holding(until)]
            assert decoded == read, (after, limit)
            # The chunk holding line after + 1 is found by one query; the chunks are
            # read CHUNKS_PER_QUERY to a query.
            most = 1 + len(read) // models.CHUNKS_PER_QUERY + 1
            assert len(queries.captured_queries) <= most, (after, limit)


def test_the_message_page_shows_recipients_and_the_session(admin_client: Client) -> None:
    session = recorded()
    message = session.messages.get(position=2)

    response = admin_client.get(message_url(message))

    content = response.content.decode()
    assert 'id="recipients-group"' in content
    assert "carol@example.net" in content
    assert "nobody@example.net" in content
    assert "5.1.1 &lt;nobody@example.net&gt;: Recipient address rejected" in content
    assert f'<a href="{session_url(session)}">{html.escape(str(session))}</a>' in content
    assert "&lt;lunch.2@example.org&gt;" in content
    assert "DEF456" in content
    assert '<pre class="sockmail-headers">From: alice@example.org' in content


def test_the_message_list_shows_messages_with_their_session(admin_client: Client) -> None:
    session = recorded()

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(MESSAGES)

    content = response.content.decode()
    assert "Quarterly report" in content
    assert "Lunch?" in content
    assert "admin/img/icon-alert.svg" in content  # the partly sent one
    assert f'href="{session_url(session)}"' in content
    # Each row's session comes joined in, not from a query of its own.
    sql = [q["sql"] for q in queries.captured_queries]
    assert [s for s in sql if "sockmail_session" in s and "sockmail_message" not in s] == []


@pytest.mark.parametrize(
    "query",
    [
        "nobody@example.net",  # a refused recipient
        "bob@example.net",  # an accepted recipient
        "BOB@Example.NET",  # addresses in any case
        "<report.1@example.org>",  # Message-ID
        "report.1@example.org",  # Message-ID without <>
        "ABC123",  # queue id
        "quarterly REPORT",  # subject prefix, any case
        "Quar",
        "alice@example.org",  # envelope sender
        "  alice@example.org ",
    ],
)
def test_session_search_finds_the_session(admin_client: Client, query: str) -> None:
    session = recorded()
    other_session()

    assert listed(admin_client, SESSIONS, q=query) == [session]


@pytest.mark.parametrize(
    "query",
    [
        "report",  # a word inside the subject: subjects match by their beginning only
        "example.net",  # part of an address
        "bob@example",
        "ABC12",  # part of a queue id
        "abc123",  # queue ids match exactly, case and all (MariaDB's collation ignores case)
        "report.1",  # part of a Message-ID
        "mail.example.com",  # the host: a filter's job, not the search's
    ],
)
def test_session_search_matches_whole_values_and_subject_prefixes(
    admin_client: Client, query: str
) -> None:
    recorded()

    assert listed(admin_client, SESSIONS, q=query) == []


def test_a_session_with_several_matches_is_listed_once(admin_client: Client) -> None:
    # alice is the sender of both messages, bob a recipient too: four matching rows.
    session = recorded(messages=[sent_message(), sent_message()])

    assert listed(admin_client, SESSIONS, q="alice@example.org") == [session]
    assert listed(admin_client, SESSIONS, q="bob@example.net") == [session]


def test_an_address_with_many_messages_is_searched_by_subquery(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bob has two messages: past the limit, his are not listed by id but united in.
    monkeypatch.setattr(sockmail_admin, "RECIPIENT_ID_LIMIT", 1)
    session = recorded(messages=[sent_message(), sent_message(), partly_refused_message()])
    other_session()

    with CaptureQueriesContext(connection) as queries:
        assert listed(admin_client, SESSIONS, q="BOB@example.net") == [session]
    assert any("UNION ALL" in q["sql"] for q in queries.captured_queries)
    found = listed(admin_client, MESSAGES, q="bob@example.net")
    assert [m.subject for m in found] == ["Quarterly report", "Quarterly report"]
    assert listed(admin_client, MESSAGES, q="carol@example.net")[0].subject == "Lunch?"


def test_a_long_subject_is_found_by_its_whole_prefix(admin_client: Client) -> None:
    long_subject = "Monthly statement " + "x" * 150 + " end"
    record = sent_message()
    record.subject = long_subject
    session = recorded(messages=[record])

    assert listed(admin_client, SESSIONS, q=long_subject[:160].upper()) == [session]
    assert listed(admin_client, SESSIONS, q=long_subject[:120] + "y") == []


def test_the_search_says_what_it_matches(admin_client: Client) -> None:
    for url in (SESSIONS, MESSAGES):
        content = admin_client.get(url).content.decode()
        assert 'id="searchbar_helptext"' in content, url
        assert html.escape(SEARCH_HELP_TEXT) in content, url


@pytest.mark.parametrize(
    ("query", "subject"),
    [
        ("nobody@example.net", "Lunch?"),
        ("NOBODY@example.net", "Lunch?"),
        ("ABC123", "Quarterly report"),
        ("<lunch.2@example.org>", "Lunch?"),
        ("lunch.2@example.org", "Lunch?"),
        ("invoice", "Invoice"),
        ("zed@example.com", "Invoice"),
        ("yan@example.com", "Invoice"),
    ],
)
def test_message_search(admin_client: Client, query: str, subject: str) -> None:
    recorded()
    other_session()

    found = listed(admin_client, MESSAGES, q=query)

    assert [m.subject for m in found] == [subject]


def test_session_filters(admin_client: Client) -> None:
    ok = recorded()
    failed = other_session()

    assert listed(admin_client, SESSIONS, status__exact="failed") == [failed]
    assert listed(admin_client, SESSIONS, status__exact="ok") == [ok]
    assert listed(admin_client, SESSIONS, security__exact="starttls") == [ok]
    day = STARTED.date()
    assert listed(
        admin_client,
        SESSIONS,
        started_at__gte=f"{day} 00:00:00+00:00",
        started_at__lt=f"{day + timedelta(days=1)} 00:00:00+00:00",
    ) == [ok]
    assert listed(
        admin_client,
        SESSIONS,
        started_at__year=str(day.year),
        started_at__month=str(day.month),
        started_at__day=str(day.day + 1),
    ) == [failed]


def test_message_filters(admin_client: Client) -> None:
    recorded()
    other_session()

    partial = listed(admin_client, MESSAGES, status__exact="partial")
    assert [m.subject for m in partial] == ["Lunch?"]
    failed = listed(admin_client, MESSAGES, status__exact="failed")
    assert [m.subject for m in failed] == ["Invoice"]
    day = STARTED.date() + timedelta(days=1)
    later = listed(
        admin_client,
        MESSAGES,
        session__started_at__gte=f"{day} 00:00:00+00:00",
        session__started_at__lt=f"{day + timedelta(days=1)} 00:00:00+00:00",
    )
    assert [m.subject for m in later] == ["Invoice"]


def test_deferred_messages_and_timed_out_sessions_have_their_own_filters(
    admin_client: Client,
) -> None:
    outcome = MessageOutcome(
        sender="zed@example.com",
        recipients=[RecipientOutcome("yan@example.com", Reply(451, ("4.7.1 Greylisted",)))],
        mail_reply=Reply(250, ("2.1.0 Ok",)),
    )
    outcome.settle()
    recorded(
        status="timeout",
        error="SMTPTimeoutError: Timed out after 30 s waiting for the reply to DATA",
        messages=[MessageRecord(outcome, subject="Greylisted")],
    )
    recorded()

    deferred = listed(admin_client, MESSAGES, status__exact="deferred")
    assert [(m.subject, m.reply_code, m.enhanced_status) for m in deferred] == [
        ("Greylisted", 451, "4.7.1")
    ]
    [timed_out] = listed(admin_client, SESSIONS, status__exact="timeout")
    assert timed_out.error.startswith("SMTPTimeoutError")
    page = admin_client.get(SESSIONS).content.decode()
    assert "timed out" in page


@pytest.mark.parametrize("model", ["session", "message"])
def test_nothing_can_be_added(admin_client: Client, model: str) -> None:
    response = admin_client.get(reverse(f"admin:django_sockmail_{model}_add"))

    assert response.status_code == 403


def test_nothing_can_be_changed(admin_client: Client) -> None:
    session = recorded()
    message = session.messages.get(position=1)

    page = admin_client.get(session_url(session))
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(session_url(session), {"host": "evil"}).status_code == 403
    assert admin_client.post(message_url(message), {"subject": "evil"}).status_code == 403
    session.refresh_from_db()
    assert session.host == "mail.example.com"


def test_a_superuser_can_delete_a_session_with_everything_in_it(admin_client: Client) -> None:
    session = recorded()
    url = reverse("admin:django_sockmail_session_delete", args=[session.pk])

    response = admin_client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not Session.objects.exists()
    assert not Message.objects.exists()
    assert not TranscriptChunk.objects.exists()  # the transcript with it
    assert not Recipient.objects.exists()


@pytest.fixture
def staff_client(client: Client, django_user_model: type[User]) -> Client:
    """A staff user who may view sessions and messages, and holds every other
    permission on them too: the admin still refuses to add, change or delete."""
    user = django_user_model.objects.create_user(username="auditor", password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_sockmail",
            content_type__model__in=["session", "message"],
        )
    )
    client.force_login(user)
    return client


def test_staff_may_view_but_not_delete(staff_client: Client) -> None:
    session = recorded()
    message = session.messages.get(position=2)

    assert staff_client.get(session_url(session)).status_code == 200
    response = staff_client.get(message_url(message))
    assert response.status_code == 200
    # Recipients show on the message page without a permission of their own.
    assert 'id="recipients-group"' in response.content.decode()
    assert "nobody@example.net" in response.content.decode()
    delete = reverse("admin:django_sockmail_session_delete", args=[session.pk])
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    assert Session.objects.exists()


def test_server_text_is_escaped_everywhere(admin_client: Client) -> None:
    outcome = MessageOutcome(
        sender=HOSTILE,
        recipients=[RecipientOutcome(HOSTILE, Reply(550, (HOSTILE,)))],
        mail_reply=Reply(250, ("2.1.0 Ok",)),
        final_reply=Reply(250, (f"Ok: queued as {HOSTILE}",)),
        error=HOSTILE,
    )
    outcome.settle()
    session = recorded(
        host=HOSTILE,
        error=HOSTILE,
        lines=[Line(0.0, d, HOSTILE) for d in "CSD*"],
        messages=[MessageRecord(outcome, message_id=HOSTILE, subject=HOSTILE, headers=HOSTILE)],
        tls=None,
    )
    message = session.messages.get()

    for url in (SESSIONS, MESSAGES, session_url(session), message_url(message)):
        content = admin_client.get(url).content.decode()
        assert "<script>alert" not in content, url
        assert html.escape(HOSTILE) in content or HOSTILE.replace('"', "&quot;") in content, url

    rows = transcript_rows(admin_client.get(session_url(session)).content.decode())
    assert [text for _, _, _, text in rows] == [HOSTILE] * 4


@pytest.mark.django_db(transaction=True)
def test_a_user_logs_in_and_reads_a_real_session(client: Client, smtpd: SMTPServer) -> None:
    """End to end: mail through the backend to aiosmtpd, then the admin, as a person."""
    backend = backend_for(smtpd)
    EmailMessage(
        "Read me", "body", "from@example.org", ["to@example.org"], connection=backend
    ).send()
    User.objects.create_superuser("auditor", "auditor@example.org", "s3cret-pass")

    login = client.post(
        reverse("admin:login"),
        {"username": "auditor", "password": "s3cret-pass", "next": reverse("admin:index")},
    )
    assert login.status_code == 302 and login["Location"] == reverse("admin:index")

    listing = client.get(reverse("admin:django_sockmail_session_changelist"))
    assert listing.status_code == 200
    session = Session.objects.get()
    page = client.get(reverse("admin:django_sockmail_session_change", args=[session.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    for said in ("220 ", "EHLO", "MAIL FROM:&lt;from@example.org&gt;", "RCPT TO:", "354", "QUIT"):
        assert said in html, said
    assert "Read me" in html and "queued as Q1" in html
