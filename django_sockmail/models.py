"""The audit log: one :class:`Session` per SMTP connection, the :class:`Message` objects
offered in it, each message's :class:`Recipient` verdicts, and the session's transcript:
:class:`TranscriptChunk` rows that hold its :class:`TranscriptLine` objects.
:mod:`django_sockmail.recorder` writes them; the admin shows them. Nothing here talks
to a mail server.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from django.core import checks
from django.db import models
from django.db.models import ExpressionList, Func
from django.db.models.functions import Left, Upper
from django.db.models.sql import Query
from django.utils import timezone

from .smtp.status import MessageStatus, SessionStatus
from .transcript import (
    CLIENT,
    CONTENT,
    CONTENT_ENVELOPE,
    CONTENT_FULL,
    CONTENT_HEADERS,
    INFO,
    SERVER,
)

# A transcript is read this many chunks (of up to a thousand lines each) to a query.
CHUNKS_PER_QUERY = 4

# Long enough for any real value, short enough to index on every supported database
# (MySQL's utf8mb4 index limit is 768 characters). The recorder clips longer values.
_ADDRESS_LENGTH = 320  # RFC 3696: 64 (local part) + 1 + 255 (domain)
_ID_LENGTH = 255

# The subject is searched by prefix on its first this many characters, which is what
# its index holds: a whole 998-character subject can exceed PostgreSQL's limit for an
# index entry (about 2.7 kB) and would make the recorder's insert fail.
SUBJECT_KEY_LENGTH = 100


class TextPatternIndex(models.Index):
    """An index on expressions that, on PostgreSQL, uses the ``text_pattern_ops``
    operator class: with it ``LIKE 'prefix%'`` is an index range scan under any database
    collation (the default operator class serves it only under the C collation). Other
    databases get a plain index on the same expressions.

    Django's ``OpClass`` would do on PostgreSQL alone: it needs ``django.contrib.postgres``
    installed, and renders the operator class, invalid elsewhere, on every database.
    """

    def create_sql(self, model: Any, schema_editor: Any, using: str = "", **kwargs: Any) -> Any:
        if schema_editor.connection.vendor != "postgresql":
            return super().create_sql(model, schema_editor, using=using, **kwargs)
        expressions = ExpressionList(
            *(
                Func(expression, template="(%(expressions)s) text_pattern_ops")
                for expression in self.expressions
            )
        ).resolve_expression(Query(model, alias_cols=False))
        return schema_editor._create_index_sql(
            model,
            name=self.name,
            using=using,
            db_tablespace=self.db_tablespace,
            expressions=expressions,
            **kwargs,
        )


def subject_key() -> Left:
    """The start of the subject that its search index holds (see ``Message.Meta``); a
    prefix search that filters on this same expression is an index lookup."""
    return Left("subject", SUBJECT_KEY_LENGTH)


class _ExpressionIndexes:
    """For models whose case-insensitive search indexes are on expressions.

    MariaDB cannot index expressions: Django skips those indexes there and warns
    (models.W043) at every start. The warning is left out for these models, where it is
    known and accepted: on MariaDB the case-insensitive collation lets the recipient
    search use the address's plain index, and the sender and subject searches read the
    table (documented in the README); PostgreSQL, SQLite and MySQL build the indexes.
    """

    @classmethod
    def check(cls, **kwargs: Any) -> list[checks.CheckMessage]:
        errors: list[checks.CheckMessage] = super().check(**kwargs)  # type: ignore[misc]
        return [error for error in errors if error.id != "models.W043"]


class Session(models.Model):
    """One connection to an SMTP server, from connect to close."""

    class Security(models.TextChoices):
        NONE = "none", "none"
        STARTTLS = "starttls", "STARTTLS"
        SSL = "ssl", "SSL/TLS"

    Status = SessionStatus  # the client's vocabulary: values and labels are spelled there

    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField()
    security = models.CharField(max_length=8, choices=Security.choices, default=Security.NONE)
    peer_address = models.CharField(max_length=255, blank=True)
    local_address = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    tls_version = models.CharField("TLS version", max_length=32, blank=True)
    tls_cipher = models.CharField("TLS cipher", max_length=128, blank=True)
    tls_peer_subject = models.TextField("certificate subject", blank=True)
    tls_peer_issuer = models.TextField("certificate issuer", blank=True)
    tls_peer_not_before = models.CharField("certificate valid from", max_length=64, blank=True)
    tls_peer_not_after = models.CharField("certificate valid until", max_length=64, blank=True)
    tls_peer_fingerprint = models.CharField(
        "certificate SHA-256 fingerprint", max_length=128, blank=True
    )
    status = models.CharField(max_length=8, choices=Status.choices)
    error = models.TextField(blank=True)
    # Denormalised so the changelist needs no joins.
    message_count = models.PositiveIntegerField("messages", default=0)
    sent_count = models.PositiveIntegerField(
        "sent", default=0, help_text="Messages the server accepted (sent or partly sent)."
    )
    line_count = models.PositiveIntegerField("transcript lines", default=0)

    class Meta:
        verbose_name = "SMTP session"
        ordering = ("-started_at", "-id")
        # The admin lists sessions newest first; each filter has an index that yields
        # its rows in that order (started_at alone: the field's own index).
        indexes = (
            models.Index(fields=("status", "-started_at"), name="sockmail_session_status_idx"),
            models.Index(fields=("security", "-started_at"), name="sockmail_session_security_idx"),
        )

    def __str__(self) -> str:
        started = self.started_at
        if timezone.is_aware(started):
            started = timezone.localtime(started)
        when = f"{started:%Y-%m-%d %H:%M:%S %Z}".rstrip()  # no zone name when naive
        return f"{self.endpoint} at {when} ({self.status})"

    @property
    def endpoint(self) -> str:
        """``host:port``, with an IPv6 literal in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def duration(self) -> timedelta | None:
        if self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def transcript_lines(self, *, after: int = 0, limit: int | None = None) -> list[TranscriptLine]:
        """The transcript's lines in order: those with a seq above ``after``, at most
        ``limit`` of them. Reads only the chunks that hold them."""
        return list(itertools.islice(self.iter_transcript_lines(after=after), limit))

    def iter_transcript_lines(self, *, after: int = 0) -> Iterator[TranscriptLine]:
        """Like :meth:`transcript_lines`, read a few chunks at a time."""
        for chunk in self.iter_transcript_chunks(after=after):
            for line in chunk.decoded():
                if line.seq > after:
                    yield line

    def iter_transcript_chunks(self, *, after: int = 0) -> Iterator[TranscriptChunk]:
        """The chunks that hold the lines after ``after``, in order, CHUNKS_PER_QUERY to
        a query: a transcript of any length is read in bounded memory on every
        database, also where the driver fetches a whole result at once (MySQL's)."""
        chunks = TranscriptChunk.objects.using(self._state.db).filter(session=self)
        start = 1
        if after:  # the chunk holding line ``after + 1`` starts at or before it
            holding = chunks.filter(first_seq__lte=after + 1).order_by("-first_seq")
            start = holding.values_list("first_seq", flat=True).first() or after + 1
        ordered = chunks.order_by("first_seq")
        while batch := list(ordered.filter(first_seq__gte=start)[:CHUNKS_PER_QUERY]):
            yield from batch
            if len(batch) < CHUNKS_PER_QUERY:
                return  # that was the last
            start = batch[-1].first_seq + 1


