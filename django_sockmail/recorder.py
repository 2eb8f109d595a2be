"""Writes a finished :class:`~django_sockmail.transcript.Transcript` to the audit log.

The write is one transaction. The session is saved through the ORM; its messages,
recipients and transcript chunks (the lines, a thousand to a row, as JSON) go in as
plain rows, many to a query, through :mod:`django_sockmail.bulk`. So the number of
queries grows by one per thousand rows of a table, not with every line, and what the
write holds at once does not grow with the session. Every row is made by field name.

It never raises: mail that was sent stays sent even when the audit log cannot be
written, so a failure is logged and ``None`` returned.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any, overload

from django.conf import settings
from django.db import connections, models, router, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import QuerySet
from django.utils import timezone

from . import bulk, signals
from .conf import conf
from .models import Message, Recipient, Session, TranscriptChunk
from .smtp import results
from .smtp.events import TLSInfo
from .smtp.replies import Reply
from .smtp.results import MessageOutcome
from .transcript import MessageRecord, Transcript

logger = logging.getLogger("django_sockmail")

# A session's transcript is stored this many lines to a row (TranscriptChunk).
LINES_PER_CHUNK = 1000


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
    session = _save_session(transcript, using, closed)
    with connections[using].cursor() as cursor:
        _insert_messages(cursor, session, transcript)
        _insert_chunks(cursor, session.pk, transcript)
    return session


def _save_session(transcript: Transcript, using: str, closed: bool) -> Session:
    session = Session(pk=transcript.session_id, **_session_fields(transcript, closed))
    if transcript.session_id is None:
        session.save(force_insert=True, using=using)
    else:  # written in part before: the row now says how the session stands
        session.save(force_update=True, using=using)
    return session


# What a session without TLS stores in the TLS fields.
_NO_TLS = TLSInfo(version="", cipher="")


def _session_fields(transcript: Transcript, closed: bool) -> dict[str, Any]:
    """The session's fields by name, their text made storable."""
    tls = transcript.tls or _NO_TLS
    outcomes = [rec.outcome for rec in transcript.messages]
    fields = {
        "host": transcript.host,
        "port": transcript.port,
        "security": transcript.security,
        "peer_address": transcript.peer_address,
        "local_address": transcript.local_address,
        "started_at": _db_datetime(transcript.started_at),
        "ended_at": _db_datetime(transcript.ended_at) if closed else None,
        "tls_version": tls.version,
        "tls_cipher": tls.cipher,
        "tls_peer_subject": tls.peer_subject,
        "tls_peer_issuer": tls.peer_issuer,
        "tls_peer_not_before": tls.peer_not_before,
        "tls_peer_not_after": tls.peer_not_after,
        "tls_peer_fingerprint": tls.peer_fingerprint_sha256,
        "status": transcript.status,
        "error": transcript.error,
        "message_count": transcript.messages_written + len(outcomes),
        "sent_count": transcript.sent_written + _sent(outcomes),
        "line_count": transcript.lines_written + len(transcript.lines),
    }
    return _storable(Session, fields)


