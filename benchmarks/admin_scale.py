"""The admin at scale: fill PostgreSQL with N sessions and time the admin pages.

    .venv/bin/python benchmarks/admin_scale.py [--sessions 1000000] [--reuse]

Creates (drops and re-creates) the database ``sockmail_bench`` on the PostgreSQL of
the test settings (127.0.0.1:5432, user postgres; override with --host, --port, --user,
--database), migrates it, and fills it with SQL alone: every session has one message
with one or two recipients and a transcript of 13 lines (one chunk, as the recorder
stores it: a JSON array of [offset_us, direction, text]); senders, recipients, subjects,
Message-IDs, queue ids, statuses and TLS modes vary, and the start times spread over
the last year. Then, logged in as a superuser through Django's test client, it requests
each admin page a few times and prints the median time and the number of queries.

For comparison, the last column times the SQL that the admin ran before it was made
for big tables: the full COUNT(*) and the date hierarchy's list of years on every
session list, the full count of the message list, and the old search (``icontains``
over the joined tables, made DISTINCT). "of it SQL" is the database's share of the
median; the rest is Django rendering the page, the same at any size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENDERS = 20  # distinct envelope senders (noreply@shopN.example)
CUSTOMERS = 400_000  # distinct recipient addresses
DOMAINS = (
    "example.com",
    "example.net",
    "example.org",
    "mail.example",
    "inbox.example",
    "post.example",
    "customers.example",
    "corp.example",
)
SUBJECTS = (
    "Your order #",
    "Invoice ",
    "Password reset for account ",
    "Welcome aboard, customer ",
    "Weekly digest ",
    "Your shipment is on its way: ",
    "Payment received ",
    "Reminder: appointment ",
)

# One session per i in 1..N; its message has the same id. Every value derives from i,
# so a run is reproducible and the script can name existing rows to search for.
SESSION_SQL = """
INSERT INTO django_sockmail_session (
    id, host, port, security, peer_address, local_address, started_at, ended_at,
    tls_version, tls_cipher, tls_peer_subject, tls_peer_issuer, tls_peer_not_before,
    tls_peer_not_after, tls_peer_fingerprint, status, error, message_count, sent_count,
    line_count)
SELECT i, host,
    CASE security WHEN 'ssl' THEN 465 WHEN 'starttls' THEN 587 ELSE 25 END,
    security, '192.0.2.' || (1 + i % 3) || ':587', '198.51.100.7:' || (32768 + i % 28000),
    started_at, started_at + (40 + i % 900) * interval '1 millisecond',
    CASE WHEN security = 'none' THEN '' ELSE 'TLSv1.3' END,
    CASE WHEN security = 'none' THEN '' ELSE 'TLS_AES_256_GCM_SHA384' END,
    CASE WHEN security = 'none' THEN '' ELSE 'CN=' || host END,
    CASE WHEN security = 'none' THEN '' ELSE 'CN=Example Issuing CA 2,O=Example Trust' END,
    CASE WHEN security = 'none' THEN '' ELSE 'Jan  1 00:00:00 2025 GMT' END,
    CASE WHEN security = 'none' THEN '' ELSE 'Jan  1 00:00:00 2027 GMT' END,
    CASE WHEN security = 'none' THEN '' ELSE md5(host) || md5(host || 'x') END,
    CASE WHEN failed THEN 'failed' ELSE 'ok' END,
    CASE WHEN failed THEN 'SMTPDataError: 451 4.3.0 Try again later' ELSE '' END,
    1, CASE WHEN failed THEN 0 ELSE 1 END, :line_count
