"""Writes a finished :class:`~django_sockmail.transcript.Transcript` to the audit log.

The write is one transaction. The session is saved through the ORM; its messages,
recipients and transcript chunks (the lines, a thousand to a row, as JSON) go in as
plain rows, many to a query: at most ``ROWS_PER_QUERY`` rows (and ``TEXT_PER_QUERY`` characters
of unbounded text) each. So the number of queries grows by one per thousand rows of a
table, not with every line, and what the write holds at once does not grow with the
session.

Each database takes the rows the way that costs it least: SQLite an ``INSERT`` with
its own ``?`` placeholders on the sqlite3 connection, PostgreSQL with psycopg 3 a
``COPY``, any other a multi-row ``INSERT`` through Django's cursor. The first two go
past Django's cursor: they are logged as queries (``connection.queries``,
``assertNumQueries``) and raise Django's errors, but no ``execute_wrapper`` sees them.

It never raises: mail that was sent stays sent even when the audit log cannot be
written, so a failure is logged and ``None`` returned.
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from functools import cache
from operator import itemgetter
from typing import Any, TypeVar, overload

from django.conf import settings
from django.db import connections, models, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.utils import timezone

from . import signals
from .conf import conf
from .models import Message, Recipient, Session, TranscriptChunk
from .smtp import results
from .smtp.replies import Reply
from .smtp.results import MessageOutcome
from .transcript import MessageRecord, Transcript

logger = logging.getLogger("django_sockmail")

# At most this many rows, and about this many characters of text (a "full" content
# line can hold CONTENT_MAX_BYTES), go to the database in one query.
ROWS_PER_QUERY = 1000
TEXT_PER_QUERY = 1 << 20
# A session's transcript is stored this many lines to a row (TranscriptChunk).
LINES_PER_CHUNK = 1000

_M = TypeVar("_M", bound=models.Model)
_Row = tuple[Any, ...]


def record(transcript: Transcript) -> Session | None:
    """Save ``transcript`` with its messages, recipients and lines (what an earlier
    :func:`write_so_far` did not save already).

    Returns the :class:`Session`, or ``None`` (after logging the exception on the
    ``django_sockmail`` logger) when the database write failed.
    """
    session = _save(transcript, closed=True)
    if session is not None:
        signals.send(signals.session_recorded, Session, session=session, transcript=transcript)
    return session


def write_so_far(transcript: Transcript) -> bool:
    """Save what a session still open has said and done so far, and let the transcript
    forget it: a long session's memory stays flat, and its record is in the database
    as it goes (with no end time until it closes). False, logged, when the write
    failed: the transcript then keeps everything for the next write."""
    session = _save(transcript, closed=False)
    if session is None:
        return False
    transcript.forget_written(session.pk)
    return True


def _save(transcript: Transcript, *, closed: bool) -> Session | None:
    # With SOCKMAIL["DATABASE"] naming an alias of its own, this is a connection of its
    # own: the record survives a rollback of the caller's transaction.
    using = conf.DATABASE or router.db_for_write(Session)
    try:
        with transaction.atomic(using=using):
            return _write(transcript, using, closed)
    except Exception:
        logger.exception(
            "Could not record the SMTP session with %s port %s", transcript.host, transcript.port
        )
        return None


def _write(transcript: Transcript, using: str, closed: bool) -> Session:
    tls = transcript.tls
    outcomes = [rec.outcome for rec in transcript.messages]
    session = Session(
        pk=transcript.session_id,
        host=transcript.host,
        port=transcript.port,
        security=transcript.security,
        peer_address=transcript.peer_address,
        local_address=transcript.local_address,
        started_at=_db_datetime(transcript.started_at),
        ended_at=_db_datetime(transcript.ended_at) if closed else None,
        tls_version=tls.version if tls else "",
        tls_cipher=tls.cipher if tls else "",
        tls_peer_subject=tls.peer_subject if tls else "",
        tls_peer_issuer=tls.peer_issuer if tls else "",
        tls_peer_not_before=tls.peer_not_before if tls else "",
        tls_peer_not_after=tls.peer_not_after if tls else "",
        tls_peer_fingerprint=tls.peer_fingerprint_sha256 if tls else "",
        status=transcript.status,
        error=transcript.error,
        message_count=transcript.messages_written + len(outcomes),
        sent_count=transcript.sent_written + _sent(outcomes),
        line_count=transcript.lines_written + len(transcript.lines),
    )
    _clean(session)
    if transcript.session_id is None:
        session.save(force_insert=True, using=using)
    else:  # written in part before: the row now says how the session stands
        session.save(force_update=True, using=using)

    messages, recipients = _table(Message), _table(Recipient)
    with connections[using].cursor() as cursor:
        numbered = enumerate(transcript.messages, start=transcript.messages_written + 1)
        while chunk := list(itertools.islice(numbered, ROWS_PER_QUERY)):
            _insert(
                cursor,
                messages,
                (_message_row(session.pk, position, rec) for position, rec in chunk),
            )
            # The recipients' rows need their message's id: one query per chunk of
            # messages, which works on every database (and for COPY, which returns none).
            first, last = chunk[0][0], chunk[-1][0]
            ids = (
                Message.objects.using(using)
                .filter(session=session, position__gte=first, position__lte=last)
                .order_by("position")
                .values_list("pk", flat=True)
            )
            _insert(
                cursor,
                recipients,
                (
                    _recipient_row(message_id, recipient)
                    for message_id, (_, rec) in zip(ids, chunk, strict=True)
                    for recipient in rec.outcome.recipients
                ),
            )
        _insert_chunks(cursor, session.pk, transcript)
    return session


def _sent(outcomes: list[MessageOutcome]) -> int:
    return sum(o.taken for o in outcomes)


def _insert_chunks(cursor: CursorWrapper, session_id: int, transcript: Transcript) -> None:
    """The transcript's chunks, made as they go: what is held at once is one query's
    worth, however long the session."""
    table = _table(TranscriptChunk)
    rows = _chunk_rows(session_id, transcript)
    _write_by_text(cursor, table, rows, _rows_per_query(cursor.db, table), _chunk_text)


def _chunk_text(row: _Row) -> int:
    return len(row[3])  # the chunk's JSON


def _chunk_rows(session_id: int, transcript: Transcript) -> Iterator[_Row]:
    """``(session, first_seq, line_count, lines)`` of each chunk: LINES_PER_CHUNK lines,
    fewer where their text would pass TEXT_PER_QUERY (a chunk takes one line at least),
    as a JSON array of ``[offset_us, direction, text]``: the offset in whole
    microseconds; JSON escapes what a database would refuse (NUL). Made a column at
    a time, LINES_PER_CHUNK lines at a time: no Python code runs per line."""
    lines = transcript.lines
    first_seq = transcript.lines_written + 1
    for start in range(0, len(lines), LINES_PER_CHUNK):
        offsets, directions, texts = lines.columns(start, start + LINES_PER_CHUNK)
        offsets_us = [int(offset * 1e6 + 0.5) for offset in offsets]
        for a, b in _text_spans(texts):
            rows = list(zip(offsets_us[a:b], directions[a:b], texts[a:b], strict=True))
            yield session_id, first_seq + start + a, b - a, _json(rows)


def _text_spans(texts: list[str]) -> Iterator[tuple[int, int]]:
    """Cut ``texts`` into runs of at most TEXT_PER_QUERY characters (a run takes one
    text at least): one run, nearly always."""
    if sum(map(len, texts)) <= TEXT_PER_QUERY:
        yield 0, len(texts)
        return
    start, size = 0, 0
    for i, text in enumerate(texts):
        if i > start and size + len(text) > TEXT_PER_QUERY:
            yield start, i
            start, size = i, 0
        size += len(text)
    yield start, len(texts)


_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def _message_row(session_id: int, position: int, rec: MessageRecord) -> _Row:
    outcome = rec.outcome
    return _table(Message).clean(
        (
            session_id,
            position,
            outcome.sender,
            rec.message_id,
            rec.subject,
            outcome.size,
            outcome.sha256,
            rec.content_mode,
            rec.content_stored,
            rec.headers,
            outcome.status,
            outcome.queue_id,
            outcome.error,
            len(outcome.recipients),
            *_reply_values(_deciding_reply(outcome)),
        )
    )


def _recipient_row(message_id: int, recipient: results.RecipientOutcome) -> _Row:
    return _table(Recipient).clean(
        (message_id, recipient.address, recipient.accepted, *_reply_values(recipient.reply))
    )


# The fields of each table the recorder writes, in the order of the values of a row.
_FIELDS: dict[type[models.Model], tuple[str, ...]] = {
    Message: (
        "session",
        "position",
        "envelope_from",
        "message_id",
        "subject",
        "size",
        "sha256",
        "content_mode",
        "content_stored",
        "headers",
        "status",
        "queue_id",
        "error",
        "recipient_count",
        "reply_code",
        "reply_text",
        "enhanced_status",
    ),
    Recipient: ("message", "address", "accepted", "reply_code", "reply_text", "enhanced_status"),
    TranscriptChunk: ("session", "first_seq", "line_count", "lines"),
}


class _Table:
    """One table the recorder writes rows into: the columns of its ``_FIELDS``."""

    def __init__(self, model: type[models.Model]) -> None:
        fields = [_concrete_field(model, name) for name in _FIELDS[model]]
        self.name = model._meta.db_table
        self.columns = tuple(str(field.column) for field in fields)
        # (position in the row, max_length or None) of each text value.
        self.texts = tuple(
            (i, field.max_length)
            for i, field in enumerate(fields)
            if isinstance(field, (models.CharField, models.TextField))
        )
        # The text values without a max_length: what counts against TEXT_PER_QUERY.
        unbounded = [i for i, limit in self.texts if limit is None]
        self._unbounded = itemgetter(*unbounded) if unbounded else None
        self._unbounded_count = len(unbounded)

    def clean(self, row: _Row) -> _Row:
        """Make text from the wire storable on every backend, as :func:`_clean` does."""
        values = list(row)
        for i, limit in self.texts:
            values[i] = values[i].replace("\x00", "\ufffd")[:limit]  # as _clean()
        return tuple(values)

    def text_size(self, rows: list[_Row]) -> int:
        """The characters of text in ``rows`` that count against TEXT_PER_QUERY."""
        if self._unbounded is None:
            return 0
        values: Iterable[str] = map(self._unbounded, rows)
        if self._unbounded_count > 1:
            values = itertools.chain.from_iterable(values)
        return sum(map(len, values))


def _concrete_field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field


@cache
def _table(model: type[models.Model]) -> _Table:
    return _Table(model)


def _insert(cursor: CursorWrapper, table: _Table, rows: Iterable[_Row]) -> None:
    """Insert ``rows`` into ``table``, as many to a query as the bounds allow."""
    write = _writer(cursor.db)
    per_query = _rows_per_query(cursor.db, table)
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, per_query)):
        if table.text_size(chunk) <= TEXT_PER_QUERY:
            write(cursor, table, chunk)
        else:  # rarely: long texts, a few rows to a query
            _write_by_text(cursor, table, chunk, per_query, lambda row: table.text_size([row]))


def _write_by_text(
    cursor: CursorWrapper,
    table: _Table,
    rows: Iterable[_Row],
    per_query: int,
    text_of: Callable[[_Row], int],
) -> None:
    """``rows`` as they come, to queries of at most ``per_query`` rows and, unless a
    row alone is longer, TEXT_PER_QUERY characters of text (``text_of`` a row)."""
    write = _writer(cursor.db)
    part: list[_Row] = []
    size = 0
    for row in rows:
        weight = text_of(row)
        if part and (len(part) >= per_query or size + weight > TEXT_PER_QUERY):
            write(cursor, table, part)
            part, size = [], 0
        part.append(row)
        size += weight
    if part:
        write(cursor, table, part)


_Writer = Callable[[CursorWrapper, _Table, list[_Row]], None]


def _writer(connection: BaseDatabaseWrapper) -> _Writer:
    """How rows get to ``connection``'s database: what costs the least on each."""
    if connection.vendor == "sqlite":
        return _insert_sqlite
    if connection.vendor == "postgresql":
        from django.db.backends.postgresql.psycopg_any import is_psycopg3

        if is_psycopg3:
            return _copy
    return _insert_values