def _storable(model: type[models.Model], fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` of ``model`` by name, their text made :func:`~.bulk.storable`."""
    texts = bulk.text_fields(model)
    return {
        name: bulk.storable([value], texts[name])[0]
        if name in texts and isinstance(value, str)
        else value
        for name, value in fields.items()
    }


def _sent(outcomes: list[MessageOutcome]) -> int:
    return sum(o.taken for o in outcomes)


def _insert_messages(cursor: CursorWrapper, session: Session, transcript: Transcript) -> None:
    """The messages not written yet, and their recipients, ROWS_PER_QUERY at a time."""
    numbered = enumerate(transcript.messages, start=transcript.messages_written + 1)
    while chunk := list(itertools.islice(numbered, bulk.ROWS_PER_QUERY)):
        messages = (_message_row(session.pk, position, rec) for position, rec in chunk)
        bulk.insert(cursor, bulk.table(Message), messages)
        ids = _message_ids(cursor.db.alias, session, first=chunk[0][0], last=chunk[-1][0])
        recipients = (
            _recipient_row(message_id, recipient)
            for message_id, (_, rec) in zip(ids, chunk, strict=True)
            for recipient in rec.outcome.recipients
        )
        bulk.insert(cursor, bulk.table(Recipient), recipients)


def _message_ids(using: str, session: Session, *, first: int, last: int) -> QuerySet[Message, int]:
    """The ids of ``session``'s messages ``first`` to ``last``, in order. The recipients'
    rows need them: one query per chunk of messages, which works on every database (and
    for COPY, which returns none)."""
    return (
        Message.objects.using(using)
        .filter(session=session, position__gte=first, position__lte=last)
        .order_by("position")
        .values_list("pk", flat=True)
    )


def _message_row(session_id: int, position: int, rec: MessageRecord) -> dict[str, Any]:
    """The row of a message, by field name."""
    outcome = rec.outcome
    row = {
        "session_id": session_id,
        "position": position,
        "envelope_from": outcome.sender,
        "message_id": rec.message_id,
        "subject": rec.subject,
        "size": outcome.size,
        "sha256": outcome.sha256,
        "content_mode": rec.content_mode,
        "content_stored": rec.content_stored,
        "headers": rec.headers,
        "status": outcome.status,
        "queue_id": outcome.queue_id,
        "error": outcome.error,
        "recipient_count": len(outcome.recipients),
    }
    return _with_reply_fields(row, _deciding_reply(outcome))


def _recipient_row(message_id: int, recipient: results.RecipientOutcome) -> dict[str, Any]:
    """The row of a recipient, by field name."""
    row = {"message_id": message_id, "address": recipient.address, "accepted": recipient.accepted}
    return _with_reply_fields(row, recipient.reply)


def _deciding_reply(outcome: MessageOutcome) -> Reply | None:
    """The reply that decided the transaction: the verdict on the content when it was
    taken, else the reply that stopped it (see ``MessageOutcome.failure_reply``). A
    MAIL accepted and never followed up decided nothing."""
    if outcome.final_reply is not None and outcome.final_reply.is_positive:
        return outcome.final_reply
    return outcome.failure_reply


def _with_reply_fields(row: dict[str, Any], reply: Reply | None) -> dict[str, Any]:
    """``row`` with the fields of a ``ServerReply`` (a message's or a recipient's) added:
    set one by one, not merged from a dict of their own, which would cost a dict a row."""
    row["reply_code"] = None if reply is None else reply.code
    row["reply_text"] = "" if reply is None else reply.text
    row["enhanced_status"] = "" if reply is None else reply.enhanced_status or ""
    return row


def _insert_chunks(cursor: CursorWrapper, session_id: int, transcript: Transcript) -> None:
    """The transcript's chunks, made as they go: what is held at once is one query's
    worth, however long the session."""
    bulk.insert_large(cursor, bulk.table(TranscriptChunk), _chunk_rows(session_id, transcript))


def _chunk_rows(session_id: int, transcript: Transcript) -> Iterator[dict[str, Any]]:
    """The rows of the chunks: LINES_PER_CHUNK lines each, fewer where their text would
    pass TEXT_PER_QUERY (a chunk takes one line at least), as a JSON array of
    ``[offset_us, direction, text]``: the offset in whole microseconds; JSON escapes
    what a database would refuse (NUL). Made a column at a time, LINES_PER_CHUNK lines
    at a time: no Python code runs per line."""
    lines = transcript.lines
    first_seq = transcript.lines_written + 1
    for start in range(0, len(lines), LINES_PER_CHUNK):
        offsets, directions, texts = lines.columns(start, start + LINES_PER_CHUNK)
        offsets_us = [int(offset * 1e6 + 0.5) for offset in offsets]
        for a, b in _text_spans(texts):
            rows = list(zip(offsets_us[a:b], directions[a:b], texts[a:b], strict=True))
            yield {
                "session_id": session_id,
                "first_seq": first_seq + start + a,
                "line_count": b - a,
                "lines": _json(rows),
            }


def _text_spans(texts: list[str]) -> Iterator[tuple[int, int]]:
    """Cut ``texts`` into runs of at most TEXT_PER_QUERY characters (a run takes one
    text at least): one run, nearly always."""
    limit = bulk.TEXT_PER_QUERY
    if sum(map(len, texts)) <= limit:
        yield 0, len(texts)
        return
    start, size = 0, 0
    for i, text in enumerate(texts):
        if i > start and size + len(text) > limit:
            yield start, i
            start, size = i, 0
        size += len(text)
    yield start, len(texts)


_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


@overload
def _db_datetime(value: datetime) -> datetime: ...
@overload
def _db_datetime(value: None) -> None: ...
def _db_datetime(value: datetime | None) -> datetime | None:
    # The transcript keeps aware UTC times; a project with USE_TZ = False stores naive ones.
    if value is None or settings.USE_TZ or timezone.is_naive(value):
        return value
    return timezone.make_naive(value)