FROM (
    SELECT i,
        (ARRAY['smtp.relay.example.com', 'mail.example.net', 'mx1.mailer.example.org'])[1 + i % 3]
            AS host,
        CASE WHEN i % 10 < 7 THEN 'starttls' WHEN i % 10 < 9 THEN 'ssl' ELSE 'none' END
            AS security,
        i % 37 = 0 AS failed,
        now() - interval '365 days' + i * (interval '365 days' / :n)
            + (i % 997) * interval '1 millisecond' AS started_at
    FROM generate_series(1, :n) AS i
) AS s
"""

# Address expressions shared by the message, recipient and transcript fills.
_DOMAINS = f"(ARRAY{list(DOMAINS)})"
SENDER = f"'noreply@shop' || (i % {SENDERS}) || '.example'"
FIRST_RECIPIENT = (
    f"'customer' || ((i::bigint * 7919) % {CUSTOMERS}) || '@' || {_DOMAINS}[1 + i % {len(DOMAINS)}]"
)
SECOND_RECIPIENT = (
    f"'customer' || ((i::bigint * 104729) % {CUSTOMERS}) || '@' "
    f"|| {_DOMAINS}[1 + (i / 3) % {len(DOMAINS)}]"
)
MESSAGE_ID = f"'<' || md5(i::text) || '@shop' || (i % {SENDERS}) || '.example>'"
QUEUE_ID = "upper(substr(md5('q' || i), 1, 11))"
SUBJECT = f"(ARRAY{list(SUBJECTS)})[1 + i % {len(SUBJECTS)}] || i"
# i % 3 = 0: two recipients; i % 6 = 0: the second one refused (partly sent).
MESSAGE_STATUS = "CASE WHEN i % 37 = 0 THEN 'failed' WHEN i % 6 = 0 THEN 'partial' ELSE 'sent' END"

MESSAGE_SQL = f"""
INSERT INTO django_sockmail_message (
    id, session_id, position, envelope_from, message_id, subject, size, sha256,
    content_mode, content_stored, headers, status, queue_id, error, recipient_count,
    reply_code, reply_text, enhanced_status)
SELECT i, i, 1, {SENDER}, {MESSAGE_ID}, {SUBJECT}, 2000 + i % 50000,
    md5(i::text) || md5('s' || i), 'headers', 180,
    'From: ' || {SENDER} || E'\\nTo: ' || {FIRST_RECIPIENT} || E'\\nSubject: ' || {SUBJECT}
        || E'\\nMessage-ID: ' || {MESSAGE_ID},
    {MESSAGE_STATUS},
    CASE WHEN i % 37 = 0 THEN '' ELSE {QUEUE_ID} END,
    CASE WHEN i % 37 = 0 THEN 'SMTPDataError: 451 4.3.0 Try again later' ELSE '' END,
    CASE WHEN i % 3 = 0 THEN 2 ELSE 1 END,
    CASE WHEN i % 37 = 0 THEN 451 ELSE 250 END,
    CASE WHEN i % 37 = 0 THEN 'Try again later' ELSE 'Ok: queued as ' || {QUEUE_ID} END,
    CASE WHEN i % 37 = 0 THEN '4.3.0' ELSE '2.0.0' END
FROM generate_series(1, :n) AS i
"""

RECIPIENT_SQL = f"""
INSERT INTO django_sockmail_recipient (
    message_id, address, accepted, reply_code, reply_text, enhanced_status)
SELECT i, address, refused IS NOT TRUE,
    CASE WHEN refused THEN 550 ELSE 250 END,
    CASE WHEN refused THEN '<' || address || '>: Recipient address rejected: User unknown'
        ELSE 'Ok' END,
    CASE WHEN refused THEN '5.1.1' ELSE '2.1.5' END
