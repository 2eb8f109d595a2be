"""Writes a finished :class:`~django_sockmail.transcript.Transcript` to the audit log.

The write is one transaction with a fixed number of queries however long the session
was (``bulk_create`` per table). It never raises: mail that was sent stays sent even
when the audit log cannot be written, so a failure is logged and ``None`` returned.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TypedDict, TypeVar, overload

from django.conf import settings
from django.db import connections, models, router, transaction
from django.utils import timezone

from . import signals
from .conf import conf
from .models import Message, Recipient, Session, TranscriptLine
from .smtp import results
from .smtp.replies import Reply
from .transcript import MessageRecord, Transcript

logger = logging.getLogger("django_sockmail")

_M = TypeVar("_M", bound=models.Model)


class _ReplyFields(TypedDict):
    reply_code: int | None
    reply_text: str
    enhanced_status: str


def record(transcript: Transcript) -> Session | None:
    """Save ``transcript`` with its messages, recipients and lines.

    Returns the new :class:`Session`, or ``None`` (after logging the exception on the
    ``django_sockmail`` logger) when the database write failed.
    """
    # With SOCKMAIL["DATABASE"] naming an alias of its own, this is a connection of its
    # own: the record survives a rollback of the caller's transaction.
    using = conf.DATABASE or router.db_for_write(Session)
    try:
        with transaction.atomic(using=using):
            session = _write(transcript, using)
    except Exception:
        logger.exception(
            "Could not record the SMTP session with %s port %s", transcript.host, transcript.port
        )
        return None
    signals.send(signals.session_recorded, Session, session=session, transcript=transcript)
    return session


def _write(transcript: Transcript, using: str) -> Session:
    tls = transcript.tls
    outcomes = [rec.outcome for rec in transcript.messages]
    session = Session(
        host=transcript.host,
        port=transcript.port,
        security=transcript.security,
        peer_address=transcript.peer_address,
        local_address=transcript.local_address,
        started_at=_db_datetime(transcript.started_at),
        ended_at=_db_datetime(transcript.ended_at),
        tls_version=tls.version if tls else "",
        tls_cipher=tls.cipher if tls else "",
        tls_peer_subject=tls.peer_subject if tls else "",
        tls_peer_issuer=tls.peer_issuer if tls else "",
        tls_peer_not_before=tls.peer_not_before if tls else "",
        tls_peer_not_after=tls.peer_not_after if tls else "",
        tls_peer_fingerprint=tls.peer_fingerprint_sha256 if tls else "",
        status=transcript.status,
        error=transcript.error,
        message_count=len(outcomes),
        sent_count=sum(o.status in (results.SENT, results.PARTIAL) for o in outcomes),
    )
    _clean(session)
    session.save(force_insert=True, using=using)

    messages = [
        _message(session, position, rec)
        for position, rec in enumerate(transcript.messages, start=1)
    ]
    Message.objects.using(using).bulk_create(messages)
    if messages and messages[0].pk is None:
        # Backends that cannot return ids from a bulk insert (MySQL): one more query.
        ids = (
            Message.objects.using(using)
            .filter(session=session)
            .order_by("position")
            .values_list("pk", flat=True)
        )
        for message, pk in zip(messages, ids, strict=True):
            message.pk = pk

    Recipient.objects.using(using).bulk_create(
        _clean(
            Recipient(
                message=message,
                address=recipient.address,
                accepted=recipient.accepted,
                **_reply_fields(recipient.reply),
            )
        )
        for message, rec in zip(messages, transcript.messages, strict=True)
        for recipient in rec.outcome.recipients
    )
    _insert_lines(session, transcript, using)
    return session


def _insert_lines(session: Session, transcript: Transcript, using: str) -> None:
    """All of the session's lines in one ``executemany``: the transcript is most of
    what is written, and building a model instance per line cost more than sending
    the mail (the text is cleaned as :func:`_clean` would, for TextFields)."""
    if not transcript.lines:
        return
    connection = connections[using]
    quote = connection.ops.quote_name
    meta = TranscriptLine._meta
    columns = [_column(meta.get_field(name)) for name in _LINE_FIELDS]
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    rows = [  # in the order of _LINE_FIELDS
        (session.pk, seq, round(line.offset * 1000, 3), line.direction, _storable(line.text))
        for seq, line in enumerate(transcript.lines, start=1)
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


_LINE_FIELDS = ("session", "seq", "offset_ms", "direction", "text")


def _column(field: object) -> str:
    assert isinstance(field, models.Field)
    return str(field.column)


def _storable(text: str) -> str:
    return text.replace("\x00", "\ufffd")  # PostgreSQL refuses NUL in text


def _message(session: Session, position: int, rec: MessageRecord) -> Message:
    outcome = rec.outcome
    # The reply that decided the transaction: the end of data, or the refusal of DATA,
    # or of MAIL. A MAIL accepted and never followed up decided nothing.
    refused_data = (
        outcome.data_reply if outcome.data_reply and outcome.data_reply.code != 354 else None
    )
    reply = outcome.final_reply or refused_data
    if reply is None and outcome.mail_reply is not None and not outcome.mail_reply.is_positive:
        reply = outcome.mail_reply
    return _clean(
        Message(
            session=session,
            position=position,
            envelope_from=outcome.sender,
            message_id=rec.message_id,
            subject=rec.subject,
            size=outcome.size,
            sha256=outcome.sha256,
            content_mode=rec.content_mode,
            content_stored=rec.content_stored,
            headers=rec.headers,
            status=outcome.status,
            queue_id=outcome.queue_id,
            error=outcome.error,
            recipient_count=len(outcome.recipients),
            **_reply_fields(reply),
        )
    )


def _reply_fields(reply: Reply | None) -> _ReplyFields:
    if reply is None:
        return {"reply_code": None, "reply_text": "", "enhanced_status": ""}
    return {
        "reply_code": reply.code,
        "reply_text": reply.text,
        "enhanced_status": reply.enhanced_status or "",
    }


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