def _insert_values(cursor: CursorWrapper, table: _Table, rows: list[_Row]) -> None:
    cursor.execute(_insert_sql(cursor.db, table, len(rows)), _values(rows))


def _insert_sqlite(cursor: CursorWrapper, table: _Table, rows: list[_Row]) -> None:
    """The INSERT with SQLite's own placeholders, straight to the sqlite3 connection:
    Django's cursor would first rewrite every ``%s`` of it with a regular expression,
    a tenth of the whole write."""
    sql = _insert_sql(cursor.db, table, len(rows), placeholder="?")
    with _driver_call(cursor, sql):
        cursor.db.connection.execute(sql, _values(rows))


def _copy(cursor: CursorWrapper, table: _Table, rows: list[_Row]) -> None:
    """The rows by PostgreSQL's COPY, with psycopg 3, whose parsing of a long INSERT's
    placeholders (in Python) would cost more than the database's own work."""
    quote = cursor.db.ops.quote_name
    columns = ", ".join(quote(column) for column in table.columns)
    sql = f"COPY {quote(table.name)} ({columns}) FROM STDIN"
    with _driver_call(cursor, sql), cursor.cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)


@contextmanager
def _driver_call(cursor: CursorWrapper, sql: str) -> Iterator[None]:
    """Around a call to the database driver itself, what Django's cursor would do:
    the query is logged (``connection.queries``, ``assertNumQueries``) and errors are
    Django's. No ``execute_wrapper`` sees it."""
    logged: AbstractContextManager[object] = (
        cursor.debug_sql(sql) if isinstance(cursor, CursorDebugWrapper) else nullcontext()
    )
    cursor.db.validate_no_broken_transaction()
    with logged, cursor.db.wrap_database_errors:
        yield