FROM (
    SELECT i, {FIRST_RECIPIENT} AS address, false AS refused
    FROM generate_series(1, :n) AS i
    UNION ALL
    SELECT i, {SECOND_RECIPIENT}, i % 6 = 0
    FROM generate_series(3, :n, 3) AS i
) AS r
"""

# (seq, direction, text) of each session's conversation.
LINES: tuple[tuple[int, str, str], ...] = (
    (1, "S", "'220 ' || host || ' ESMTP Postfix'"),
    (2, "C", "'EHLO app.example.com'"),
    (3, "S", "'250 ' || host"),
    (4, "C", f"'MAIL FROM:<' || {SENDER} || '> SIZE=' || (2000 + i % 50000)"),
    (5, "S", "'250 2.1.0 Ok'"),
    (6, "C", f"'RCPT TO:<' || {FIRST_RECIPIENT} || '>'"),
    (7, "S", "'250 2.1.5 Ok'"),
    (8, "C", "'DATA'"),
    (9, "S", "'354 End data with <CR><LF>.<CR><LF>'"),
    (10, "D", f"'From: ' || {SENDER} || E'\\nSubject: ' || {SUBJECT} || E'\\n\\n[content]'"),
    (11, "S", f"'250 2.0.0 Ok: queued as ' || {QUEUE_ID}"),
    (12, "C", "'QUIT'"),
    (13, "S", "'221 2.0.0 Bye'"),
)

# Each session's transcript: one chunk (13 lines are far fewer than LINES_PER_CHUNK).
CHUNK_SQL = """
INSERT INTO django_sockmail_transcriptchunk (session_id, first_seq, line_count, lines)
SELECT i, 1, {count}, c.lines
FROM (
    SELECT i, (ARRAY['smtp.relay.example.com', 'mail.example.net',
                     'mx1.mailer.example.org'])[1 + i % 3] AS host
    FROM generate_series(:first, :last) AS i
) AS s
CROSS JOIN LATERAL (
    SELECT jsonb_agg(
        jsonb_build_array(seq * 3250 + i % 11 * 1000, direction, CASE seq {cases} END)
        ORDER BY seq
    )::text AS lines
    FROM (VALUES {values}) AS v(seq, direction)
) AS c
""".format(
    count=len(LINES),
    cases=" ".join(f"WHEN {seq} THEN {text}" for seq, _, text in LINES),
    values=", ".join(f"({seq}, '{direction}')" for seq, direction, _ in LINES),
)

TABLES = (
    "django_sockmail_session",
    "django_sockmail_message",
    "django_sockmail_recipient",
    "django_sockmail_transcriptchunk",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="requests per page (median)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="5432")
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--database", default="sockmail_bench")
    parser.add_argument(
        "--reuse", action="store_true", help="keep a database filled by an earlier run"
    )
    return parser.parse_args()


def configure(args: argparse.Namespace) -> None:
    from django.conf import settings

    from tests import settings as test_settings

    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": args.database,
        "USER": args.user,
        "HOST": args.host,
        "PORT": args.port,
    }
    settings.configure(
        **{
            name: getattr(test_settings, name)
            for name in dir(test_settings)
            if name.isupper() and not name.startswith("_") and name != "DATABASES"
        },
        DATABASES={"default": database},
        ALLOWED_HOSTS=["testserver"],
    )
    import django

    django.setup()


def create_database(args: argparse.Namespace) -> None:
    import psycopg

    with psycopg.connect(
        host=args.host, port=args.port, user=args.user, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')


def fill(n: int) -> None:
    """Fill the tables with SQL. Foreign keys are not checked row by row (replica
    role) and the secondary indexes are built once at the end, not row by row."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute("SET work_mem = '256MB'")
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE tablename = ANY(%s) AND indexname NOT LIKE %s",
            [list(TABLES), "%pkey"],
        )
        indexes = cursor.fetchall()
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE contype = 'u' AND conrelid::regclass::text = ANY(%s)",
            [list(TABLES)],
        )
        uniques = cursor.fetchall()
        for table, name, _ in uniques:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        unique_names = {name for _, name, _ in uniques}
        for name, _ in indexes:
            if name not in unique_names:
                cursor.execute(f'DROP INDEX "{name}"')

        def step(label: str, *statements: str) -> None:
            started = time.perf_counter()
            for sql in statements:
                cursor.execute(sql)  # no parameters: % is SQL's modulo here
            print(f"  {label:<28} {time.perf_counter() - started:7.1f} s", flush=True)

        step(
            "sessions",
            SESSION_SQL.replace(":line_count", str(len(LINES))).replace(":n", str(n)),
        )
        step("messages", MESSAGE_SQL.replace(":n", str(n)))
        step("recipients", RECIPIENT_SQL.replace(":n", str(n)))
        chunk = 250_000
        step(
            "transcript chunks",
            *(
                CHUNK_SQL.replace(":first", str(first)).replace(":last", str(last))
                for first in range(1, n + 1, chunk)
                for last in [min(first + chunk - 1, n)]
            ),
        )

        started = time.perf_counter()
        for table, name, definition in uniques:
            cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for name, definition in indexes:
            if name not in unique_names:
                cursor.execute(definition)
        print(f"  {'indexes':<28} {time.perf_counter() - started:7.1f} s", flush=True)
        for table in TABLES:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {table}))"
            )
        cursor.execute("SET session_replication_role = DEFAULT")
        started = time.perf_counter()
        cursor.execute("VACUUM ANALYZE")
        print(f"  {'VACUUM ANALYZE':<28} {time.perf_counter() - started:7.1f} s", flush=True)


