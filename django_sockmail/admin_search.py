"""The audit log's search: an address, a Message-ID, a queue id or the beginning of a
subject, each an index lookup (see :data:`SEARCH_HELP_TEXT`), for tables of millions
of rows. The session and message lists search through :func:`sessions_matching` and
:func:`messages_matching`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connections, models, router
from django.db.models import F, Func, Q, QuerySet, Value
from django.db.models.lookups import Exact, IStartsWith

from .models import SUBJECT_KEY_LENGTH, Message, Recipient, Session, subject_key

__all__ = ["SEARCH_HELP_TEXT", "messages_matching", "sessions_matching"]

SEARCH_HELP_TEXT = (
    "An address (envelope sender or recipient, any case) or a Message-ID (with or "
    "without <>), exactly; a queue id, exactly; or the beginning of the subject, in any "
    "case. Each is an index lookup, so there is no search for a word inside a text."
)


def sessions_matching(sessions: QuerySet[Any], term: str, id_limit: int) -> QuerySet[Session]:
    """``sessions`` with a message that matches ``term`` (see :func:`_search`; all of
    them for an empty term): ``id IN (SELECT session_id FROM message WHERE ...)``, a
    semi-join that the database may drive from the matching messages (few) or from the
    sessions in list order (many), and that makes nothing DISTINCT. (``EXISTS(messages)
    OR EXISTS(recipients)`` could only test the sessions one by one, all of them when
    the term is rare.)"""
    term = term.strip()
    if not term:
        return sessions
    search = _search(term, id_limit)
    session_ids = Message.objects.filter(search.messages).order_by().values("session_id")
    if search.recipients is not None:
        session_ids = session_ids.union(search.recipients.values("message__session_id"), all=True)
    return sessions.filter(pk__in=session_ids)


def messages_matching(messages: QuerySet[Any], term: str, id_limit: int) -> QuerySet[Message]:
    """``messages`` that match ``term`` (see :func:`_search`; all of them for an empty
    term): a condition on the message table, no join, nothing DISTINCT."""
    term = term.strip()
    if not term:
        return messages
    search = _search(term, id_limit)
    if search.recipients is None:
        return messages.filter(search.messages)
    message_ids = (
        Message.objects.filter(search.messages)
        .order_by()
        .values("pk")
        .union(search.recipients.values("message_id"), all=True)
    )
    return messages.filter(pk__in=message_ids)


@dataclass(frozen=True)
class _Search:
    """What a search term matches: ``messages``, a condition on the message table alone,
    and, rarely, ``recipients`` too many to list in it (see :func:`_search`)."""

    messages: Q
    recipients: QuerySet[Recipient] | None = None


def _search(term: str, id_limit: int) -> _Search:
    """The messages that a search term matches (see :data:`SEARCH_HELP_TEXT`).

    Each alternative is an index lookup (see the indexes of
    :class:`~django_sockmail.models.Message` and :class:`~django_sockmail.models.Recipient`),
    and all of them are conditions on the message table, so their OR is one (a bitmap
    OR on PostgreSQL). That leaves the database free to choose: find the few matches
    first, or, when a term matches many messages (a sender of every twentieth), walk the
    list in its order and stop after a page. An address is looked up among the
    recipients beforehand (one query) and the ids of their messages go into the
    condition; an address with more than ``id_limit`` messages is left as a subquery,
    for the callers to unite with the rest (``UNION ALL``: still index lookups, and
    nothing made DISTINCT).
    """
    bare = _unbracketed(term)
    ids = sorted({bare, f"<{bare}>"})
    match = _exactly(Q(message_id__in=ids), "message_id", *ids) | _exactly(
        Q(queue_id=term), "queue_id", term
    )
    # The subject index holds the subject's first SUBJECT_KEY_LENGTH characters; a
    # longer term is checked against the whole subject among the rows that it finds.
    subject = Q(IStartsWith(subject_key(), term[:SUBJECT_KEY_LENGTH]))
    if len(term) > SUBJECT_KEY_LENGTH:
        subject &= Q(subject__istartswith=term)
    match |= subject
    if "@" not in bare:
        return _Search(match)
    match |= Q(envelope_from__iexact=bare)
    recipients = Recipient.objects.filter(address__iexact=bare).order_by()
    message_ids = list(recipients.values_list("message_id", flat=True)[: id_limit + 1])
    if len(message_ids) > id_limit:
        return _Search(match, recipients)
    if message_ids:
        match |= Q(pk__in=message_ids)
    return _Search(match)


def _exactly(condition: Q, field: str, *values: str) -> Q:
    """``condition`` (an index lookup of ``field``), and on MySQL and MariaDB, whose
    default collations ignore case, a byte comparison among the rows it finds: queue
    ids and Message-IDs are case-sensitive (``abc123`` is not ``ABC123``)."""
    if connections[router.db_for_read(Message)].vendor != "mysql":
        return condition
    same = Q()
    for value in values:
        same |= Q(Exact(_Bytes(F(field)), _Bytes(Value(value))))
    return condition & same


class _Bytes(Func):
    """A string as bytes, on MySQL and MariaDB: compared byte for byte."""

    template = "CAST(%(expressions)s AS BINARY)"
    output_field = models.CharField()


def _unbracketed(term: str) -> str:
    return term[1:-1] if term.startswith("<") and term.endswith(">") else term