class ServerReply(models.Model):
    """A server reply kept on a row: its code (empty when there was none), text and
    RFC 3463 enhanced status code."""

    reply_code = models.PositiveSmallIntegerField(null=True, blank=True)
    reply_text = models.TextField(blank=True)
    enhanced_status = models.CharField(max_length=16, blank=True)

    class Meta:
        abstract = True

    @property
    def reply(self) -> str:
        """The reply as one line of text."""
        if self.reply_code is None:
            return ""
        return f"{self.reply_code} {self.reply_text}".rstrip()


class Message(_ExpressionIndexes, ServerReply):
    """One mail transaction (MAIL, RCPT…, content) within a session."""

    class ContentMode(models.TextChoices):
        FULL = CONTENT_FULL, "full message"
        HEADERS = CONTENT_HEADERS, "headers"
        ENVELOPE = CONTENT_ENVELOPE, "envelope only"

    Status = MessageStatus  # the client's vocabulary: values and labels are spelled there

    # No index of its own: the unique (session, position) index begins with it.
    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    position = models.PositiveIntegerField(help_text="1 for the first message in the session.")
    envelope_from = models.CharField(
        "envelope sender", max_length=_ADDRESS_LENGTH, blank=True, help_text="Empty for <>."
    )
    message_id = models.CharField("Message-ID", max_length=_ID_LENGTH, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    size = models.PositiveIntegerField(help_text="Bytes of content, as sent.", default=0)
    sha256 = models.CharField(
        "SHA-256",
        max_length=64,
        blank=True,
        help_text="Of the content as sent, whatever of it is stored.",
    )
    content_mode = models.CharField(
        "content stored",
        max_length=8,
        choices=ContentMode.choices,
        default=ContentMode.HEADERS,
    )
    content_stored = models.PositiveIntegerField(
        "bytes stored", default=0, help_text="How much of the content the transcript keeps."
    )
    headers = models.TextField(blank=True)
    status = models.CharField(max_length=8, choices=Status.choices)
    queue_id = models.CharField("queue id", max_length=_ID_LENGTH, blank=True)
    error = models.TextField(blank=True)
    recipient_count = models.PositiveIntegerField("recipients", default=0)

    class Meta:
        verbose_name = "message"
        ordering = ("session_id", "position")
        constraints = (
            models.UniqueConstraint(
                fields=("session", "position"), name="django_sockmail_message_position"
            ),
        )
        # What the admin filters and searches by; it lists messages newest (highest id)
        # first. Plain indexes rather than db_index=True: on PostgreSQL that adds a
        # second (pattern-ops) index to each, for LIKE searches nothing here makes.
        indexes = (
            models.Index(fields=("message_id",), name="sockmail_message_msgid_idx"),
            models.Index(fields=("queue_id",), name="sockmail_message_queue_id_idx"),
            models.Index(fields=("sha256",), name="sockmail_message_sha256_idx"),
            models.Index(fields=("status", "-id"), name="sockmail_message_status_idx"),
            models.Index(Upper("envelope_from"), name="sockmail_message_sender_idx"),
            TextPatternIndex(Upper(subject_key()), name="sockmail_message_subject_idx"),
        )

    def __str__(self) -> str:
        subject = self.subject or "(no subject)"
        return f"{subject} from <{self.envelope_from}> ({self.get_status_display()})"


class Recipient(_ExpressionIndexes, ServerReply):
    """One envelope recipient of a message and the server's reply to its RCPT."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="recipients")
    address = models.CharField(max_length=_ADDRESS_LENGTH)
    accepted = models.BooleanField(default=False)

    class Meta:
        ordering = ("id",)
        # The address is searched case-insensitively: UPPER(address) on PostgreSQL
        # (the plain index serves MariaDB's case-insensitive collation).
        indexes = (
            models.Index(fields=("address",), name="sockmail_recipient_plain_idx"),
            models.Index(Upper("address"), name="sockmail_recipient_address_idx"),
        )

    def __str__(self) -> str:
        verdict = "accepted" if self.accepted else "refused"
        if self.reply_code is None:
            verdict = "not offered"
        return f"{self.address} ({verdict})"


class Direction(models.TextChoices):
    """Who said a transcript line (the letters are the transcript's)."""

    CLIENT = CLIENT, "client"
    SERVER = SERVER, "server"
    CONTENT = CONTENT, "content"
    INFO = INFO, "info"


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """One line of the conversation, or one event around it, as stored: read with
    :meth:`Session.transcript_lines`."""

    Direction: ClassVar[type[Direction]] = Direction

    seq: int  # 1 for the session's first line
    offset_ms: float  # milliseconds since the session started
    direction: str  # a Direction
    text: str

    def __str__(self) -> str:
        text = self.text if len(self.text) <= 80 else f"{self.text[:79]}…"
        return f"{self.direction}: {text}"


class TranscriptChunk(models.Model):
    """Consecutive lines of a session's transcript, stored together.

    A session says about ten lines a message, so a row per line made the transcript
    most of the rows, the index entries and the time of recording a session; a chunk
    holds up to a thousand lines (and about a MiB of text), so a session's transcript
    is a handful of rows. Read the lines with :meth:`Session.transcript_lines`.
    """

    # No index of its own: the unique (session, first_seq) index begins with it.
    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="chunks", db_index=False
    )
    first_seq = models.PositiveIntegerField(help_text="The seq of the chunk's first line.")
    line_count = models.PositiveIntegerField()
    # JSON: [[offset_us, direction, text], ...], the lines first_seq, first_seq + 1, ...;
    # the offset in whole microseconds since the session started (an integer: a float
    # costs JSON more than the rest of a line).
    lines = models.TextField()

    class Meta:
        verbose_name = "transcript chunk"
        ordering = ("session_id", "first_seq")
        constraints = (
            models.UniqueConstraint(
                fields=("session", "first_seq"), name="django_sockmail_chunk_first_seq"
            ),
        )

    def __str__(self) -> str:
        last = self.first_seq + self.line_count - 1
        return f"lines {self.first_seq} to {last} of session {self.session_id}"

    def decoded(self) -> list[TranscriptLine]:
        return [
            TranscriptLine(seq, offset_us / 1000, direction, text)
            for seq, (offset_us, direction, text) in enumerate(
                json.loads(self.lines), start=self.first_seq
            )
        ]