def sizes() -> list[tuple[str, int, str]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reltuples::bigint, "
            "pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class "
            "WHERE relname = ANY(%s) ORDER BY relname",
            [list(TABLES)],
        )
        return [(name, rows, size) for name, rows, size in cursor.fetchall()]


def median_ms(action: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Median wall time of ``runs`` calls after one warm-up call, and the last result."""
    result = action()
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        result = action()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), result


def main() -> None:
    args = parse_args()
    configure(args)
    from django.core.management import call_command

    if not args.reuse:
        print(f"Filling {args.database} with {args.sessions:,} sessions", flush=True)
        started = time.perf_counter()
        create_database(args)
        call_command("migrate", verbosity=0)
        fill(args.sessions)
        print(f"  {'total':<28} {time.perf_counter() - started:7.1f} s\n", flush=True)
    for name, rows, size in sizes():
        print(f"  {name:<32} {rows:>12,} rows {size:>10}")
    print()
    measure(args)


def measure(args: argparse.Namespace) -> None:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse
    from django.utils import timezone

    n = args.sessions
    user, _ = User.objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)

    sessions = reverse("admin:django_sockmail_session_changelist")
    messages = reverse("admin:django_sockmail_message_changelist")
    far = min(50, -(-n // 100))  # a page well into the list (100 to a page), if any
    # A session from the middle of the year, and what to search for to find it.
    i = 3 * (n // 6) or 3
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT m.message_id, m.queue_id, m.subject, r.address, m.envelope_from "
            "FROM django_sockmail_message m JOIN django_sockmail_recipient r "
            "ON r.message_id = m.id WHERE m.id = %s ORDER BY r.id DESC LIMIT 1",
            [i],
        )
        message_id, queue_id, subject, recipient, sender = cursor.fetchone()
    # As the "Past 7 days" link of the date filter has it.
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    week = {
        "started_at__gte": str(today - timedelta(days=7)),
        "started_at__lt": str(today + timedelta(days=1)),
    }
    cases: list[tuple[str, str, dict[str, str], str | None]] = [
        ("session list", sessions, {}, STOCK_SESSION_LIST),
        (f"session list, page {far}", sessions, {"p": str(far)}, None),
        ("status = failed", sessions, {"status__exact": "failed"}, None),
        ("past 7 days", sessions, week, None),
        ("search: recipient address", sessions, {"q": recipient.upper()}, old_search(recipient)),
        ("search: sender (5% of rows)", sessions, {"q": sender}, None),
        ("search: Message-ID", sessions, {"q": message_id.strip("<>")}, None),
        ("search: queue id", sessions, {"q": queue_id}, None),
        ("search: subject prefix", sessions, {"q": subject[:-2].lower()}, None),
        ("search: broad prefix (1/8)", sessions, {"q": "invoice"}, None),
        ("message list", messages, {}, "SELECT COUNT(*) FROM django_sockmail_message;"),
        ("message list, partly sent", messages, {"status__exact": "partial"}, None),
        (
            "message list, past 7 days",
            messages,
            {f"session__{k}": v for k, v in week.items()},
            None,
        ),
        ("message search: address", messages, {"q": recipient}, None),
        (
            "session page",
            reverse("admin:django_sockmail_session_change", args=[i]),
            {},
            None,
        ),
        (
            "transcript download",
            reverse("admin:django_sockmail_session_transcript", args=[i]),
            {},
            None,
        ),
    ]

    print(
        f"{'page':<30} {'median':>9} {'of it SQL':>10} {'queries':>8}  {'rows':<20}"
        f" {'stock admin query':>18}"
    )
    for label, url, params, stock_sql in cases:

        def get(label: str = label, url: str = url, params: dict[str, str] = params) -> Any:
            with CaptureQueriesContext(connection) as queries:
                response = client.get(url, params)
                if response.streaming:
                    b"".join(response.streaming_content)  # type: ignore[attr-defined]
            assert response.status_code == 200, (label, response.status_code)
            sql_ms = sum(float(q["time"]) for q in queries.captured_queries) * 1000
            return response, len(queries.captured_queries), sql_ms

        ms, (_, query_count, sql_ms) = median_ms(get, args.runs)
        rows = listed(url, params, user)
        stock = ""
        if stock_sql:
            stock_ms, _ = median_ms(partial(run_sql, stock_sql), 1)
            stock = f"{stock_ms:,.0f} ms"
        print(
            f"{label:<30} {ms:>6,.0f} ms {sql_ms:>7,.0f} ms {query_count:>8}  {rows:<20}"
            f" {stock:>18}",
            flush=True,
        )


def listed(url: str, params: dict[str, str], user: Any) -> str:
    """How many rows a changelist counted and showed (asked of the admin directly: the
    test client would record responses' contexts only at a cost to the timings)."""
    from django.contrib import admin
    from django.test import RequestFactory
    from django.urls import resolve

    match = resolve(url)
    if not (match.url_name or "").endswith("_changelist"):
        return ""
    request = RequestFactory().get(url, params)
    request.user = user
    model_admin = match.func.model_admin  # type: ignore[attr-defined]
    assert isinstance(model_admin, admin.ModelAdmin)
    cl = model_admin.get_changelist_instance(request)
    count = f"> {cl.result_count:,}" if cl.count_capped else f"{cl.result_count:,}"  # type: ignore[attr-defined]
    return f"{count} ({len(cl.result_list)} shown)"


# The stock admin's session list: the full count and the date hierarchy's years.
STOCK_SESSION_LIST = (
    "SELECT COUNT(*) FROM django_sockmail_session; "
    "SELECT DISTINCT date_trunc('year', started_at AT TIME ZONE 'UTC') "
    "FROM django_sockmail_session ORDER BY 1"
)


def old_search(term: str) -> str:
    """The session search of the stock admin with the former search_fields."""
    like = term.replace("'", "''")
    return (
        "SELECT DISTINCT s.id, s.started_at FROM django_sockmail_session s "
        "LEFT JOIN django_sockmail_message m ON m.session_id = s.id "
        "LEFT JOIN django_sockmail_recipient r ON r.message_id = m.id "
        f"WHERE UPPER(s.host) = UPPER('{like}') OR UPPER(m.envelope_from) LIKE UPPER('%{like}%') "
        f"OR UPPER(r.address) LIKE UPPER('%{like}%') OR UPPER(m.message_id) LIKE UPPER('%{like}%') "
        f"OR UPPER(m.subject) LIKE UPPER('%{like}%') "
        "ORDER BY s.started_at DESC, s.id DESC LIMIT 100"
    )


def run_sql(sql: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for statement in filter(None, (s.strip() for s in sql.split(";"))):
            cursor.execute(statement)
            cursor.fetchall()


if __name__ == "__main__":
    main()