def _insert_sql(
    connection: BaseDatabaseWrapper, table: _Table, count: int, placeholder: str = "%s"
) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(column) for column in table.columns)
    row = f"({', '.join([placeholder] * len(table.columns))})"
    return f"INSERT INTO {quote(table.name)} ({columns}) VALUES {', '.join([row] * count)}"


def _values(rows: list[_Row]) -> list[Any]:
    return list(itertools.chain.from_iterable(rows))


def _rows_per_query(connection: BaseDatabaseWrapper, table: _Table) -> int:
    """ROWS_PER_QUERY, or fewer where the database takes fewer parameters a query."""
    max_params = _max_query_params(connection)
    if max_params is None:
        return ROWS_PER_QUERY
    return max(1, min(ROWS_PER_QUERY, max_params // len(table.columns)))


def _max_query_params(connection: BaseDatabaseWrapper) -> int | None:
    limit: int | None = connection.features.max_query_params
    if connection.vendor == "sqlite":
        # Django 5.2 assumes SQLite's old default of 999 variables a query (a row of
        # lines has five); Django 6 reads the real limit (32766 since SQLite 3.32), as here.
        getlimit: Callable[[int], int] | None = getattr(connection.connection, "getlimit", None)
        if getlimit is not None:
            limit = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return limit


def _deciding_reply(outcome: MessageOutcome) -> Reply | None:
    """The reply that decided the transaction: the verdict on the content when it was
    taken, else the reply that stopped it (see ``MessageOutcome.failure_reply``). A
    MAIL accepted and never followed up decided nothing."""
    if outcome.final_reply is not None and outcome.final_reply.is_positive:
        return outcome.final_reply
    return outcome.failure_reply


def _reply_values(reply: Reply | None) -> tuple[int | None, str, str]:
    """``reply_code``, ``reply_text`` and ``enhanced_status`` (see ``ServerReply``)."""
    if reply is None:
        return None, "", ""
    return reply.code, reply.text, reply.enhanced_status or ""


@overload
def _db_datetime(value: datetime) -> datetime: ...
@overload
def _db_datetime(value: None) -> None: ...
def _db_datetime(value: datetime | None) -> datetime | None:
    # The transcript keeps aware UTC times; a project with USE_TZ = False stores naive ones.
    if value is None or settings.USE_TZ or timezone.is_naive(value):
        return value
    return timezone.make_naive(value)


def _clean(instance: _M) -> _M:
    """Make text from the wire storable on every backend.

    The server chooses much of what is saved here, so nothing may make the insert fail:
    PostgreSQL rejects NUL characters and enforces ``max_length``.
    """
    for field in instance._meta.concrete_fields:
        if not isinstance(field, (models.CharField, models.TextField)):
            continue
        value = getattr(instance, field.attname)
        if not isinstance(value, str):
            continue
        value = value.replace("\x00", "\ufffd")
        if field.max_length is not None and len(value) > field.max_length:
            value = value[: field.max_length]
        setattr(instance, field.attname, value)
    return instance
